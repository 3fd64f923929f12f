"""Decoding request bodies: what cannot be parsed is a 400, whatever the parser raised.

msgspec reports most malformed JSON as DecodeError, which Litestar answers with 400, but
invalid UTF-8 inside a string raises UnicodeDecodeError and deep nesting RecursionError;
Litestar's multipart parser lets a text part's UnicodeDecodeError through as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import ClientException

from domain.errors import InvalidInput

_T = TypeVar("_T")

# far beyond any body of this API (a few levels), far below where msgspec gives up (~1,000
# levels, less the stack in use): a value nested that deep could be recorded, then fail to
# decode where the stack is deeper (a worker running the job it describes)
MAX_JSON_DEPTH = 32

_any_json = msgspec.json.Decoder()


def _not_utf8(error: UnicodeDecodeError, what: str) -> ClientException:
    return ClientException(f"{what} is not valid UTF-8 (byte {error.start}: {error.reason})")


def _too_deep(what: str) -> ClientException:
    return ClientException(f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels")


def decode_json(body: bytes, decode: Callable[[bytes], _T], what: str = "the body") -> _T:
    """`decode(body)`; 400 where the bytes are not UTF-8 or nest too deeply to decode.

    DecodeError and ValidationError pass through: callers answer them their own way.
    """
    try:
        return decode(body)
    except UnicodeDecodeError as error:
        raise _not_utf8(error, what) from error
    except RecursionError as error:
        raise _too_deep(what) from error


def _deeper_than(value: object, limit: int) -> bool:
    """True when arrays and objects in `value` nest more than `limit` levels."""
    level = [value]
    for _ in range(limit + 1):
        containers = [v for v in level if isinstance(v, (dict, list))]
        if not containers:
            return False
        level = [item for c in containers for item in (c.values() if isinstance(c, dict) else c)]
    return True


def refuse_deep_json(body: bytes, value: object, what: str = "the body") -> None:
    """400 when the decoded `value` of `body` nests deeper than MAX_JSON_DEPTH."""
    # fewer brackets than the limit cannot nest deeper: most bodies never walk the value
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise _too_deep(what)


def decode_any_json(body: bytes, what: str = "the body") -> Any:
    """Any JSON value; 400 for what is not JSON (DecodeError included) or nests too deeply."""
    try:
        value = decode_json(body, _any_json.decode, what)
    except msgspec.DecodeError as error:
        raise ClientException(f"{what} is not valid JSON: {error}") from error
    refuse_deep_json(body, value, what)
    return value


def _holds_nul(value: object) -> bool:
    """True when a string (key or value) anywhere in the decoded `value` holds a NUL."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def refuse_nul_json(body: bytes, value: object) -> None:
    """422 when the decoded `value` of `body` holds a NUL: PostgreSQL text cannot, so an
    event recorded with one could never be projected."""
    # JSON spells a NUL in a string only this way (a raw one is malformed): most bodies
    # never walk the value
    if b"\\u0000" in body and _holds_nul(value):
        raise InvalidInput("NUL characters (\\u0000) are not accepted in requests")


class BodyRequest(Request[Any, Any, Any]):
    """The application's request: its JSON body (the routes' `data`) is parsed as Litestar
    parses it, with the failures above answered 400, the depth bounded and NUL refused.

    Litestar parses the body as JSON whatever its content type says (text/plain, none,
    `Application/JSON`): these checks are made here, where it is parsed, not by type."""

    async def json(self) -> Any:
        """The decoded JSON body."""
        try:
            value = await super().json()
        except UnicodeDecodeError as error:
            raise _not_utf8(error, "the body") from error
        except RecursionError as error:
            raise _too_deep("the body") from error
        body = await self.body()
        refuse_deep_json(body, value)
        refuse_nul_json(body, value)
        return value
