"""Settings from the environment; database passwords read from files (compose secrets)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app.settings import Settings
from app.store.migrate import sqlalchemy_url

# every character that means something in a URL, and a space
AWKWARD = "p@ss:w/rd %?#&='"


def secret(tmp_path: Path, text: str, name: str = "password") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_urls_without_password_files_are_kept_as_they_are() -> None:
    url = "postgresql://model_ledger_app:inline@db:5432/ledger"
    settings = Settings.from_env({"MODEL_LEDGER_DATABASE_URL": url})
    assert settings.database_url == url
    assert settings.migration_database_url is None


@pytest.mark.parametrize("field", ["database", "migration_database"])
def test_a_password_file_fills_the_password_into_its_url(tmp_path: Path, field: str) -> None:
    prefix = f"MODEL_LEDGER_{field.upper()}"
    env = {
        f"{prefix}_URL": "postgresql://model_ledger_owner@db:5432/ledger?sslmode=require",
        # secrets are often written with a trailing newline, which is no part of them
        f"{prefix}_PASSWORD_FILE": str(secret(tmp_path, AWKWARD + "\n")),
    }
    url = getattr(Settings.from_env(env), f"{field}_url")
    parts = urlsplit(url)
    assert (parts.username, parts.hostname, parts.port) == ("model_ledger_owner", "db", 5432)
    assert (parts.path, parts.query) == ("/ledger", "sslmode=require")
    assert unquote(parts.password or "") == AWKWARD
    # migrations read the URL through SQLAlchemy
    assert make_url(sqlalchemy_url(url)).password == AWKWARD


def test_each_url_takes_its_own_password_file(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "MODEL_LEDGER_DATABASE_URL": "postgresql://model_ledger_app@db/ledger",
            "MODEL_LEDGER_DATABASE_PASSWORD_FILE": str(secret(tmp_path, "app", "a")),
            "MODEL_LEDGER_MIGRATION_DATABASE_URL": "postgresql://model_ledger_owner@db/ledger",
            "MODEL_LEDGER_MIGRATION_DATABASE_PASSWORD_FILE": str(secret(tmp_path, "own", "o")),
        }
    )
    assert settings.database_url == "postgresql://model_ledger_app:app@db/ledger"
    assert settings.migration_database_url == "postgresql://model_ledger_owner:own@db/ledger"


@pytest.mark.parametrize(
    ("url", "content", "complaint"),
    [
        ("postgresql://model_ledger_app:inline@db/ledger", "x", "must name a user and no password"),
        ("postgresql://db/ledger", "x", "must name a user and no password"),
        (None, "x", "MODEL_LEDGER_DATABASE_URL is not"),
        ("postgresql://model_ledger_app@db/ledger", "\n", "is empty"),
    ],
)
def test_a_password_file_that_cannot_apply_is_refused(
    tmp_path: Path, url: str | None, content: str, complaint: str
) -> None:
    env = {"MODEL_LEDGER_DATABASE_PASSWORD_FILE": str(secret(tmp_path, content))}
    if url is not None:
        env["MODEL_LEDGER_DATABASE_URL"] = url
    with pytest.raises(ValueError, match=complaint):
        Settings.from_env(env)


async def test_a_filled_url_reaches_the_server_as_its_user(tmp_path: Path, server_url: str) -> None:
    # The test servers trust their clients, so the password itself is not checked here: the
    # point is that an awkward one leaves the host, user and database as they were.
    parts = urlsplit(server_url)
    without = parts._replace(netloc=f"{parts.username}@{parts.netloc.rpartition('@')[2]}")
    settings = Settings.from_env(
        {
            "MODEL_LEDGER_DATABASE_URL": without.geturl(),
            "MODEL_LEDGER_DATABASE_PASSWORD_FILE": str(secret(tmp_path, AWKWARD)),
        }
    )
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await conn.fetchval("SELECT current_user") == parts.username
    finally:
        await conn.close()
