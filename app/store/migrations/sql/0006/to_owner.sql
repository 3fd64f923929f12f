-- Every table, view, sequence and function of the schema (a ledger's schema is its own),
-- extension members aside. A sequence owned by a table follows its table.
DO $$
DECLARE item record;
BEGIN
  IF current_user <> 'model_ledger_owner'
     AND NOT pg_has_role(current_user, 'model_ledger_owner', 'MEMBER') THEN
    BEGIN
      EXECUTE format('GRANT model_ledger_owner TO %I', current_user);
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE EXCEPTION '% may not hand the schema to model_ledger_owner', current_user
        USING HINT = 'run it as a superuser, or GRANT model_ledger_owner TO ' || current_user;
    END;
  END IF;
  FOR item IN
    SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                          WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
           c.oid::regclass::text AS name
      FROM pg_class c
     WHERE c.relnamespace = current_schema()::regnamespace
       AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
       AND c.relowner <> 'model_ledger_owner'::regrole
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                         AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
    UNION ALL
    SELECT 'FUNCTION', p.oid::regprocedure::text
      FROM pg_proc p
     WHERE p.pronamespace = current_schema()::regnamespace
       AND p.proowner <> 'model_ledger_owner'::regrole
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                         AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    BEGIN
      EXECUTE format('ALTER %s %s OWNER TO model_ledger_owner', item.kind, item.name);
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE EXCEPTION '% may not hand % to model_ledger_owner', current_user, item.name
        USING HINT = 'run this migration once as a superuser or as the current owner';
    END;
  END LOOP;
  IF NOT has_schema_privilege('model_ledger_owner', current_schema(), 'CREATE') THEN
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO model_ledger_owner', current_schema());
  END IF;
END $$;
