"""Least privilege: the schema belongs to an owner role; the application role owns nothing.

Databases migrated before this revision belong to whoever migrated them (often the
superuser `postgres`), and the application connected as that user, so it could disable the
log's triggers. This hands every object of the schema to `model_ledger_owner` and gives
`model_ledger_app` exactly what the application needs: SELECT and INSERT on the log, the
views' rows, the sequences and the append function. Later migrations run as the owner.

Roles belong to the server, not to this database: they are created here only if missing
and only when the migrating user may (CREATEROLE); otherwise an operator creates them
first (`model-ledger db roles`). Run this revision as a superuser or as the role that owns
the schema's objects now; later ones as the owner (or a role that may become it).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from app.store import sql_files

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sql_files.run(
        revision, "roles", "to_owner", "no_create", "grants", "function_grants", "become_owner"
    )


def downgrade() -> None:
    sql_files.run(revision, "downgrade")
