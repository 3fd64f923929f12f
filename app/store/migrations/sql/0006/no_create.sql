-- Only the schema's owner may revoke what PUBLIC was given on it (CREATE, before
-- PostgreSQL 15): the application role must not create objects of its own there.
DO $$
BEGIN
  IF has_schema_privilege('public', current_schema(), 'CREATE')
     OR has_schema_privilege('model_ledger_app', current_schema(), 'CREATE') THEN
    BEGIN
      EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC, model_ledger_app', current_schema());
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE WARNING 'PUBLIC may create objects in schema %: revoke it as its owner',
        current_schema();
    END;
  END IF;
  IF NOT has_schema_privilege('model_ledger_app', current_schema(), 'USAGE') THEN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO model_ledger_app', current_schema());
  END IF;
END $$;
