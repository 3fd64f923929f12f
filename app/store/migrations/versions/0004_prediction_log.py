"""Prediction log and feedback: what the scorer served (not events: high volume, retained
for a while), and the rewards clients report for bandit experiments.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from app.store import sql_files

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "predictions",
        sa.Column("prediction_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("environment", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("library_sha256", sa.Text, nullable=False),
        # champion, challenger (canary / bandit arm) or shadow (scored off the response path)
        sa.Column("arm", sa.Text, nullable=False),
        sa.Column("score", pg.JSON, nullable=False),
        # the input row, for a sample of predictions only (the drift job's window)
        sa.Column("features", pg.JSON),
        sa.Column("created_at", ts, nullable=False),
        sa.Index("predictions_window_idx", "name", "version", "created_at"),
        sa.Index("predictions_created_idx", "created_at"),
    )
    op.create_table(
        "feedback",
        sa.Column("prediction_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("environment", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("reward", sa.Float, nullable=False),
        sa.Column("recorded_at", ts, nullable=False),
        sa.Index("feedback_arm_idx", "name", "environment", "version"),
    )
    sql_files.run(revision, "grants")


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("predictions")
