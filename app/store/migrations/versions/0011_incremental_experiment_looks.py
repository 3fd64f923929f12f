"""Incremental experiment looks: each prediction, feedback and outcome row carries the id of the
transaction that wrote it, so a look adds only the rows of transactions finished since the
previous look (ids below a snapshot's xmin belong to finished transactions). Existing rows get
the migration's own id: they count as written before any look that follows. A reward also
keeps its prediction's experiment (copied when recorded; filled in here for existing rewards),
so a look reads the rewards since its watermark without looking their predictions up.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "feedback",
        sa.Column(
            "txid",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id())::text::bigint"),
            nullable=False,
        ),
    )
    op.add_column("feedback", sa.Column("experiment_id", sa.Text()))
    op.execute(
        "UPDATE feedback f SET experiment_id = p.experiment_id FROM predictions p "
        "WHERE p.prediction_id = f.prediction_id AND p.experiment_id IS NOT NULL"
    )
    op.create_index(
        "feedback_experiment_idx",
        "feedback",
        ["experiment_id", "txid"],
        unique=False,
        postgresql_where=sa.text("experiment_id IS NOT NULL"),
    )
    # outcome labels too: a fairness guardrail's true- and false-positive rates add them
    op.add_column(
        "outcomes",
        sa.Column(
            "txid",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id())::text::bigint"),
            nullable=False,
        ),
    )
    op.create_index("outcomes_txid_idx", "outcomes", ["txid"], unique=False)
    op.add_column(
        "predictions",
        sa.Column(
            "txid",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id())::text::bigint"),
            nullable=False,
        ),
    )
    op.drop_index(
        op.f("predictions_experiment_idx"),
        table_name="predictions",
        postgresql_where="(experiment_id IS NOT NULL)",
    )
    op.create_index(
        "predictions_experiment_idx",
        "predictions",
        ["experiment_id", "txid"],
        unique=False,
        postgresql_where=sa.text("experiment_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "predictions_experiment_idx",
        table_name="predictions",
        postgresql_where=sa.text("experiment_id IS NOT NULL"),
    )
    op.create_index(
        op.f("predictions_experiment_idx"),
        "predictions",
        ["experiment_id"],
        unique=False,
        postgresql_where="(experiment_id IS NOT NULL)",
    )
    op.drop_column("predictions", "txid")
    op.drop_index("outcomes_txid_idx", table_name="outcomes")
    op.drop_column("outcomes", "txid")
    op.drop_index("feedback_experiment_idx", table_name="feedback")
    op.drop_column("feedback", "experiment_id")
    op.drop_column("feedback", "txid")
