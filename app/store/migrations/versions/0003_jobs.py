"""Jobs view: each job's request, attempts and outcome, projected from job events.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from app.store import sql_files

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("params", pg.JSON, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("requested_position", sa.BigInteger, nullable=False),
        sa.Column("requested_at", ts, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("started_at", ts),
        sa.Column("finished_at", ts),
        sa.Column("result", pg.JSON),
        sa.Column("error", sa.Text),
        sa.Column("details", pg.JSON),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Index("jobs_name_idx", "name", "requested_position"),
    )
    sql_files.run(revision, "grants")


def downgrade() -> None:
    op.drop_table("jobs")
