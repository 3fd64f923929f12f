"""Export bundles of a real server's log, cut, edited and reordered, then verified by two
processes: `model-ledger verify FILE --public-key HEX` and the independent stdlib-only
verifier written from docs/audit-format.md. Both must refuse every damaged bundle and
accept the whole ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.store.checkpoints import public_raw
from tests.faults.commands import bounded, independent_verify, model_ledger
from tests.faults.integrity import written_and_signed
from tests.faults.stack import Stack

Damage = Callable[[list[bytes]], list[bytes]]


def _kinds(lines: list[bytes]) -> list[str]:
    return [json.loads(line)["kind"] for line in lines]


def _entries(lines: list[bytes], *kinds: str) -> list[int]:
    """Indexes of the lines of these kinds (all entries: events and links)."""
    wanted = kinds or ("event", "link")
    return [i for i, kind in enumerate(_kinds(lines)) if kind in wanted]


def head_n(count: int) -> Damage:
    """`head -n COUNT`: a download or a copy cut short."""
    return lambda lines: lines[:count]


def edit_one_byte(lines: list[bytes]) -> list[bytes]:
    """One letter of an in-scope event's data changed (the line is still JSON)."""
    events = _entries(lines, "event")
    at = events[len(events) // 2]
    line = lines[at]
    start = line.index(b'"data":"') + len(b'"data":"')
    letter = next(i for i in range(start, len(line)) if line[i : i + 1].isalpha())
    changed = (
        line[:letter] + (b"x" if line[letter : letter + 1] != b"x" else b"y") + line[letter + 1 :]
    )
    return [*lines[:at], changed, *lines[at + 1 :]]


def drop_entry(lines: list[bytes]) -> list[bytes]:
    entries = _entries(lines)
    at = entries[len(entries) // 2]
    return [*lines[:at], *lines[at + 1 :]]


def swap_entries(lines: list[bytes]) -> list[bytes]:
    entries = _entries(lines)
    at = entries[len(entries) // 2]
    swapped = list(lines)
    swapped[at], swapped[at + 1] = lines[at + 1], lines[at]
    return swapped


def duplicate_entry(lines: list[bytes]) -> list[bytes]:
    entries = _entries(lines)
    at = entries[len(entries) // 2]
    return [*lines[: at + 1], lines[at], *lines[at + 1 :]]


def drop_trailer(lines: list[bytes]) -> list[bytes]:
    assert _kinds(lines)[-1] == "trailer"
    return lines[:-1]


def damages(count: int) -> dict[str, Damage]:
    """Every way a bundle of `count` lines is damaged here."""
    return {
        "head -n 1": head_n(1),
        "head -n 2": head_n(2),
        f"head -n {count // 2}": head_n(count // 2),
        f"head -n {count - 2}": head_n(count - 2),
        "one byte edited": edit_one_byte,
        "a line dropped": drop_entry,
        "lines swapped": swap_entries,
        "a line repeated": duplicate_entry,
        "trailer removed": drop_trailer,
    }


@dataclass(frozen=True)
class BundleCheck:
    """One bundle file verified by both verifiers (accepted or not)."""

    bundle: str
    variant: str
    good: bool
    ours: bool
    theirs: bool


@dataclass(frozen=True)
class BundleOutcome:
    """Damaged bundles tried and refused by each verifier; whole bundles accepted."""

    lines: dict[str, int]
    checks: tuple[BundleCheck, ...]

    @property
    def tried(self) -> int:
        return sum(not c.good for c in self.checks)

    @property
    def ours_detected(self) -> int:
        return sum(not c.good and not c.ours for c in self.checks)

    @property
    def theirs_detected(self) -> int:
        return sum(not c.good and not c.theirs for c in self.checks)

    @property
    def good(self) -> int:
        return sum(c.good for c in self.checks)

    @property
    def ours_accepted(self) -> int:
        return sum(c.good and c.ours for c in self.checks)

    @property
    def theirs_accepted(self) -> int:
        return sum(c.good and c.theirs for c in self.checks)


def _joined(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


async def _ours(path: Path, key: str) -> bool:
    """`model-ledger verify FILE --public-key HEX` accepted it (it failed on purpose else)."""
    done = await model_ledger("verify", str(path), "--public-key", key, env={})
    assert done.status in (0, 1), str(done)
    assert json.loads(done.stdout)["ok"] == (done.status == 0), str(done)
    return done.status == 0


async def _theirs(path: Path, key: str) -> bool:
    done = await independent_verify(path, key)
    # 1 with a traceback would be a crash, not a verdict
    assert (done.status, done.stdout.split(":")[0].strip()) in ((0, "ok"), (1, "FAILED")), str(done)
    return done.status == 0


async def _check(bundle: str, variant: str, path: Path, key: str, good: bool) -> BundleCheck:
    ours, theirs = await _ours(path, key), await _theirs(path, key)
    return BundleCheck(bundle=bundle, variant=variant, good=good, ours=ours, theirs=theirs)


async def export(stack: Stack, out: Path, *scope: str) -> list[bytes]:
    """`model-ledger export --out FILE [--model NAME]`; the file's lines."""
    done = await model_ledger("export", "--out", str(out), *scope, env=stack.env())
    assert done.status == 0, str(done)
    data = await asyncio.to_thread(out.read_bytes)
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def server_public_key(stack: Stack) -> str:
    """The server's public key as an auditor is given it, apart from any bundle."""
    key = Ed25519PrivateKey.from_private_bytes((stack.home / "signing.key").read_bytes())
    return public_raw(key.public_key()).hex()


async def damaged_bundles(stack: Stack, *, written: bool = False) -> BundleOutcome:
    """Export the whole log and one model's part of it; damage each in every way.

    `written`: `written_and_signed` already ran on this stack (else it runs here)."""
    if not written:
        await written_and_signed(stack)
    folder = stack.folder / "bundles"
    folder.mkdir()
    key = server_public_key(stack)
    stranger = public_raw(Ed25519PrivateKey.generate().public_key()).hex()
    bundles = {
        "whole log": await export(stack, folder / "whole.jsonl"),
        "one model": await export(stack, folder / "model.jsonl", "--model", "story-0"),
    }
    checks = []
    for bundle, lines in bundles.items():
        name = bundle.replace(" ", "-")
        whole = folder / f"{name}.jsonl"
        whole.write_bytes(_joined(lines))
        checks.append(_check(bundle, "as exported", whole, key, good=True))
        checks.append(_check(bundle, "another key pinned", whole, stranger, good=False))
        for n, (variant, damage) in enumerate(damages(len(lines)).items()):
            path = folder / f"{name}-{n}.jsonl"
            path.write_bytes(_joined(damage(lines)))
            checks.append(_check(bundle, variant, path, key, good=False))
        cut = folder / f"{name}-cut.jsonl"
        cut.write_bytes(_joined(lines)[:-20])
        checks.append(_check(bundle, "cut inside the trailer", cut, key, good=False))
    return BundleOutcome(
        lines={bundle: len(lines) for bundle, lines in bundles.items()},
        checks=tuple(await bounded(checks)),
    )
