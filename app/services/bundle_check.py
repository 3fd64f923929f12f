"""Verifying an audit bundle offline, as docs/audit-format.md describes step by step.

Beyond the audit of its chain and checkpoints, a bundle must be whole: a signed header
first, the counts it announces, its last entry the signed head, and a signed trailer whose
digest covers every byte before it. Any failure is a report with `ok: false`, never an
exception, so a damaged file is described rather than refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.services.audit import GENESIS_HEAD, Head, Link, LogAudit, VerifyReport
from app.services.bundle import (
    BUNDLE_FORMAT,
    CheckpointLine,
    EventLine,
    Header,
    LinkLine,
    Trailer,
    decoder,
    entry,
)
from app.store.checkpoints import Checkpoint, from_line
from app.store.codec import StoredEvent
from domain.bundle import header_message, trailer_message

# problems are reported in this order of precedence
_HEADER, _CHAIN, _WHOLE, _CHECKPOINTS, _SEAL = range(5)
_FEED_BATCH = 5_000

NO_EXPECTED_HEAD = (
    "no expected head: a bundle exported after the newest events and their checkpoints were "
    "deleted from the database verifies; compare its head with one you were shown "
    "(--expect-head POSITION:HASH)"
)


def unpinned_warning(key_id: str) -> str:
    """Why a bundle checked against the key it carries proves less."""
    return (
        f"no --public-key: the bundle was checked against the key it carries (key id {key_id}); "
        "anyone can write a bundle that verifies this way. Pin the server's public key."
    )


def verify_file(
    path: Path, public_key_hex: str | None = None, *, expect_head: Head | None = None
) -> VerifyReport:
    """Verify a bundle offline; pin `public_key_hex` to trust only that key."""
    with path.open("rb") as handle:
        return _BundleCheck(public_key_hex, expect_head).run(enumerate(handle, 1))


class _BundleCheck:
    def __init__(self, pinned: str | None, expect_head: Head | None) -> None:
        self._pinned = None if pinned is None else pinned.strip().lower()
        self._expect_head = expect_head
        self._problems: list[tuple[int, int | None, str]] = []
        self._digest = hashlib.sha256()
        self._lines = 0
        self._last_number = 0
        self._checkpoints: list[Checkpoint] = []
        self._audit: LogAudit | None = None
        self._pending: list[StoredEvent | Link] = []
        self._entries = 0
        self._trailer: Trailer | None = None

    def _problem(self, rank: int, text: str, position: int | None = None) -> None:
        self._problems.append((rank, position, text))

    def run(self, lines: Iterator[tuple[int, bytes]]) -> VerifyReport:
        first = next(lines, None)
        header = _header(first[1]) if first is not None else None
        if header is None:
            return _refused("not an audit bundle: the first line is not a bundle header")
        if header.format != BUNDLE_FORMAT:
            return _refused(
                f"format {header.format!r} is not {BUNDLE_FORMAT!r}: older bundles carry no "
                "signed header and trailer and cannot prove they are whole; export again"
            )
        if self._pinned is not None and self._pinned != header.public_key.lower():
            return _refused("the bundle is signed by a different key than the one pinned")
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(header.public_key))
        except ValueError:
            return _refused("the header's public key is not 32 bytes of hex")
        assert first is not None
        self._take(first)
        if not _signed(key, header.signature, _header_bytes(header)):
            self._problem(_HEADER, "the header's signature does not verify")
        for numbered in lines:
            if not self._read(numbered):
                break
        return self._report(header, key)

    def _take(self, numbered: tuple[int, bytes]) -> None:
        self._last_number = numbered[0]
        self._digest.update(numbered[1])
        self._lines += 1

    def _read(self, numbered: tuple[int, bytes]) -> bool:
        number, raw = numbered
        if self._trailer is not None:
            if raw.strip():
                self._problem(_WHOLE, f"line {number} follows the trailer")
                return False
            return True
        try:
            line = decoder.decode(raw)
        except msgspec.DecodeError:
            self._take(numbered)
            self._problem(_WHOLE, f"line {number} is not a bundle line")
            return True
        if isinstance(line, Trailer):
            self._trailer = line
            return True
        self._take(numbered)
        try:
            self._line(number, line)
        except ValueError:
            self._problem(_WHOLE, f"line {number} holds a value that is not hex")
        return True

    def _line(self, number: int, line: object) -> None:
        if isinstance(line, CheckpointLine):
            if self._audit is not None:
                self._problem(_WHOLE, f"line {number}: a checkpoint after the entries")
            else:
                self._checkpoints.append(from_line(line))
        elif isinstance(line, (EventLine, LinkLine)):
            if self._audit is None:
                self._audit = LogAudit(self._checkpoints, expect_head=self._expect_head)
            self._entries += 1
            self._pending.append(entry(line))
            if len(self._pending) >= _FEED_BATCH:
                self._flush()
        else:
            self._problem(_WHOLE, f"line {number}: a second header")

    def _flush(self) -> None:
        assert self._audit is not None
        self._audit.feed(self._pending)
        self._pending = []

    def _report(self, header: Header, key: Ed25519PublicKey) -> VerifyReport:
        if self._audit is None:
            self._audit = LogAudit(self._checkpoints, expect_head=self._expect_head)
        self._flush()
        report = self._audit.finish(key, unwitnessed=NO_EXPECTED_HEAD)
        if report.problem is not None:
            rank = _CHAIN if self._audit.broken else _CHECKPOINTS
            self._problem(rank, report.problem, report.first_broken_position)
        self._check_whole(header, report.head)
        self._check_seal(header, key)
        warnings = list(report.warnings)
        if self._pinned is None:
            warnings.append(unpinned_warning(header.key_id))
        if not self._problems:
            return msgspec.structs.replace(report, warnings=warnings)
        ranked = sorted(self._problems, key=lambda p: p[0])
        positions = [p[1] for p in ranked if p[1] is not None]
        return msgspec.structs.replace(
            report,
            ok=False,
            problem=ranked[0][2],
            first_broken_position=positions[0] if positions else None,
            pin=None,
            warnings=warnings,
        )

    def _check_whole(self, header: Header, head: Head) -> None:
        if self._trailer is None:
            self._problem(
                _WHOLE,
                f"the bundle has no trailer: it was cut short after line {self._last_number}",
            )
        if self._entries != header.entries:
            self._problem(
                _WHOLE,
                f"the header announces {header.entries} entries, the bundle has {self._entries}",
            )
        if len(self._checkpoints) != header.checkpoints:
            self._problem(
                _WHOLE,
                f"the header announces {header.checkpoints} checkpoints, "
                f"the bundle has {len(self._checkpoints)}",
            )
        if head != header.head:
            self._problem(_WHOLE, f"the last entry ({head}) is not the signed head ({header.head})")

    def _check_seal(self, header: Header, key: Ed25519PublicKey) -> None:
        trailer = self._trailer
        if trailer is None:
            return
        if trailer.lines != self._lines or trailer.head != header.head:
            self._problem(_WHOLE, "the trailer's line count or head differs from the bundle's")
        digest = self._digest.digest()
        if trailer.digest != digest.hex():
            self._problem(
                _SEAL,
                "the bundle's bytes differ from the digest its trailer signs "
                "(a line was edited, added or removed)",
            )
        if not (0 <= trailer.lines < 2**63 and 0 <= trailer.head.position < 2**63):
            self._problem(_SEAL, "the trailer's counts are out of range")
            return
        closing = trailer_message(
            lines=trailer.lines,
            head_position=trailer.head.position,
            head_hash=_hex(trailer.head.hash),
            digest=_hex(trailer.digest),
        )
        if not _signed(key, trailer.signature, closing):
            self._problem(_SEAL, "the trailer's signature does not verify")


def _header(raw: bytes) -> Header | None:
    try:
        line = decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    return line if isinstance(line, Header) else None


def _header_bytes(header: Header) -> bytes:
    if not all(0 <= n < 2**63 for n in (header.entries, header.checkpoints, header.head.position)):
        return b""  # cannot be framed, so cannot have been signed
    return header_message(
        bundle_format=header.format,
        scope=header.scope,
        entries=header.entries,
        checkpoints=header.checkpoints,
        head_position=header.head.position,
        head_hash=_hex(header.head.hash),
        exported_at=header.exported_at,
    )


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def _signed(key: Ed25519PublicKey, signature_hex: str, message: bytes) -> bool:
    try:
        key.verify(_hex(signature_hex), message)
    except InvalidSignature:
        return False
    return True


def _refused(problem: str) -> VerifyReport:
    return VerifyReport(
        ok=False,
        checked=0,
        head=GENESIS_HEAD,
        first_broken_position=None,
        problem=problem,
        checkpoints_checked=0,
        latest_checkpoint=None,
    )
