"""The server's HTTP protocol bounds a request's head (request line and headers): past the
bound, 431 at once, before the rest is parsed; bodies and pipelined requests are not
counted against it."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from app.http_protocol import MAX_REQUEST_HEAD_BYTES
from app.serve import uvicorn_server
from app.settings import Settings


async def body_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app answering 200 with the length of the body it read."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    size, more = 0, True
    while more:
        message = await receive()
        size, more = size + len(message.get("body", b"")), message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


@pytest.fixture
def address() -> Iterator[tuple[str, int]]:
    """The server as every process runs it, in a thread of its own, on a free port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # connections wait in the backlog until the server accepts them
    server = uvicorn_server(body_length, Settings(log_level="warning"), 0)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


def head(headers: dict[str, bytes], length: int = 0, target: bytes = b"/") -> bytes:
    lines = [b"POST " + target + b" HTTP/1.1", b"Host: x", b"Content-Length: %d" % length]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def answers(address: tuple[str, int], data: bytes, count: int = 1) -> list[bytes]:
    """The status lines of the first `count` answers to `data` sent on one connection."""
    with socket.create_connection(address, timeout=30) as conn:
        # answered before it read it all, the server may stop reading: the answer is there
        with contextlib.suppress(ConnectionError):
            conn.sendall(data)
        received = b""
        while received.count(b"HTTP/1.1 ") < count and (chunk := conn.recv(65536)):
            received += chunk
    return [line for line in received.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def test_a_head_within_the_bound_is_served(address: tuple[str, int]) -> None:
    within = head({"X-Filler": b"a" * (MAX_REQUEST_HEAD_BYTES - 200)})
    assert len(within) <= MAX_REQUEST_HEAD_BYTES
    assert answers(address, within) == [b"HTTP/1.1 200 OK"]


@pytest.mark.parametrize("size", [1 << 20, 16 << 20])
def test_a_head_past_the_bound_is_431(address: tuple[str, int], size: int) -> None:
    huge = head({"X-Filler": b"a" * size})
    assert answers(address, huge) == [b"HTTP/1.1 431 Request Header Fields Too Large"]
    too_long = head({}, target=b"/" + b"a" * size)
    assert answers(address, too_long) == [b"HTTP/1.1 431 Request Header Fields Too Large"]
    assert answers(address, head({})) == [b"HTTP/1.1 200 OK"]  # and it serves on


def test_bodies_and_pipelined_requests_are_not_counted(address: tuple[str, int]) -> None:
    body = b"b" * (4 * MAX_REQUEST_HEAD_BYTES)
    assert answers(address, head({}, len(body)) + body) == [b"HTTP/1.1 200 OK"]
    # one write: a request with a large body, then another right behind it
    two = head({}, len(body)) + body + head({"X-Second": b"yes"})
    assert answers(address, two, count=2) == [b"HTTP/1.1 200 OK"] * 2


def test_many_connections_refused_at_once(address: tuple[str, int]) -> None:
    huge = head({"X-Filler": b"a" * (4 << 20)})
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda _: answers(address, huge), range(8)))
    assert found == [[b"HTTP/1.1 431 Request Header Fields Too Large"]] * 8
