"""Least privilege: the schema belongs to an owner role; the application role owns nothing.

Databases migrated before this revision belong to whoever migrated them (often the
superuser `postgres`), and the application connected as that user, so it could disable the
log's triggers. This hands every object of the schema to `model_ledger_owner` and gives
`model_ledger_app` exactly what the application needs: SELECT and INSERT on the log, the
views' rows, the sequences and the append function. Later migrations run as the owner.

Roles belong to the server, not to this database: they are created here only if missing
and only when the migrating user may (CREATEROLE); otherwise an operator creates them
first (`model-ledger db roles`). Run this revision as a superuser or as the role that owns
the schema's objects now; later ones as the owner (or a role that may become it).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Concurrent migrations of two databases on one server may create the same role at once:
# the loser gets unique_violation or duplicate_object, and the role exists either way.
_ROLES = """
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
END $$"""

# Every table, view, sequence and function of the schema (a ledger's schema is its own),
# extension members aside. A sequence owned by a table follows its table.
_TO_OWNER = """
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
END $$"""

# Only the schema's owner may revoke what PUBLIC was given on it (CREATE, before
# PostgreSQL 15): the application role must not create objects of its own there.
_NO_CREATE = """
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
END $$"""

_FUNCTION_GRANTS = """
DO $$
DECLARE fn regprocedure;
BEGIN
  FOR fn IN SELECT p.oid FROM pg_proc p
             WHERE p.pronamespace = current_schema()::regnamespace
               AND p.proname IN ('ml_append', 'ml_frame_text', 'ml_epoch_micros')
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO model_ledger_app', fn);
  END LOOP;
END $$"""

_GRANTS = (
    # the log: read and append, nothing else (the triggers refuse changes to the owner too)
    "REVOKE ALL ON events, checkpoints, idempotency_keys FROM PUBLIC, model_ledger_app",
    "GRANT SELECT, INSERT ON events, checkpoints, idempotency_keys TO model_ledger_app",
    # the views are the application's to rewrite (`projections rebuild` empties them)
    """GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON tokens, model_states, versions,
         deployments, deployment_history, approvals, drift_alerts, policies, model_snapshots,
         jobs TO model_ledger_app""",
    """GRANT SELECT, INSERT, UPDATE, DELETE ON projection_checkpoints, predictions, feedback
         TO model_ledger_app""",
    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO model_ledger_app",
    # the startup check reads the schema's revision
    "GRANT SELECT ON alembic_version TO model_ledger_app",
)

# Later migrations in this run (and alembic's own bookkeeping) act as the owner.
_BECOME_OWNER = """
DO $$
BEGIN
  IF current_user <> 'model_ledger_owner' THEN
    SET LOCAL ROLE model_ledger_owner;
  END IF;
END $$"""


def upgrade() -> None:
    op.execute(_ROLES)
    op.execute(_TO_OWNER)
    op.execute(_NO_CREATE)
    for statement in _GRANTS:
        op.execute(statement)
    op.execute(_FUNCTION_GRANTS)
    op.execute(_BECOME_OWNER)


def downgrade() -> None:
    # The schema goes back to the user who connected (a superuser, or the owner itself);
    # the roles stay: other databases of the server may use them.
    op.execute("RESET ROLE")
    op.execute(
        """
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
END $$"""
    )
