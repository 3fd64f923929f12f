"""Prediction totals kept at ingest: a trigger on the prediction log adds, for each statement
that inserts predictions of an experiment, their counts per version and latency bucket to
`prediction_totals`, with the writing transaction's id. A look sums those rows (a few per
batch the log writes) instead of reading every prediction, so its first look over millions of
predictions costs about what a later one does. The experiment job merges the rows a recorded
look counted, so the table keeps a few rows per bucket. The predictions already logged are
counted here, by the transactions that wrote them.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.store import sql_files

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_totals",
        sa.Column("experiment_id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("bucket", sa.Integer),
        sa.Column("predictions", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column(
            "txid",
            sa.BigInteger,
            nullable=False,
            server_default=sa.text("(pg_current_xact_id())::text::bigint"),
        ),
        # merged rows: the horizon of the look that counted the rows merged (NULL: not merged)
        sa.Column("counted_by", sa.BigInteger),
        sa.Index("prediction_totals_experiment_idx", "experiment_id", "txid"),
        sa.Index(
            "prediction_totals_merged_idx",
            "experiment_id",
            "counted_by",
            postgresql_where=sa.text("counted_by IS NOT NULL"),
        ),
    )
    sql_files.run(revision, "prediction_totals", "grants")


def downgrade() -> None:
    op.execute("DROP TRIGGER predictions_add_totals ON predictions")
    op.execute("DROP FUNCTION ml_add_prediction_totals()")
    op.drop_table("prediction_totals")
    op.execute("DROP FUNCTION ml_latency_bucket(float8)")
