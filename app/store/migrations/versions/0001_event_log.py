"""The event log: events, idempotency keys, signed checkpoints, tokens projection.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from app.store import sql_files

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


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
    # the append function and its helpers, the log's triggers, the application role
    sql_files.run(
        revision, "frame_text", "epoch_micros", "refuse_change", "append", "immutable", "app_role"
    )


def downgrade() -> None:
    for table in ("tokens", "projection_checkpoints", "checkpoints", "idempotency_keys"):
        op.drop_table(table)
    op.execute("DROP TABLE events")
    op.execute("DROP FUNCTION ml_append, ml_frame_text, ml_epoch_micros, ml_refuse_change CASCADE")
