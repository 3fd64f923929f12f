"""SQL the migrations run from files: functions, triggers and grants, read as SQL.

Each revision keeps its own folder, `migrations/sql/<revision>/`, never edited once released:
a later revision that changes a function adds a file of its own (`sql/0009/append.sql`), so
every migration goes on producing exactly what it did on the databases it already ran on.
"""

from __future__ import annotations

import re
from pathlib import Path

from alembic import op

SQL_FOLDER = Path(__file__).parent / "migrations" / "sql"

# what may hide a semicolon that does not end a statement: a dollar-quoted body, a string,
# a comment (PostgreSQL's E'' strings and nested comments are not used here)
_TOKEN = re.compile(r"\$[A-Za-z_]*\$|'(?:[^']|'')*'|--[^\n]*|;")
_COMMENT = re.compile(r"--[^\n]*")


def statements(sql: str) -> list[str]:
    """The statements of a script, each without its semicolon; comments alone are dropped."""
    found: list[str] = []
    start = position = 0
    while token := _TOKEN.search(sql, position):
        position = token.end()
        if token.group().startswith("$"):  # a body runs to the same tag, whatever it holds
            end = sql.find(token.group(), position)
            if end < 0:
                raise ValueError(f"unterminated {token.group()} quote")
            position = end + len(token.group())
        elif token.group() == ";":
            found.append(sql[start : token.start()])
            start = position
    found.append(sql[start:])
    return [s.strip() for s in found if _COMMENT.sub("", s).strip()]


def read(revision: str, name: str) -> list[str]:
    """The statements of `sql/<revision>/<name>.sql`."""
    return statements((SQL_FOLDER / revision / f"{name}.sql").read_text(encoding="utf-8"))


def run(revision: str, *names: str) -> None:
    """Execute the named files of a revision in order, one statement a call (asyncpg runs
    one statement per call)."""
    for name in names:
        for statement in read(revision, name):
            op.execute(statement)
