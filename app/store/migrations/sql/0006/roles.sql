-- Concurrent migrations of two databases on one server may create the same role at once:
-- the loser gets unique_violation or duplicate_object, and the role exists either way.
DO $$
DECLARE role text;
BEGIN
  FOREACH role IN ARRAY ARRAY['model_ledger_owner', 'model_ledger_app'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                       'NOREPLICATION NOBYPASSRLS', role);
      EXCEPTION
        WHEN duplicate_object OR unique_violation THEN NULL;
        WHEN insufficient_privilege THEN
          RAISE EXCEPTION 'role % does not exist and % may not create it', role, current_user
            USING HINT = 'a superuser creates the roles: see `model-ledger db roles`';
      END;
    END IF;
  END LOOP;
  -- migration 0001 created the application role NOLOGIN
  IF NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'model_ledger_app') THEN
    BEGIN
      ALTER ROLE model_ledger_app LOGIN;
    EXCEPTION WHEN insufficient_privilege OR internal_error THEN
      RAISE WARNING 'role model_ledger_app cannot log in'
        USING HINT = 'a superuser runs ALTER ROLE model_ledger_app LOGIN';
    END;
  END IF;
END $$;
