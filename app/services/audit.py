"""Verifying the log: the hash chain, then the signed checkpoints against it, then what was
witnessed outside the log (the witness file, a head someone was shown).

The same audit runs over the database and over an exported file, so an auditor can check
an export on another machine with no server. What one verification could not check is
said in the report (`unchecked`), never left for the reader to guess.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.store.checkpoints import (
    Checkpoint,
    CheckpointLine,
    from_line,
    key_id,
    list_checkpoints,
    newest_checkpoint,
    public_raw,
)
from app.store.checkpoints import signature_valid as signed_by
from app.store.codec import StoredEvent
from app.store.events import EventStore
from app.store.witness import read_witness_lines
from domain.chain import ChainBreak, ChainVerifier, CheckpointChain

_READ_BATCH = 5_000
_HEAD = re.compile(r"([0-9]{1,19}):([0-9a-fA-F]{64})")

NO_WITNESS = (
    "no witness: the newest events deleted together with their newest checkpoints cannot be "
    "detected from the database alone (keep the witness file, set MODEL_LEDGER_WITNESS_URL, "
    "or pass --expect-head POSITION:HASH)"
)


class Link(msgspec.Struct, frozen=True, kw_only=True):
    """An event left out of a partial export: only its place in the chain."""

    position: int
    prev_hash: bytes
    hash: bytes


class Head(msgspec.Struct, frozen=True):
    """A position and the hash the log has there (hex); `POSITION:HASH` as text."""

    position: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Head:
        """`POSITION:HASH` (64 hex digits); ValueError otherwise."""
        match = _HEAD.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"expected POSITION:HASH (64 hex digits), got {text!r}")
        return cls(int(match.group(1)), match.group(2).lower())

    def __str__(self) -> str:
        return f"{self.position}:{self.hash}"


GENESIS_HEAD = Head(0, bytes(32).hex())


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a verification; `first_broken_position` names where it fails.

    `pin` is the verified head as `POSITION:HASH`: keep it, and a later `verify
    --expect-head` fails if the log no longer reaches it. `unchecked` says what this
    verification could not detect; `warnings` what it had to take on trust.
    """

    ok: bool
    checked: int
    head: Head
    first_broken_position: int | None
    problem: str | None
    checkpoints_checked: int
    latest_checkpoint: int | None
    checkpoint_sequence: int | None = None
    legacy_checkpoints: int = 0
    witness: str | None = None
    witnessed: int = 0
    expected_head: Head | None = None
    pin: str | None = None
    unchecked: list[str] = msgspec.field(default_factory=list)
    warnings: list[str] = msgspec.field(default_factory=list)


class Witnessed(msgspec.Struct, frozen=True, kw_only=True):
    """Checkpoints read from a witness, each with where it was read (`file:line`)."""

    source: str
    checkpoints: list[tuple[str, Checkpoint]]
    warnings: list[str]


_witness_decoder = msgspec.json.Decoder(CheckpointLine)

Problem = tuple[int | None, str]


def read_witness(path: Path) -> Witnessed:
    """The checkpoints of a witness file; lines that are not checkpoints are warnings."""
    lines, torn = read_witness_lines(path)
    checkpoints: list[tuple[str, Checkpoint]] = []
    warnings: list[str] = []
    for number, raw in lines:
        try:
            checkpoint = from_line(_witness_decoder.decode(raw))
        except (msgspec.DecodeError, ValueError):
            # a crash while appending leaves such a line; whoever can write the file can as
            # well delete lines, so this is no weaker than failing on it
            warnings.append(f"{path} line {number} is not a checkpoint (cut short?): ignored")
            continue
        if checkpoint.chained:
            checkpoints.append((f"{path}:{number}", checkpoint))
    if torn:
        warnings.append(f"{path} ends in a line cut short (a crash while appending?): ignored")
    return Witnessed(source=str(path), checkpoints=checkpoints, warnings=warnings)


class LogAudit:
    """Incremental verification: feed rows in position order, then `finish`."""

    def __init__(
        self,
        checkpoints: Sequence[Checkpoint],
        *,
        witnessed: Witnessed | None = None,
        expect_head: Head | None = None,
    ) -> None:
        self._chain = ChainVerifier()
        self._checkpoints = list(checkpoints)
        self._witnessed = witnessed
        self._expect_head = expect_head
        self._wanted = {c.position for c in self._checkpoints}
        if witnessed is not None:
            self._wanted.update(c.position for _, c in witnessed.checkpoints)
        if expect_head is not None:
            self._wanted.add(expect_head.position)
        self._hash_at: dict[int, bytes] = {}
        self._break: ChainBreak | None = None

    @property
    def broken(self) -> bool:
        return self._break is not None

    @property
    def head(self) -> Head:
        return Head(self._chain.position, self._chain.head_hash.hex())

    def hash_at(self, position: int) -> bytes | None:
        """The verified hash at a position recorded on the way (checkpoints, expected head)."""
        return self._hash_at.get(position)

    def feed(self, rows: Iterable[StoredEvent | Link]) -> None:
        """Check rows continuing the chain; stops at the first break."""
        if self._break is not None:
            return
        try:
            for row in rows:
                if isinstance(row, Link):
                    self._chain.check_link(row.position, row.prev_hash, row.hash)
                else:
                    self._chain.check(
                        position=row.position,
                        stream=row.stream,
                        version=row.version,
                        event_id=row.event_id,
                        event_type=row.type,
                        data=row.data,
                        meta=row.meta,
                        recorded_at=row.recorded_at,
                        prev_hash=row.prev_hash,
                        stored_hash=row.hash,
                    )
                if row.position in self._wanted:
                    self._hash_at[row.position] = row.hash
        except ChainBreak as error:
            self._break = error

    def finish(
        self, public_key: Ed25519PublicKey, *, unwitnessed: str = NO_WITNESS
    ) -> VerifyReport:
        """The report, once every row was fed: chain, checkpoints, witness, expected head.

        `unwitnessed` is what the report says it could not check when neither a witness
        nor an expected head was given."""
        found: Problem | None = None
        if self._break is not None:
            found = (self._break.position, self._break.reason)
        found = found or self._check_checkpoints(public_key)
        found = found or self._check_witnessed(public_key)
        found = found or self._check_expected_head()
        legacy = [c for c in self._checkpoints if not c.chained]
        chained = [c for c in self._checkpoints if c.chained]
        ok = found is None
        return VerifyReport(
            ok=ok,
            checked=self._chain.checked,
            head=self.head,
            first_broken_position=None if found is None else found[0],
            problem=None if found is None else found[1],
            checkpoints_checked=len(self._checkpoints),
            latest_checkpoint=max((c.position for c in self._checkpoints), default=None),
            checkpoint_sequence=chained[-1].sequence if chained else None,
            legacy_checkpoints=len(legacy),
            witness=None if self._witnessed is None else self._witnessed.source,
            witnessed=0 if self._witnessed is None else len(self._witnessed.checkpoints),
            expected_head=self._expect_head,
            pin=str(self.head) if ok else None,
            unchecked=self._unchecked(legacy, unwitnessed),
            warnings=[] if self._witnessed is None else list(self._witnessed.warnings),
        )

    def _unchecked(self, legacy: Sequence[Checkpoint], unwitnessed: str) -> list[str]:
        notes = []
        if self._witnessed is None and self._expect_head is None:
            notes.append(unwitnessed)
        if legacy:
            notes.append(
                f"{len(legacy)} legacy checkpoints (signed before checkpoints were chained) are "
                "checked one by one: one of them deleted would not be noticed"
            )
        return notes

    def _check_checkpoints(self, public_key: Ed25519PublicKey) -> Problem | None:
        expected_key = key_id(public_key)
        chain = CheckpointChain()
        for checkpoint in self._checkpoints:
            name = _name(checkpoint)
            if checkpoint.key_id != expected_key or not signed_by(checkpoint, public_key):
                return None, f"{name} has a bad signature"
            if checkpoint.chained and (gap := chain.check(checkpoint.link())) is not None:
                return None, gap
            found = self._check_covered(checkpoint, f"{name} signed at {_when(checkpoint)}")
            if found is not None:
                return found
        return None

    def _check_covered(self, checkpoint: Checkpoint, what: str) -> Problem | None:
        head = self._chain.position
        if checkpoint.position > head:
            return head + 1, (
                f"the log ends at position {head}, but {what} covers position "
                f"{checkpoint.position}: newest events were deleted"
            )
        if self._hash_at.get(checkpoint.position) != checkpoint.head_hash:
            return checkpoint.position, (
                f"hash at position {checkpoint.position} differs from {what}"
            )
        return None

    def _check_witnessed(self, public_key: Ed25519PublicKey) -> Problem | None:
        if self._witnessed is None:
            return None
        recorded = {c.sequence: c for c in self._checkpoints if c.chained}
        head = self._chain.position
        for where, witnessed in self._witnessed.checkpoints:
            name = f"{_name(witnessed)} (position {witnessed.position}) witnessed in {where}"
            stored = recorded.get(witnessed.sequence)
            # one the database holds identically was verified with the database's
            if stored != witnessed and not signed_by(witnessed, public_key):
                return None, f"{name} has a bad signature: the witness was tampered with"
            if witnessed.position > head:
                return head + 1, (
                    f"the log ends at position {head}, but {name} covers position "
                    f"{witnessed.position}: newest events were deleted together with their "
                    "checkpoints"
                )
            if self._hash_at.get(witnessed.position) != witnessed.head_hash:
                return witnessed.position, (
                    f"hash at position {witnessed.position} differs from {name}: the log "
                    "was rewritten from there on"
                )
            if stored is None:
                return None, f"{name} is missing from the database"
            if stored != witnessed:
                return None, f"{name} differs from the database's {_name(stored)}"
        return None

    def _check_expected_head(self) -> Problem | None:
        expected = self._expect_head
        if expected is None:
            return None
        head = self._chain.position
        if expected.position > head:
            return head + 1, (
                f"the log ends at position {head}, shorter than the expected head "
                f"{expected.position}: newest events were deleted"
            )
        found = self._hash_at.get(expected.position)
        if found is None or found.hex() != expected.hash:
            return expected.position, (
                f"hash at position {expected.position} differs from the expected head"
            )
        return None


def _name(checkpoint: Checkpoint) -> str:
    if checkpoint.sequence is None:
        return f"legacy checkpoint at position {checkpoint.position}"
    return f"checkpoint #{checkpoint.sequence}"


def _when(checkpoint: Checkpoint) -> str:
    return checkpoint.signed_at.isoformat()


def _witnessed(path: Path) -> Witnessed | None:
    return read_witness(path) if path.exists() else None


async def verify_log(
    store: EventStore,
    public_key: Ed25519PublicKey,
    *,
    witness_file: Path | None = None,
    expect_head: Head | None = None,
) -> VerifyReport:
    """Verify the whole log in the database, streaming it in batches; compare with the
    witness file (when it exists) and with an expected head (when given)."""
    # witness first, then checkpoints, then events: a checkpoint is committed before it is
    # witnessed, and events before they are checkpointed, so concurrent signing cannot
    # make a consistent log look short
    witnessed = None if witness_file is None else await asyncio.to_thread(_witnessed, witness_file)
    audit = LogAudit(await list_checkpoints(store), witnessed=witnessed, expect_head=expect_head)
    after = 0
    while not audit.broken:
        batch = await store.read_stored(after, _READ_BATCH)
        if not batch:
            break
        audit.feed(batch)
        after = batch[-1].position
    return audit.finish(public_key)


class LogStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What the log claims now, before any verification: its head, the newest signed
    checkpoint, where the witness file is, and the key that checks the signatures."""

    head: Head
    latest_checkpoint: Checkpoint | None
    witness_file: str | None
    witness_exists: bool
    public_key: str
    key_id: str


class AuditLog:
    """The log as stored, and its verification, for the auditor's routes."""

    def __init__(
        self, store: EventStore, public_key: Ed25519PublicKey, witness_file: Path | None
    ) -> None:
        self._store = store
        self._public_key = public_key
        self._witness_file = witness_file

    async def events(
        self, after: int, limit: int, *, event_type: str | None, stream: str | None
    ) -> list[StoredEvent]:
        """Events after a global position, in order, optionally of one type or stream."""
        types = [event_type] if event_type else None
        return await self._store.read_stored(after, limit, types=types, stream=stream)

    async def status(self) -> LogStatus:
        """The head, the newest chained checkpoint and the witness, as stored (unverified)."""
        position, head_hash = await self._store.head()
        witness = self._witness_file
        return LogStatus(
            head=Head(position, head_hash.hex()),
            latest_checkpoint=await newest_checkpoint(self._store),
            witness_file=None if witness is None else str(witness),
            witness_exists=witness is not None and await asyncio.to_thread(witness.exists),
            public_key=public_raw(self._public_key).hex(),
            key_id=key_id(self._public_key),
        )

    async def verify(self, expect_head: Head | None) -> VerifyReport:
        """The whole log verified (see `verify_log`)."""
        return await verify_log(
            self._store,
            self._public_key,
            witness_file=self._witness_file,
            expect_head=expect_head,
        )
