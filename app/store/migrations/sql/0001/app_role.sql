-- The application role needs only INSERT and SELECT on the log. Creating roles needs
-- CREATEROLE, which a managed database may not grant the migrator: then skip quietly.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'model_ledger_app') THEN
    BEGIN
      CREATE ROLE model_ledger_app NOLOGIN;
    EXCEPTION WHEN insufficient_privilege OR unique_violation OR duplicate_object THEN
      RAISE NOTICE 'role model_ledger_app not created';
    END;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'model_ledger_app') THEN
    GRANT SELECT, INSERT ON events, checkpoints, idempotency_keys TO model_ledger_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON projection_checkpoints, tokens TO model_ledger_app;
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO model_ledger_app;
  END IF;
END $$;
