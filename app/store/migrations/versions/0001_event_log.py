"""The event log: events, idempotency keys, signed checkpoints, tokens projection.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The chain framing here must match `domain.chain.canonical_bytes` exactly.
_FUNCTIONS = r"""
CREATE FUNCTION ml_frame_text(t text) RETURNS bytea
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT int4send(octet_length(convert_to(t, 'UTF8'))) || convert_to(t, 'UTF8') $$;

CREATE FUNCTION ml_epoch_micros(t timestamptz) RETURNS bigint
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT (extract(epoch FROM t) * 1000000)::bigint $$;

CREATE FUNCTION ml_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'raise_exception';
END $$;

-- Appends a batch of requests (group commit) in one statement. Request i owns r_count[i]
-- consecutive entries of the e_* arrays. The advisory lock is held until commit, so
-- positions are assigned in commit order: a reader that has seen N never later finds N-1.
-- (The helpers above are STABLE, not IMMUTABLE, so PostgreSQL can inline them.)
CREATE FUNCTION ml_append(
  r_stream text[], r_expected bigint[], r_idem_scope text[], r_idem_key text[],
  r_idem_digest text[], r_count int[],
  e_event_id uuid[], e_type text[], e_data text[], e_meta text[]
) RETURNS TABLE (
  o_req int, o_status text, o_first bigint, o_last bigint, o_version bigint,
  o_recorded_at timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
  head_pos bigint; head_hash bytea; head_time timestamptz; ts timestamptz; ts_bytes bytea;
  i int; j int := 1; k int; n int; cur bigint; first_pos bigint; h bytea; slot int;
  idem record; dup_ids uuid[];
  seen_streams text[] := '{}'; seen_versions bigint[] := '{}';
  row_pos bigint[] := '{}'; row_stream text[] := '{}'; row_version bigint[] := '{}';
  row_entry int[] := '{}'; row_prev bytea[] := '{}'; row_hash bytea[] := '{}';
BEGIN
  PERFORM pg_advisory_xact_lock(7244501);
  SELECT e.position, e.hash, e.recorded_at INTO head_pos, head_hash, head_time
    FROM events e ORDER BY e.position DESC LIMIT 1;
  IF head_pos IS NULL THEN
    head_pos := 0; head_hash := decode(repeat('00', 32), 'hex'); head_time := '-infinity';
  END IF;
  -- recorded_at never decreases along the log, so "as of time T" is a prefix.
  ts := greatest(clock_timestamp(), head_time);
  ts_bytes := int8send(ml_epoch_micros(ts));
  -- Ids already recorded (a retried job or request): one indexed probe per id, driven
  -- from the array so the planner cannot pick a scan of the whole log.
  SELECT array_agg(x.event_id) INTO dup_ids
    FROM unnest(e_event_id) AS u(id) JOIN events x ON x.event_id = u.id;
  FOR i IN 1 .. coalesce(array_length(r_stream, 1), 0) LOOP
    n := r_count[i];
    o_req := i - 1; o_first := NULL; o_last := NULL; o_version := NULL; o_recorded_at := NULL;
    IF r_idem_key[i] IS NOT NULL THEN
      SELECT * INTO idem FROM idempotency_keys x
        WHERE x.scope = r_idem_scope[i] AND x.key = r_idem_key[i];
      IF FOUND THEN
        o_status := CASE WHEN idem.request_digest = r_idem_digest[i]
                         THEN 'replayed' ELSE 'mismatch' END;
        o_first := idem.first_position; o_last := idem.last_position;
        RETURN NEXT; j := j + n; CONTINUE;
      END IF;
    END IF;
    IF dup_ids IS NOT NULL AND e_event_id[j : j + n - 1] && dup_ids THEN
      SELECT min(x.position), max(x.position) INTO o_first, o_last
        FROM unnest(e_event_id[j : j + n - 1]) AS u(id) JOIN events x ON x.event_id = u.id;
      o_status := 'duplicate';
      RETURN NEXT; j := j + n; CONTINUE;
    END IF;
    slot := array_position(seen_streams, r_stream[i]);
    IF slot IS NULL THEN
      SELECT coalesce(max(e.version), 0) INTO cur FROM events e WHERE e.stream = r_stream[i];
    ELSE
      cur := seen_versions[slot];
    END IF;
    IF r_expected[i] IS NOT NULL AND r_expected[i] <> cur THEN
      o_status := 'conflict'; o_version := cur;
      RETURN NEXT; j := j + n; CONTINUE;
    END IF;
    first_pos := head_pos + 1;
    FOR k IN j .. j + n - 1 LOOP
      head_pos := head_pos + 1; cur := cur + 1;
      h := sha256(head_hash || int8send(head_pos) || int8send(cur) || uuid_send(e_event_id[k])
                  || ml_frame_text(r_stream[i]) || ml_frame_text(e_type[k])
                  || ml_frame_text(e_data[k]) || ml_frame_text(e_meta[k]) || ts_bytes);
      row_pos := row_pos || head_pos; row_stream := row_stream || r_stream[i];
      row_version := row_version || cur; row_entry := row_entry || k;
      row_prev := row_prev || head_hash; row_hash := row_hash || h;
      head_hash := h;
    END LOOP;
    IF slot IS NULL THEN
      seen_streams := seen_streams || r_stream[i]; seen_versions := seen_versions || cur;
    ELSE
      seen_versions[slot] := cur;
    END IF;
    IF r_idem_key[i] IS NOT NULL THEN
      INSERT INTO idempotency_keys (scope, key, request_digest, stream, first_position,
                                    last_position, created_at)
        VALUES (r_idem_scope[i], r_idem_key[i], r_idem_digest[i], r_stream[i], first_pos,
                head_pos, ts);
    END IF;
    o_status := 'ok'; o_first := first_pos; o_last := head_pos; o_version := cur;
    o_recorded_at := ts;
    RETURN NEXT;
    j := j + n;
  END LOOP;
  -- one statement for every row of the batch
  INSERT INTO events (position, stream, version, event_id, type, data, meta, recorded_at,
                      prev_hash, hash)
    SELECT r.pos, r.stream, r.version, e_event_id[r.entry], e_type[r.entry],
           e_data[r.entry]::json, e_meta[r.entry]::json, ts, r.prev, r.hash
      FROM unnest(row_pos, row_stream, row_version, row_entry, row_prev, row_hash)
        AS r(pos, stream, version, entry, prev, hash);
END $$;
"""

_IMMUTABLE = (
    """CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table}
  FOR EACH ROW EXECUTE FUNCTION ml_refuse_change()""",
    """CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
  FOR EACH STATEMENT EXECUTE FUNCTION ml_refuse_change()""",
)

# The application role needs only INSERT and SELECT on the log. Creating roles needs
# CREATEROLE, which a managed database may not grant the migrator: then skip quietly.
_APP_ROLE = """
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
"""


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("data", pg.JSON, nullable=False),
        sa.Column("meta", pg.JSON, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", pg.BYTEA, nullable=False),
        sa.Column("hash", pg.BYTEA, nullable=False),
        sa.UniqueConstraint("stream", "version", name="events_stream_version_key"),
    )
    op.create_index("events_type_position_idx", "events", ["type", "position"])
    op.create_index("events_recorded_at_idx", "events", ["recorded_at"])
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_digest", sa.Text, nullable=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("first_position", sa.BigInteger, nullable=False),
        sa.Column("last_position", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("head_hash", pg.BYTEA, nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("signature", pg.BYTEA, nullable=False),
    )
    op.create_table(
        "projection_checkpoints",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("token_sha256", sa.Text, primary_key=True),
        sa.Column("token_id", sa.Text, nullable=False, unique=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.Text, nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    # asyncpg runs one statement per call; each function ends with "$$;" and a newline.
    for statement in _FUNCTIONS.split("$$;\n")[:-1]:
        op.execute(statement + "$$")
    for table in ("events", "checkpoints"):
        for trigger in _IMMUTABLE:
            op.execute(trigger.format(table=table))
    op.execute(_APP_ROLE)


def downgrade() -> None:
    for table in ("tokens", "projection_checkpoints", "checkpoints", "idempotency_keys"):
        op.drop_table(table)
    op.execute("DROP TABLE events")
    op.execute("DROP FUNCTION ml_append, ml_frame_text, ml_epoch_micros, ml_refuse_change CASCADE")
