-- The application role writes the jobs view.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'model_ledger_app') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON jobs TO model_ledger_app;
  END IF;
END $$;
