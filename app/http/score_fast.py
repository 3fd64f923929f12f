"""The score route's fast path: a handler middleware that answers successful requests itself.

Past authentication (the app's middleware has set the principal), a score request that
succeeds needs none of Litestar's per-request machinery: guards, the signature model,
response objects. Measured on one keep-alive connection, that machinery was most of what a
single-row score cost over `GET /health`. So this middleware reads the body, scores and
writes the response itself, exactly as `ScoreController.score` would answer. Anything else
(a role that may not score, `explain`, a body too large, any error) goes to the handler with
the body replayed, which answers it (or its problem details) the documented way.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from app.resources import Resources
from app.scoring.scorer import Scored

SCORING_ROLES = frozenset({"scorer", "admin"})
# what environment names may be (domain.deploy); a query of this one parameter, unescaped
_ENVIRONMENT_QUERY = re.compile(rb"environment=([a-z][a-z0-9_-]{0,39})")
_JSON_HEADERS = [(b"content-type", b"application/json")]
_encoder = msgspec.json.Encoder()

Decode = Callable[[bytes], Any]
Render = Callable[[str, str, Scored], msgspec.Struct]


class ScoreFastPath:
    """Answers successful score requests; hands the rest to the route (see the module)."""

    def __init__(self, app: ASGIApp, decode: Decode, render: Render) -> None:
        self.app = app
        self._decode = decode
        self._render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Score, or replay the request to the route handler."""
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        environment = _environment(scope["query_string"])
        if (
            environment is None
            or scope["method"] != "POST"
            or getattr(scope.get("user"), "role", None) not in SCORING_ROLES
        ):
            await self.app(scope, receive, send)
            return
        resources: Resources = scope["litestar_app"].state.resources
        limit = resources.settings.score_max_body_bytes
        messages, body = await _read_body(receive, limit)
        if body is None:  # too large: the route answers 413
            await self.app(scope, _replay(messages, receive), send)
            return
        name: str = scope["path_params"]["name"]
        try:
            request = self._decode(body)
            scored = await resources.scoring.scorer.score(
                name,
                environment,
                request.rows,
                request.features,
                count_errors=False,
                unit_id=request.unit_id,
            )
        except Exception:  # every failure is answered (and counted) by the route
            await self.app(scope, _replay(messages, receive), send)
            return
        payload = _encoder.encode(self._render(name, environment, scored))
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
        }
        await send(start)
        done: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": payload,
            "more_body": False,
        }
        await send(done)


def _environment(query: bytes) -> str | None:
    """The environment asked for; None when the query holds anything else (`explain`, an
    escaped or malformed value): the route judges those."""
    if not query:
        return "production"
    found = _ENVIRONMENT_QUERY.fullmatch(query)
    return found[1].decode("ascii") if found else None


async def _read_body(receive: Receive, limit: int) -> tuple[list[ReceiveMessage], bytes | None]:
    """The request's messages and body; the body is None past `limit` bytes."""
    messages: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return messages, None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return messages, chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(
    messages: list[ReceiveMessage], receive: Receive
) -> Callable[[], Awaitable[ReceiveMessage]]:
    """A receive that gives back the messages already read, then reads on."""
    pending = list(messages)

    async def replayed() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
