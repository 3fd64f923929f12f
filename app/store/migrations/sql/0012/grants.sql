-- The application role writes the prediction log, hence its totals (the trigger runs as the
-- writer); the experiment job reads them for a look and merges the ones a look counted.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'model_ledger_app') THEN
    GRANT SELECT, INSERT, DELETE ON prediction_totals TO model_ledger_app;
  END IF;
END $$;
