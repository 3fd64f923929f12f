"""Store outages: "the database (or Redis) cannot be reached right now", told apart from bugs.

The HTTP layer answers an outage with 503 and `Retry-After` (app/http/problems.py); nothing has
to be restarted when the store returns, since the pools connect again on their next use.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import asyncpg
from asyncpg import exceptions as pg
from redis import exceptions as redis_errors

DATABASE = "the database"
REDIS = "Redis"
SOME_STORE = "a store"


class StoreUnavailable(ConnectionError):
    """A store could not be reached; `store` names it in plain words."""

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"{store} is unavailable: {reason}")
        self.store = store


# What PostgreSQL says when it cannot serve now: starting up, shutting down or restarting
# (57P01-57P03), too many connections (53300), or a connection lost (class 08).
DATABASE_OUTAGES: tuple[type[Exception], ...] = (
    pg.PostgresConnectionError,
    pg.AdminShutdownError,
    pg.CrashShutdownError,
    pg.CannotConnectNowError,
    pg.TooManyConnectionsError,
)
# redis-py wraps socket errors (refused, reset, socket file missing) and "loading" in these
REDIS_OUTAGES: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
)
# a connection refused or reset, or no answer in time, with nothing naming the store: the
# only peers a request waits on are the stores (a client hanging up is not an exception)
UNNAMED_OUTAGES: tuple[type[Exception], ...] = (ConnectionError, TimeoutError)
OUTAGES = (*DATABASE_OUTAGES, *REDIS_OUTAGES, *UNNAMED_OUTAGES)

# asyncpg's words for a connection the server closed or tore, when no connection error comes
# with them: a transaction's exit (or the next query) on a connection whose end was read
# ("... the underlying connection is closed"), or a query on one that read the server's
# unrequested FATAL (shutdown, terminate) but not yet its end (MagicStack/asyncpg#1069)
_LOST_CONNECTION: tuple[tuple[type[Exception], str], ...] = (
    (pg.InterfaceError, "connection is closed"),
    (pg.InternalClientError, "another operation"),
    (pg.InternalClientError, "protocol is in an unexpected state"),
)
# errors of those families that mean a misconfiguration, which waiting will not cure
_NOT_OUTAGES: tuple[type[Exception], ...] = (redis_errors.AuthenticationError, ssl.SSLError)
# links of an exception's chain (cause, context) looked at
_CHAIN_LIMIT = 8


def _named(error: BaseException) -> str | None:
    if isinstance(error, _NOT_OUTAGES):
        return None
    if isinstance(error, StoreUnavailable):
        return error.store
    if isinstance(error, DATABASE_OUTAGES) or _lost_connection(error):
        return DATABASE
    if isinstance(error, REDIS_OUTAGES):
        return REDIS
    if isinstance(error, UNNAMED_OUTAGES):
        return SOME_STORE
    return None


def _lost_connection(error: BaseException) -> bool:
    return any(isinstance(error, kind) and words in str(error) for kind, words in _LOST_CONNECTION)


def unavailable_store(error: BaseException) -> str | None:
    """The store `error` says cannot be reached now, in plain words; None for other errors.

    An error raised while handling an outage is the outage too: asyncpg answers the rollback
    of a transaction whose connection was lost with InterfaceError, its context the loss.
    """
    link: BaseException | None = error
    for _ in range(_CHAIN_LIMIT):
        if link is None:
            return None
        if (store := _named(link)) is not None:
            return store
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    return None


def is_outage(error: BaseException) -> bool:
    """True when `error` says a store is away rather than that it refused something."""
    return unavailable_store(error) is not None


async def connect_database(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """`asyncpg.connect`, raising StoreUnavailable when the server cannot be reached.

    asyncpg raises the socket's own OSError (FileNotFoundError for a unix socket whose file
    is gone, ConnectionRefusedError, TimeoutError): only here, while connecting, do those
    surely mean the database; elsewhere a FileNotFoundError is a missing file (a bug).
    """
    try:
        return await asyncpg.connect(*args, **kwargs)
    except ssl.SSLError:
        raise
    except OSError as error:
        raise StoreUnavailable(DATABASE, str(error) or type(error).__name__) from error


def report_failure(log: logging.Logger, what: str, error: BaseException) -> None:
    """Log a failed background step: one line for an outage (the step is retried and
    recovers by itself), the traceback for anything else."""
    store = unavailable_store(error)
    if store is None:
        log.error("%s failed", what, exc_info=error)
    else:
        log.warning("%s failed: %s is unavailable (%s); retrying", what, store, error)
