"""Console sessions shared by every API process: a row per signed-in browser, keyed by the
SHA-256 of its session id (the cookie's value is never stored), naming the stored form of the
token it was opened with.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.store import sql_files

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "console_sessions",
        sa.Column("session_sha256", sa.Text, primary_key=True),
        sa.Column("token_sha256", sa.Text, nullable=False),
        sa.Column("csrf_token", sa.Text, nullable=False),
        sa.Column("opened_at", ts, nullable=False),
        sa.Column("seen_at", ts, nullable=False),
        sa.Index("console_sessions_token_idx", "token_sha256"),
        sa.Index("console_sessions_seen_idx", "seen_at"),
    )
    sql_files.run(revision, "grants")


def downgrade() -> None:
    op.drop_table("console_sessions")
