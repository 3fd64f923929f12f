"""The one error mapping tells an outage (503) from a bug (500) by what the error means."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import asyncpg
import pytest
import redis.exceptions
from litestar import Litestar, get
from litestar.handlers import HTTPRouteHandler
from litestar.testing import TestClient

from app.http.problems import EXCEPTION_HANDLERS
from app.outages import StoreUnavailable, report_failure


def _rollback_after_the_connection_was_lost() -> None:
    """What asyncpg raises when the server goes away inside `async with conn.transaction()`."""
    try:
        _raise(asyncpg.ConnectionDoesNotExistError("connection was closed mid-operation"))
    except asyncpg.ConnectionDoesNotExistError:
        raise asyncpg.InterfaceError(  # noqa: B904 - raised while handling, as asyncpg's is
            "cannot call Transaction.__aexit__(): the underlying connection is closed"
        )


def _raise(error: Exception) -> None:
    raise error


# what each error raised by a handler is answered: 503 naming a store, or 500
CASES: dict[str, tuple[object, int, str]] = {
    "socket file missing, while connecting": (
        lambda: _raise(StoreUnavailable("the database", "[Errno 2] No such file or directory")),
        503,
        "the database",
    ),
    "shutting down": (
        lambda: _raise(asyncpg.CannotConnectNowError("the database system is shutting down")),
        503,
        "the database",
    ),
    "terminated by the administrator": (
        lambda: _raise(asyncpg.AdminShutdownError("terminating connection")),
        503,
        "the database",
    ),
    "too many connections": (
        lambda: _raise(asyncpg.TooManyConnectionsError("sorry, too many clients already")),
        503,
        "the database",
    ),
    "connection lost mid-query": (
        lambda: _raise(asyncpg.ConnectionDoesNotExistError("connection was closed")),
        503,
        "the database",
    ),
    "rollback on a lost connection": (_rollback_after_the_connection_was_lost, 503, "the database"),
    "redis refused": (
        lambda: _raise(redis.exceptions.ConnectionError("Error 111 connecting")),
        503,
        "Redis",
    ),
    "redis timed out": (lambda: _raise(redis.exceptions.TimeoutError("Timeout")), 503, "Redis"),
    "connection reset": (lambda: _raise(ConnectionResetError(104, "reset")), 503, "a store"),
    "pool acquire timed out": (lambda: _raise(TimeoutError()), 503, "a store"),
    # bugs and misconfigurations stay 500
    "a missing file (not a socket)": (lambda: open("/nonexistent/model.txt"), 500, ""),  # noqa: SIM115
    "a plain bug": (lambda: _raise(RuntimeError("boom")), 500, ""),
    "an InterfaceError of our own making": (
        lambda: _raise(asyncpg.InterfaceError("another operation is in progress")),
        500,
        "",
    ),
    "a wrong redis password": (
        lambda: _raise(redis.exceptions.AuthenticationError("invalid password")),
        500,
        "",
    ),
    "an outage hidden on purpose (from None)": (
        lambda: _raise_from_none(asyncpg.CannotConnectNowError("starting up")),
        500,
        "",
    ),
}


def _raise_from_none(cause: Exception) -> None:
    try:
        _raise(cause)
    except Exception:
        raise RuntimeError("a bug that discards its context") from None


def _route(index: int, raiser: object) -> HTTPRouteHandler:
    def handler() -> None:
        raiser()  # type: ignore[operator]

    return get(f"/case/{index}", sync_to_thread=False, name=f"case{index}")(handler)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Litestar]]:
    routes = [_route(i, raiser) for i, (raiser, _, _) in enumerate(CASES.values())]
    app = Litestar(route_handlers=routes, exception_handlers=EXCEPTION_HANDLERS)
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize("case", list(CASES))
def test_outages_are_503_and_bugs_500(
    client: TestClient[Litestar], case: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, status, store = CASES[case]
    with caplog.at_level(logging.WARNING, logger="model_ledger.http"):
        answer = client.get(f"/case/{list(CASES).index(case)}")
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    if status == 503:
        assert body["code"] == "store_unavailable"
        assert body["detail"] == f"{store} is unavailable right now; retry later"
        assert int(answer.headers["retry-after"]) > 0
    else:
        assert body["detail"] == "internal error; it has been logged"
        assert "retry-after" not in answer.headers
        logged = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert logged and logged[-1].exc_info is not None  # with its traceback


def test_background_failures_log_one_line_for_an_outage_and_a_traceback_for_a_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("model_ledger.test")
    with caplog.at_level(logging.WARNING, logger="model_ledger.test"):
        report_failure(log, "catch-up", asyncpg.CannotConnectNowError("starting up"))
        report_failure(log, "catch-up", KeyError("a bug"))
    outage, bug = caplog.records
    assert (outage.levelno, outage.exc_info) == (logging.WARNING, None)
    assert "the database is unavailable" in outage.getMessage()
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
