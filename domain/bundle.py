"""The signed framing of an export bundle: the header up front and the trailer at the end.

The header states what the bundle holds before any of it is read (format, scope, how many
chain entries and checkpoints, the head it ends at); the trailer closes it with a digest of
every byte before it. A bundle cut short has no trailer; one with lines dropped, added or
edited no longer matches its digest or its counts. Both are signed by the server key; the
bytes are documented in docs/audit-format.md.
"""

from __future__ import annotations

import struct
from datetime import datetime

from domain.chain import epoch_micros

BUNDLE_FORMAT = "model-ledger-audit/2"


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack(">i", len(raw)) + raw


def header_message(
    *,
    bundle_format: str,
    scope: str,
    entries: int,
    checkpoints: int,
    head_position: int,
    head_hash: bytes,
    exported_at: datetime,
) -> bytes:
    """The bytes a bundle's header signs."""
    return b"".join(
        (
            b"model-ledger/bundle-header/v1\n",
            _text(bundle_format),
            _text(scope),
            struct.pack(">qqq", entries, checkpoints, head_position),
            head_hash,
            struct.pack(">q", epoch_micros(exported_at)),
        )
    )


def trailer_message(*, lines: int, head_position: int, head_hash: bytes, digest: bytes) -> bytes:
    """The bytes a bundle's trailer signs: `digest` is sha256 of every byte before the
    trailer line, the `lines` before it included the header."""
    return b"".join(
        (
            b"model-ledger/bundle-trailer/v1\n",
            struct.pack(">qq", lines, head_position),
            head_hash,
            digest,
        )
    )
