-- The application role opens, reads, touches and ends console sessions (and sweeps expired
-- ones); nothing else.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'model_ledger_app') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON console_sessions TO model_ledger_app;
  END IF;
END $$;
