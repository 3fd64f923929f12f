-- The application role records outcome labels and reads them back.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'model_ledger_app') THEN
    GRANT SELECT, INSERT ON outcomes TO model_ledger_app;
  END IF;
END $$;
