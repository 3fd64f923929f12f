-- The schema goes back to the user who connected (a superuser, or the owner itself); the
-- roles stay: other databases of the server may use them.
RESET ROLE;
DO $$
DECLARE item record;
BEGIN
  FOR item IN
    SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END
             AS kind, c.oid::regclass::text AS name
      FROM pg_class c
     WHERE c.relnamespace = current_schema()::regnamespace
       AND c.relkind IN ('r', 'p', 'v', 'S')
       AND c.relowner = 'model_ledger_owner'::regrole
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                         AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
    UNION ALL
    SELECT 'FUNCTION', p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = current_schema()::regnamespace
       AND p.proowner = 'model_ledger_owner'::regrole
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I', item.kind, item.name, session_user);
  END LOOP;
END $$;
