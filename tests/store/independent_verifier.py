"""A second verifier of audit bundles, written from docs/audit-format.md alone.

Standard library only, importing nothing of the project, so it checks the document as much as
the code: if the two verifiers disagree on a bundle, one of them (or the document) is wrong.
Ed25519 verification follows the reference code of RFC 8032, section 6.

    python tests/store/independent_verifier.py BUNDLE [--public-key HEX]
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta

FORMAT = "model-ledger-audit/2"
ZERO32 = bytes(32)


class Invalid(Exception):
    """The bundle does not verify; the message says why."""


# --- Ed25519 verification (RFC 8032, section 6) -------------------------------------------

P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    big_a, big_b = (y1 - x1) * (y2 - x2) % P, (y1 + x1) * (y2 + x2) % P
    c, d = 2 * t1 * t2 * D % P, 2 * z1 * z2 % P
    e, f, g, h = big_b - big_a, d - c, d + c, big_b + big_a
    return (e * f, g * h, f * g, e * h)


def _mul(s: int, point: tuple[int, ...]) -> tuple[int, ...]:
    result = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            result = _add(result, point)
        point = _add(point, point)
        s >>= 1
    return result


def _equal(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= P:
        return None
    x2 = (y * y - 1) * pow((D * y * y + 1) % P, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def _decompress(raw: bytes) -> tuple[int, ...] | None:
    if len(raw) != 32:
        return None
    y = int.from_bytes(raw, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


_GY = 4 * pow(5, P - 2, P) % P
_GX = _recover_x(_GY, 0)
assert _GX is not None
BASE = (_GX, _GY, 1, _GX * _GY % P)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` by `public`."""
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decompress(public)
    r = _decompress(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= Q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % Q
    return _equal(_mul(s, BASE), _add(r, _mul(h, a)))


# --- framing (section 1 notation) ----------------------------------------------------------


def u64(n: int) -> bytes:
    if not -(2**63) <= n < 2**63:
        raise Invalid(f"{n} does not fit 64 bits")
    return n.to_bytes(8, "big", signed=True)


def text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return len(raw).to_bytes(4, "big", signed=True) + raw


def micros(rfc3339: str) -> int:
    moment = datetime.fromisoformat(rfc3339)
    if moment.tzinfo is None:
        raise Invalid(f"time without a zone: {rfc3339}")
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def unhex(value: object, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size:
        raise Invalid(f"expected {size} bytes of hex, got {value!r}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise Invalid(f"not hex: {value!r}") from None


def integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"expected an integer, got {value!r}")
    return value


def canonical(event: dict[str, object]) -> bytes:
    event_id = str(event["event_id"]).replace("-", "")
    return b"".join(
        (
            u64(integer(event["position"])),
            u64(integer(event["version"])),
            unhex(event_id, 16),
            text(str(event["stream"])),
            text(str(event["type"])),
            text(str(event["data"])),
            text(str(event["meta"])),
            u64(micros(str(event["recorded_at"]))),
        )
    )


def checkpoint_message(line: dict[str, object]) -> bytes:
    tail = unhex(line["head_hash"], 32)
    if "sequence" not in line:
        return (
            b"model-ledger/checkpoint/v1\n"
            + u64(integer(line["position"]))
            + tail
            + u64(micros(str(line["signed_at"])))
        )
    return (
        b"model-ledger/checkpoint/v2\n"
        + u64(integer(line["sequence"]))
        + u64(integer(line["position"]))
        + tail
        + unhex(line["prev_checkpoint_hash"], 32)
        + u64(micros(str(line["signed_at"])))
    )


# --- the bundle (section 4) ----------------------------------------------------------------


def verify_bundle(data: bytes, public_key_hex: str | None = None) -> None:
    """Raises Invalid unless the bundle's bytes verify, following section 4 step by step."""
    try:
        _verify(data, public_key_hex)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        # a field missing or of the wrong type: not a bundle this document describes
        raise Invalid(f"malformed: {error!r}") from None


def _verify(data: bytes, public_key_hex: str | None) -> None:
    lines = data.split(b"\n")
    if lines[-1] != b"":
        raise Invalid("the last line has no newline: cut short")
    lines = lines[:-1]
    objects = [_parse(number, raw) for number, raw in enumerate(lines, 1)]
    if not objects or objects[0].get("kind") != "header" or objects[0].get("format") != FORMAT:
        raise Invalid("step 1: no model-ledger-audit/2 header")
    header = objects[0]
    key = unhex(header["public_key"], 32)
    if public_key_hex is not None and key != unhex(public_key_hex.lower(), 32):  # step 2
        raise Invalid("step 2: signed by another key")
    key_id = hashlib.sha256(key).hexdigest()[:16]
    head = header["head"]
    if not isinstance(head, dict):
        raise Invalid("the header's head is not an object")
    head_position, head_hash = integer(head["position"]), unhex(head["hash"], 32)
    header_message = (
        b"model-ledger/bundle-header/v1\n"
        + text(str(header["format"]))
        + text(str(header["scope"]))
        + u64(integer(header["entries"]))
        + u64(integer(header["checkpoints"]))
        + u64(head_position)
        + head_hash
        + u64(micros(str(header["exported_at"])))
    )
    if not ed25519_verify(key, header_message, unhex(header["signature"], 64)):
        raise Invalid("step 3: the header's signature")

    kinds = [o.get("kind") for o in objects]
    if "trailer" not in kinds:
        raise Invalid("step 4: no trailer")
    end = kinds.index("trailer")
    if end != len(objects) - 1:
        raise Invalid("step 4: lines after the trailer")
    checkpoints = [o for o in objects[1:end] if o.get("kind") == "checkpoint"]
    entries = objects[1 + len(checkpoints) : end]
    if any(o.get("kind") not in ("event", "link") for o in entries):
        raise Invalid("step 4: a line out of place")

    trailer = objects[end]
    if len(checkpoints) != integer(header["checkpoints"]):  # step 5
        raise Invalid("step 5: checkpoint count")
    if len(entries) != integer(header["entries"]):
        raise Invalid("step 5: entry count")
    if integer(trailer["lines"]) != end:
        raise Invalid("step 5: the trailer's line count")

    hash_at = _chain(entries)  # step 6
    n, h = (len(entries), hash_at[len(entries)]) if entries else (0, ZERO32)
    if (n, h) != (head_position, head_hash) or trailer["head"] != head:  # step 7
        raise Invalid("step 7: the last entry is not the signed head")
    _checkpoints(checkpoints, key, key_id, hash_at)  # step 8

    digest = hashlib.sha256(b"".join(raw + b"\n" for raw in lines[:end])).digest()  # step 9
    if unhex(trailer["digest"], 32) != digest:
        raise Invalid("step 9: digest")
    trailer_message = (
        b"model-ledger/bundle-trailer/v1\n"
        + u64(integer(trailer["lines"]))
        + u64(head_position)
        + head_hash
        + digest
    )
    if not ed25519_verify(key, trailer_message, unhex(trailer["signature"], 64)):
        raise Invalid("step 9: the trailer's signature")


def _parse(number: int, raw: bytes) -> dict[str, object]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Invalid(f"line {number} is not JSON") from None
    if not isinstance(value, dict):
        raise Invalid(f"line {number} is not an object")
    return value


def _chain(entries: list[dict[str, object]]) -> dict[int, bytes]:
    hash_at = {0: ZERO32}
    h, n = ZERO32, 0
    for entry in entries:
        position = integer(entry["position"])
        prev, stored = unhex(entry["prev_hash"], 32), unhex(entry["hash"], 32)
        if position != n + 1 or prev != h:
            raise Invalid(f"step 6: chain broken at position {n + 1}")
        if entry["kind"] == "event" and hashlib.sha256(prev + canonical(entry)).digest() != stored:
            raise Invalid(f"step 6: hash at position {position}")
        h, n = stored, position
        hash_at[n] = h
    return hash_at


def _checkpoints(
    checkpoints: list[dict[str, object]], key: bytes, key_id: str, hash_at: dict[int, bytes]
) -> None:
    sequence, previous, position = 0, ZERO32, 0
    for line in checkpoints:
        message = checkpoint_message(line)
        if line["key_id"] != key_id or not ed25519_verify(
            key, message, unhex(line["signature"], 64)
        ):
            raise Invalid("step 8: a checkpoint's signature")
        if "sequence" in line:
            if integer(line["sequence"]) != sequence + 1:
                raise Invalid("step 8: a gap in the checkpoint sequence")
            if unhex(line["prev_checkpoint_hash"], 32) != previous:
                raise Invalid("step 8: a checkpoint does not link to the one before")
            if integer(line["position"]) < position:
                raise Invalid("step 8: a checkpoint goes back")
            sequence, previous = sequence + 1, hashlib.sha256(message).digest()
            position = integer(line["position"])
        covered = integer(line["position"])
        if hash_at.get(covered) != unhex(line["head_hash"], 32):
            raise Invalid(f"step 8: the checkpoint at position {covered}")


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--public-key"):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], "rb") as handle:
        data = handle.read()
    try:
        verify_bundle(data, argv[2] if len(argv) == 3 else None)
    except Invalid as error:
        print(f"FAILED: {error!r}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
