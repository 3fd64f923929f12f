"""uvicorn's httptools protocol with a bound on the size of a request's head.

httptools bounds neither the request line nor the headers, and joins the pieces of a header
as they arrive by concatenation: a 64 MB header held the event loop for seconds (quadratic
in its size) before any route or authentication saw it, stalling every other request, and
one of 256 MB for minutes. Past `MAX_REQUEST_HEAD_BYTES` the request is answered 431 and
the connection closed.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# the request line and headers of one request; ours are a few hundred bytes (a bearer
# token, an idempotency key), common servers allow 8-64 KB
MAX_REQUEST_HEAD_BYTES = 64 * 1024

# after answering 431, the rest of the head is read and dropped this long before closing:
# a close with bytes unread resets the connection, and the client could lose the answer
LINGER_SECONDS = 2.0

_log = logging.getLogger("model_ledger.http")
_STATUS = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
_PROBLEM = msgspec.json.encode(
    {
        "type": "urn:model-ledger:problem:request_header_fields_too_large",
        "title": _STATUS.phrase,
        "status": _STATUS.value,
        "detail": f"the request line and headers exceed {MAX_REQUEST_HEAD_BYTES} bytes",
        "code": "request_header_fields_too_large",
    }
)
_ANSWER = (
    f"HTTP/1.1 {_STATUS.value} {_STATUS.phrase}\r\n"
    "content-type: application/problem+json\r\n"
    f"content-length: {len(_PROBLEM)}\r\nconnection: close\r\n\r\n"
).encode() + _PROBLEM


class BoundedHeadProtocol(HttpToolsProtocol):
    """HttpToolsProtocol answering 431 once a request's head passes MAX_REQUEST_HEAD_BYTES.

    Only chunks that lie wholly inside one head are counted (a chunk where a head begins or
    ends may hold a body too), so a head is refused at most two reads (2 x 256 KB) past the
    bound, and a head within it never is.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._head_edges = 0  # heads begun and ended on this connection
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        edges = self._head_edges
        super().data_received(data)
        if self._in_head and edges == self._head_edges:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_REQUEST_HEAD_BYTES and not self.transport.is_closing():
                self._refuse()

    def _refuse(self) -> None:
        _log.warning("a request head over %d bytes refused", MAX_REQUEST_HEAD_BYTES)
        self._refused = True
        self.transport.write(_ANSWER)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        self._head_edges += 1

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_edges += 1
        super().on_headers_complete()
