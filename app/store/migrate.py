"""Applying the Alembic migrations of the event store."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_SCRIPTS = Path(__file__).parent / "migrations"


def sqlalchemy_url(database_url: str) -> str:
    """The asyncpg-dialect SQLAlchemy URL for a `postgresql://` URL."""
    scheme, _, rest = database_url.partition("://")
    if scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
        raise ValueError(f"not a PostgreSQL URL: {scheme}://")
    return f"postgresql+asyncpg://{rest}"


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for this database, with no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    # ConfigParser interpolation would eat the '%' of percent-encoded URLs.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    """Upgrade the database to `revision`. Blocking: call it from a thread in async code."""
    command.upgrade(alembic_config(database_url), revision)
