"""Chained checkpoints: each signs its sequence number and the previous checkpoint's hash.

Rows signed before this migration keep NULL in both columns: they are legacy checkpoints,
verified one by one as before; the chain starts at the first checkpoint signed after it
(sequence 1, previous hash 32 zero bytes).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from app.store import sql_files

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("checkpoints", sa.Column("sequence", sa.BigInteger))
    op.add_column("checkpoints", sa.Column("prev_checkpoint_hash", pg.BYTEA))
    # one checkpoint per sequence number: two signers can never fork the chain
    op.create_unique_constraint("checkpoints_sequence_key", "checkpoints", ["sequence"])
    op.create_check_constraint(
        "checkpoints_chained_or_legacy",
        "checkpoints",
        "(sequence IS NULL) = (prev_checkpoint_hash IS NULL)",
    )


def downgrade() -> None:
    sql_files.run(revision, "downgrade")  # refused while chained checkpoints exist
    op.drop_constraint("checkpoints_chained_or_legacy", "checkpoints")
    op.drop_constraint("checkpoints_sequence_key", "checkpoints")
    op.drop_column("checkpoints", "prev_checkpoint_hash")
    op.drop_column("checkpoints", "sequence")
