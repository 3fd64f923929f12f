"""Tables of the event store and of the projections, in SQLAlchemy Core.

The one description of the tables: code builds its queries from it, and a new migration is
generated from it (`scripts/new-migration`, then reviewed). The migrations under
`migrations/` stay as they were released; the functions, triggers and grants they create
are SQL files under `migrations/sql/<revision>/`. A test checks that a database migrated to
the head and this module agree.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData()

# Tables that migrations create from SQL files and this module does not describe (such as the
# partitions of a partitioned table): autogenerate leaves them alone. None yet.
SQL_OWNED: frozenset[str] = frozenset()

# The log. `data` and `meta` are `json` (not `jsonb`) because PostgreSQL keeps json text
# exactly as written, which the hash chain covers byte for byte.
events = sa.Table(
    "events",
    metadata,
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
    sa.Index("events_type_position_idx", "type", "position"),
    # as-of reads by time: recorded_at never decreases along positions
    sa.Index("events_recorded_at_idx", "recorded_at"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("request_digest", sa.Text, nullable=False),
    sa.Column("stream", sa.Text, nullable=False),
    sa.Column("first_position", sa.BigInteger, nullable=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("head_hash", pg.BYTEA, nullable=False),
    sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("signature", pg.BYTEA, nullable=False),
    # chained checkpoints (0007); NULL on legacy rows signed before
    sa.Column("sequence", sa.BigInteger),
    sa.Column("prev_checkpoint_hash", pg.BYTEA),
    sa.UniqueConstraint("sequence", name="checkpoints_sequence_key"),
    sa.CheckConstraint(
        "(sequence IS NULL) = (prev_checkpoint_hash IS NULL)",
        name="checkpoints_chained_or_legacy",
    ),
)

projection_checkpoints = sa.Table(
    "projection_checkpoints",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_sha256", sa.Text, primary_key=True),
    sa.Column("token_id", sa.Text, nullable=False, unique=True),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("issued_by", sa.Text, nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("position", sa.BigInteger, nullable=False),
)

# Console sign-in sessions, shared by every API process: the SHA-256 of the session id (the
# cookie's value is never stored) and the stored form of the token it was opened with.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("session_sha256", sa.Text, primary_key=True),
    sa.Column("token_sha256", sa.Text, nullable=False),
    sa.Column("csrf_token", sa.Text, nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("console_sessions_token_idx", "token_sha256"),
    sa.Index("console_sessions_seen_idx", "seen_at"),
)

# Governance views, projected from the model and policy streams.

model_states = sa.Table(
    "model_states",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("risk_tier", sa.Text, nullable=False),
    # the folded domain state (msgpack): the registry reads decode it
    sa.Column("state", pg.BYTEA, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
)

versions = sa.Table(
    "versions",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("format", sa.Text, nullable=False),
    sa.Column("artifact_sha256", sa.Text, nullable=False),
    sa.Column("library_sha256", sa.Text),
    sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("registered_by", sa.Text, nullable=False),
    sa.Column("retired_at", sa.DateTime(timezone=True)),
    sa.Column("position", sa.BigInteger, nullable=False),
)

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("environment", sa.Text, primary_key=True),
    sa.Column("champion", sa.Integer),
    sa.Column("challenger", sa.Integer),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("traffic_percent", sa.Float),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
)

deployment_history = sa.Table(
    "deployment_history",
    metadata,
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("environment", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("champion", sa.Integer),
    sa.Column("challenger", sa.Integer),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("traffic_percent", sa.Float),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("deployment_history_name_idx", "name", "position"),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("approver", sa.Text, nullable=False),
    sa.Column("decision", sa.Text, nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("policy_version", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_reason", sa.Text),
    sa.Index("approvals_name_version_idx", "name", "version"),
)

drift_alerts = sa.Table(
    "drift_alerts",
    metadata,
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("statistic", sa.Text, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("feature", sa.Text),
    sa.Column("environment", sa.Text),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("drift_alerts_name_idx", "name", "position"),
)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("risk_tier", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("policy", pg.JSON, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
)

# A model's state each time its stream passes a multiple of the snapshot interval: an
# as-of read starts from these (a cache of the governance projection).
model_snapshots = sa.Table(
    "model_snapshots",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("stream_version", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("state", pg.BYTEA, nullable=False),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("params", pg.JSON, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("requested_position", sa.BigInteger, nullable=False),
    sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("result", pg.JSON),
    sa.Column("error", sa.Text),
    sa.Column("details", pg.JSON),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Index("jobs_name_idx", "name", "requested_position"),
)

# the id of the transaction writing a row, as a number (xid8 has no SQLAlchemy type)
_TXID = sa.text("(pg_current_xact_id())::text::bigint")

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("prediction_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("environment", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("library_sha256", sa.Text, nullable=False),
    sa.Column("arm", sa.Text, nullable=False),
    sa.Column("score", pg.JSON, nullable=False),
    sa.Column("features", pg.JSON),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("unit_id", sa.Text),
    sa.Column("experiment_id", sa.Text),
    sa.Column("latency_us", sa.Float),
    # the writing transaction's id: a look adds the rows of transactions finished since the
    # previous look (every id below a snapshot's xmin is finished; see workers/jobs/experiment)
    sa.Column("txid", sa.BigInteger, nullable=False, server_default=_TXID),
    sa.Index("predictions_window_idx", "name", "version", "created_at"),
    sa.Index("predictions_created_idx", "created_at"),
    sa.Index(
        "predictions_experiment_idx",
        "experiment_id",
        "txid",
        postgresql_where=sa.text("experiment_id IS NOT NULL"),
    ),
)

# a look's prediction counts, kept as the log is written: a trigger on `predictions` (migration
# 0012) adds a row per statement, experiment, version and latency bucket, with the txid of
# the predictions it counts; a look sums these instead of reading every prediction
prediction_totals = sa.Table(
    "prediction_totals",
    metadata,
    sa.Column("experiment_id", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("bucket", sa.Integer),
    sa.Column("predictions", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("txid", sa.BigInteger, nullable=False, server_default=_TXID),
    # merged rows (workers/jobs/experiment `compact`): the horizon of the look that counted
    # the rows merged; NULL for the trigger's rows
    sa.Column("counted_by", sa.BigInteger),
    sa.Index("prediction_totals_experiment_idx", "experiment_id", "txid"),
    sa.Index(
        "prediction_totals_merged_idx",
        "experiment_id",
        "counted_by",
        postgresql_where=sa.text("counted_by IS NOT NULL"),
    ),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("prediction_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("environment", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("reward", sa.Float, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("txid", sa.BigInteger, nullable=False, server_default=_TXID),
    # the prediction's experiment, copied when the reward is recorded: a look reads the
    # rewards since its watermark without looking their predictions up
    sa.Column("experiment_id", sa.Text),
    sa.Index("feedback_arm_idx", "name", "environment", "version"),
    sa.Index(
        "feedback_experiment_idx",
        "experiment_id",
        "txid",
        postgresql_where=sa.text("experiment_id IS NOT NULL"),
    ),
)

# labels observed for predictions, often days later (outcome monitoring); kept as long as
# the predictions they label
outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("prediction_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("environment", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("label", sa.Float, nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("txid", sa.BigInteger, nullable=False, server_default=_TXID),
    sa.Index("outcomes_version_idx", "name", "environment", "version", "recorded_at"),
    sa.Index("outcomes_txid_idx", "txid"),
)
