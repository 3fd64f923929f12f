"""A/B experiment assignment in the prediction log: the unit a prediction was for, the
experiment whose hash chose its arm, and the request's score latency (the guardrail).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("unit_id", sa.Text))
    op.add_column("predictions", sa.Column("experiment_id", sa.Text))
    op.add_column("predictions", sa.Column("latency_us", sa.Float))
    # the update job reads one experiment's rows; most rows belong to none
    op.create_index(
        "predictions_experiment_idx",
        "predictions",
        ["experiment_id"],
        postgresql_where=sa.text("experiment_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("predictions_experiment_idx", "predictions")
    for column in ("latency_us", "experiment_id", "unit_id"):
        op.drop_column("predictions", column)
