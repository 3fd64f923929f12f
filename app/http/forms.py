"""Multipart bodies of the upload routes, parsed before Litestar's extractor would.

Litestar's parser decodes each text part with `bytes.decode(charset)` unguarded: a part that
is not valid in its charset (or names an unknown one) raised out of it as a 500 and left the
files of earlier parts open. This parser fills the same form state, so the routes' `data` is
what it always was, and answers those parts with 400.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from litestar import Request
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException
from litestar.types import Empty
from litestar.utils.scope.state import ScopeState
from multipart import (  # type: ignore[import-untyped]
    MultipartSegment,
    ParserError,
    ParserLimitReached,
    PushMultipartParser,
)


def _text(segment: MultipartSegment, data: bytearray) -> str:
    charset = segment.charset or "utf-8"
    try:
        return data.decode(charset)
    except LookupError as error:
        raise ClientException(f"multipart part {segment.name!r}: unknown charset") from error
    except UnicodeDecodeError as error:
        raise ClientException(
            f"multipart part {segment.name!r} is not valid {charset} text (byte {error.start})"
        ) from error


class _Form:
    """The parts read so far: text parts decoded, file parts spooled as UploadFiles."""

    def __init__(self) -> None:
        self.fields: defaultdict[str, list[Any]] = defaultdict(list)
        self._segment: MultipartSegment | None = None
        self._data: UploadFile | bytearray = bytearray()

    async def feed(self, event: MultipartSegment | bytes | None) -> None:
        if isinstance(event, MultipartSegment):
            self._segment, self._data = event, bytearray()
            if event.filename:
                self._data = UploadFile(
                    content_type=event.content_type or "text/plain",
                    filename=event.filename,
                    headers=dict(event.headerlist),
                )
        elif event and isinstance(self._data, UploadFile):
            await self._data.write(event)
        elif event and isinstance(self._data, bytearray):
            self._data.extend(event)
        elif self._segment is None:
            raise ClientException("Unexpected eof in multipart/form-data")
        else:  # the end of a part
            value = self._data
            if isinstance(value, UploadFile):
                await value.seek(0)
            self.fields[self._segment.name].append(
                value if isinstance(value, UploadFile) else _text(self._segment, value)
            )
            self._segment, self._data = None, bytearray()

    async def close(self) -> None:
        """Close every file read so far (the request failed)."""
        for upload in [*(v for values in self.fields.values() for v in values), self._data]:
            if isinstance(upload, UploadFile):
                await upload.close()


async def _parse(request: Request[Any, Any, Any], boundary: bytes) -> dict[str, list[Any]]:
    form = _Form()
    limit = request.app.multipart_form_part_limit
    try:
        stream = request.stream()
        first = await anext(stream, b"")
        if not first:
            return form.fields  # no body: no parts (the route names the one missing)
        with PushMultipartParser(boundary, max_segment_count=limit) as parser:
            chunk = first
            while not parser.closed:
                for event in parser.parse(chunk):
                    await form.feed(event)
                chunk = await anext(stream, b"")
    except BaseException:
        await form.close()
        raise
    return form.fields


async def parse_multipart(request: Request[Any, Any, Any]) -> None:
    """`before_request` of the upload routes: parse a multipart body into the form state
    Litestar's extractor reads; 400 for a part that cannot be read."""
    content_type, options = request.content_type
    boundary = options.get("boundary")
    state = ScopeState.from_scope(request.scope)
    if content_type != RequestEncodingType.MULTI_PART or not boundary or state.form is not Empty:
        return  # the extractor answers these as it always has
    try:
        fields = await _parse(request, boundary.encode())
    except ParserLimitReached:
        raise ClientException("too many multipart parts") from None
    except ParserError as error:
        raise ClientException("Invalid multipart/form-data") from error
    state.form = {name: v if len(v) > 1 else v[0] for name, v in fields.items()}
