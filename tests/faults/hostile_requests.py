"""Hostile HTTP/1.1 requests, written byte by byte (no client library would send most of
them), each with the answers a sound server may give it."""

from __future__ import annotations

import functools
import json
import os
import struct
import zlib
from dataclasses import dataclass

from tests.http.governance_helpers import lightgbm_model_bytes

NESTED = b"[" * 10_000 + b"]" * 10_000
# the model the upload requests name (created before they are sent)
TARGET = "hostile-target"
BOUNDARY = b"hostile-boundary"
HUNG_UP = "hung up"  # the client closed the connection before an answer, on purpose
RESET = "reset"  # the server refused to read on and closed the connection


@dataclass(frozen=True)
class Hostile:
    """A request's bytes and the answers (status codes, or HUNG_UP/RESET) it may get.

    `send_only`: bytes of the request actually sent before the client hangs up."""

    name: str
    raw: bytes
    answers: frozenset[str]
    send_only: int | None = None


def request(
    method: str,
    target: bytes,
    headers: dict[str, str | bytes],
    body: bytes = b"",
    *,
    chunked: bool = False,
    length: int | None = None,
) -> bytes:
    """One HTTP/1.1 request; `length` declares a Content-Length other than the body's."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: ledger", b"Connection: close"]
    lines += [
        k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()) for k, v in headers.items()
    ]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
        body = b"%x\r\n" % len(body) + body + b"\r\n" if body else b""
    else:
        lines.append(b"Content-Length: %d" % (len(body) if length is None else length))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def multipart(parts: list[tuple[str, str | None, str, bytes]], *, closed: bool = True) -> bytes:
    """A multipart/form-data body of (name, filename, content type, content) parts."""
    out = b""
    for name, filename, content_type, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += b"--" + BOUNDARY + b"\r\n"
        out += (
            f"Content-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        )
        out += content + b"\r\n"
    return out + (b"--" + BOUNDARY + b"--\r\n" if closed else b"")


@functools.cache
def zip_bomb(inflated_mb: int = 1024) -> bytes:
    """A zip archive of ~1 KB per MB holding one `schema.json` of `inflated_mb` MB of zeros
    (a skops archive's first read): deflate blocks of one MB, repeated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    megabyte = b"\0" * (1 << 20)
    block = compressor.compress(megabyte) + compressor.flush(zlib.Z_FULL_FLUSH)
    data = block * inflated_mb + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = 0
    for _ in range(inflated_mb):
        crc = zlib.crc32(megabyte, crc)
    size, name = inflated_mb << 20, b"schema.json"
    # local header, data, central directory, end of central directory (APPNOTE 4.3)
    local = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(name), 0
    )
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size, len(name),
        0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    directory_at = len(local) + len(name) + len(data)
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + len(name), directory_at, 0
    )
    return local + name + data + central + name + end


def json_requests(auth: str) -> list[Hostile]:
    """Malformed JSON bodies and content types on the JSON routes."""

    def post(body: bytes, content_type: str | None = "application/json", **kw: object) -> bytes:
        headers: dict[str, str | bytes] = {"Authorization": auth}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return request("POST", b"/v1/models", headers, body, **kw)  # type: ignore[arg-type]

    nul = b'{"name":"nul-%s","risk_tier":"low","description":"a\\u0000b"}'
    bad, refused = frozenset({"400"}), frozenset({"422"})
    too_big = b'{"name":"big","risk_tier":"low","description":"' + b"x" * 1_100_000 + b'"}'
    as_text: dict[str, str | bytes] = {"Authorization": auth, "Content-Type": "text/plain"}
    patch = request("PATCH", f"/v1/models/{TARGET}".encode(), as_text, b'{"owner":"a\\u0000b"}')
    form = multipart(
        [("name", None, "text/plain", b"m"), ("risk_tier", None, "text/plain", b"low")]
    )
    return [
        Hostile("nested 10,000 levels", post(NESTED), bad),
        Hostile(
            "nested 10,000 levels in tags",
            post(b'{"name":"n","risk_tier":"low","tags":' + NESTED + b"}"),
            bad,
        ),
        Hostile("invalid UTF-8 in a string", post(b'{"name":"\xff\xfe","risk_tier":"low"}'), bad),
        Hostile(
            "invalid UTF-8 in a key", post(b'{"\xc3\x28":1,"name":"u","risk_tier":"low"}'), bad
        ),
        Hostile("a NUL byte in a string", post(b'{"name":"a\x00b","risk_tier":"low"}'), bad),
        Hostile("\\u0000 as application/json", post(nul % b"a"), refused),
        Hostile("\\u0000 as text/plain", post(nul % b"b", "text/plain"), refused),
        Hostile("\\u0000 with no content type", post(nul % b"c", None), refused),
        Hostile("\\u0000 as Application/JSON", post(nul % b"d", "Application/JSON"), refused),
        Hostile("\\u0000 in a PATCH as text/plain", patch, refused),
        Hostile("body over the limit", post(too_big), frozenset({"413"})),
        Hostile("body over the limit, chunked", post(too_big, chunked=True), frozenset({"413"})),
        Hostile("XML", post(b'<model name="x"/>', "application/xml"), bad),
        Hostile(
            "form-urlencoded",
            post(b"name=x&risk_tier=low", "application/x-www-form-urlencoded"),
            bad,
        ),
        Hostile(
            "multipart to a JSON route",
            post(form, "multipart/form-data; boundary=" + BOUNDARY.decode()),
            bad,
        ),
        Hostile("empty body", post(b""), bad),
    ]


def upload_requests(auth: str) -> list[Hostile]:
    """Malformed multipart bodies and hostile artifacts on the version upload route."""
    headers: dict[str, str | bytes] = {
        "Authorization": auth,
        "Content-Type": "multipart/form-data; boundary=" + BOUNDARY.decode(),
    }
    target = f"/v1/models/{TARGET}/versions".encode()
    model = ("artifact", "model.txt", "text/plain", lightgbm_model_bytes(0))
    lightgbm = ("metadata", None, "application/json", b'{"format":"lightgbm"}')
    skops = ("metadata", None, "application/json", b'{"format":"sklearn-skops"}')

    def upload(
        *parts: tuple[str, str | None, str, bytes], closed: bool = True, cut: int = 0
    ) -> bytes:
        body = multipart(list(parts), closed=closed)
        return request("POST", target, headers, body[: len(body) - cut])

    def metadata(content: bytes) -> tuple[str, str | None, str, bytes]:
        return ("metadata", None, "application/json", content)

    def artifact(name: str, content_type: str, content: bytes) -> tuple[str, str, str, bytes]:
        return ("artifact", name, content_type, content)

    whole = upload(model, lightgbm)
    bad, refused = frozenset({"400"}), frozenset({"422"})
    not_utf8 = metadata(b'{"format":"lightgbm","params":{"a":"\xff"}}')
    nested = metadata(b'{"format":"lightgbm","params":' + NESTED + b"}")
    nul = metadata(b'{"format":"lightgbm","params":{"a":"\\u0000"}}')
    parts = [(f"p{n}", None, "text/plain", b"v") for n in range(5000)]
    garbage = os.urandom(64_000)
    text_garbage = upload(artifact("m.txt", "text/plain", garbage), lightgbm)
    zip_garbage = upload(artifact("m.skops", "application/zip", garbage), skops)
    bomb = upload(artifact("m.skops", "application/zip", zip_bomb()), skops)
    unclosed = upload(model, lightgbm, closed=False)
    no_boundary = request("POST", target, {**headers, "Content-Type": "multipart/form-data"}, b"-")
    as_json = request(
        "POST", target, {**headers, "Content-Type": "application/json"}, b'{"format":"lightgbm"}'
    )
    return [
        Hostile("metadata not JSON", upload(model, metadata(b'{"format":')), bad),
        Hostile("metadata not UTF-8", upload(model, not_utf8), bad),
        Hostile("metadata nested 10,000 levels", upload(model, nested), bad),
        Hostile("metadata with \\u0000", upload(model, nul), refused),
        Hostile("multipart cut short", upload(model, lightgbm, closed=False, cut=200), bad),
        Hostile("multipart without its closing boundary", unclosed, bad),
        Hostile("multipart without a boundary", no_boundary, bad),
        Hostile("5,000 parts", upload(*parts), bad),
        Hostile("garbage as a LightGBM model", text_garbage, refused),
        Hostile("garbage as a skops model", zip_garbage, refused),
        Hostile("zip bomb as a skops model (1 MB to 1 GB)", bomb, refused),
        Hostile("JSON to the upload route", as_json, bad),
        Hostile("client hangs up mid-upload", whole, frozenset({HUNG_UP}), len(whole) // 2),
    ]


def header_and_path_requests(auth: str) -> list[Hostile]:
    """Huge or invalid headers, invalid bytes and escapes in paths and query strings."""

    def get(target: bytes, headers: dict[str, str | bytes] | None = None) -> bytes:
        return request("GET", target, {"Authorization": auth, **(headers or {})})

    model = json.dumps({"name": "h", "risk_tier": "low"}).encode()
    alert = b'{"version":1,"statistic":"psi","value":1,"threshold":0.2,"severity":"info"}'

    def post(target: bytes, body: bytes, headers: dict[str, str | bytes] | None = None) -> bytes:
        json_headers = {"Authorization": auth, "Content-Type": "application/json"}
        return request("POST", target, {**json_headers, **(headers or {})}, body)

    refused, bad, ok = frozenset({"400", "404", "422"}), frozenset({"400"}), frozenset({"200"})
    too_large = frozenset({"431"})
    many: dict[str, str | bytes] = {f"X-Filler-{n}": "v" for n in range(2000)}
    huge = get(b"/v1/models", {"X-Big": b"a" * (64 << 20)})
    long_url = get(b"/v1/models/" + b"a" * 200_000)
    nul_key = post(b"/v1/models", model, {"Idempotency-Key": b"a\x00b"})
    non_ascii = post(b"/v1/models", model, {"X-Request-Id": b"\xff\xfe"})
    return [
        Hostile("a 64 MB header", huge, too_large),
        Hostile("a 200 KB URL", long_url, bad | too_large),
        Hostile("2,000 headers", get(b"/v1/models", many), ok),
        Hostile("a NUL in Idempotency-Key", nul_key, bad),
        Hostile("non-ASCII X-Request-Id", non_ascii, bad),
        Hostile("invalid UTF-8 bytes in the path", get(b"/v1/models/\xff\xfe"), bad),
        Hostile("invalid UTF-8 bytes in the query", get(b"/v1/registry?as_of=\xff"), bad),
        Hostile("%FF in the path", get(b"/v1/models/%FF"), refused),
        Hostile("%FF%FE in the query", get(b"/v1/registry?model=%FF%FE"), ok | refused),
        Hostile("%00 in the path", get(b"/v1/models/a%00b"), refused),
        Hostile("%00 in a write's path", post(b"/v1/models/a%00b/drift-alerts", alert), refused),
        Hostile("%FF in a write's path", post(b"/v1/models/%FF/drift-alerts", alert), refused),
    ]


def hostile_requests(auth: str) -> list[Hostile]:
    return [*json_requests(auth), *upload_requests(auth), *header_and_path_requests(auth)]
