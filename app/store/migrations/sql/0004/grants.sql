-- The application role writes the prediction log and the feedback.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'model_ledger_app') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON predictions, feedback TO model_ledger_app;
  END IF;
END $$;
