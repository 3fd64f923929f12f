"""Telling a database that is away from a request it refused."""

from __future__ import annotations

import asyncpg

# What asyncpg raises while the server is unreachable, restarting or shutting down, or
# when a pooled connection died with it: worth retrying later, unlike a refused statement.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,
)


def is_outage(error: BaseException) -> bool:
    """True when `error` says the database is away rather than that it refused something."""
    return isinstance(error, OUTAGE_ERRORS)
