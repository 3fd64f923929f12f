"""A pooled connection the server closed or tore fails with asyncpg errors that carry no
connection error: InternalClientError on a query after the server's FATAL (shutdown,
terminate) was read but not the connection's end, InterfaceError on a transaction's exit once
the end was read. That is the database going away: a 503 and a one-line warning, not a bug's
500 and traceback. The fault suite met both stopping PostgreSQL under load
(tests/faults/test_outages.py)."""

from __future__ import annotations

import httpx
from asyncpg.exceptions import InterfaceError, InternalClientError
from litestar import Litestar, get

from app.http.problems import EXCEPTION_HANDLERS
from app.outages import DATABASE, unavailable_store

# what asyncpg raised, word for word, on the query after the server's FATAL
TORN = "cannot switch to state 12; another operation (2) is in progress"
# and on the exit of a transaction whose connection the server had closed
CLOSED = "cannot call Transaction.__aexit__(): the underlying connection is closed"


def test_a_torn_or_closed_connection_is_the_database_away() -> None:
    assert unavailable_store(InternalClientError(TORN)) == DATABASE
    unexpected = "cannot process message 'E': protocol is in an unexpected state 0."
    assert unavailable_store(InternalClientError(unexpected)) == DATABASE
    assert unavailable_store(InterfaceError(CLOSED)) == DATABASE
    # the exit of the transaction that met the tear: its context says what happened
    closing = InterfaceError(CLOSED)
    closing.__context__ = InternalClientError(TORN)
    assert unavailable_store(closing) == DATABASE


def test_misusing_a_connection_is_still_a_bug() -> None:
    unknown = InternalClientError("unknown error in protocol implementation")
    busy = InterfaceError("cannot perform operation: another operation is in progress")
    released = InterfaceError(
        "cannot call Connection.fetch(): connection has been released back to the pool"
    )
    assert [unavailable_store(e) for e in (unknown, busy, released)] == [None, None, None]


async def test_a_request_meeting_a_torn_connection_answers_503() -> None:
    @get("/torn", sync_to_thread=False)
    def torn() -> None:
        raise InternalClientError(TORN)

    app = Litestar([torn], exception_handlers=EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as client:
        answer = await client.get("/torn")
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"].startswith("the database is unavailable")
    assert int(answer.headers["retry-after"]) > 0
