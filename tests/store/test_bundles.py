"""Export bundles fail verification when cut short, edited, reordered or stripped of their
trailer, by our verifier and by an independent one written from docs/audit-format.md."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.resources import Resources
from app.services.audit import Head
from app.services.export import export_log, verify_file
from app.store.checkpoints import Checkpointer, public_raw
from domain.events import EventMeta, TokenRevoked
from tests.store import independent_verifier
from tests.store.test_chain_payloads import append_raw, nested

META = EventMeta(actor="tester", role="admin")
Edit = Callable[[list[bytes]], list[bytes]]


async def fill(resources: Resources, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        await resources.store.append(
            ["model-a", "model-b", "tokens"][n % 3],
            # unicode and quotes, so the framing of non-ASCII text is exercised too
            [TokenRevoked(token_id=f"t{n}", reason=f'reason-{n} é ✓ "q"')],
            meta=META,
            expected_version=None,
        )


@pytest.fixture
async def logged(resources: Resources) -> Resources:
    """12 events over three streams, three chained checkpoints (at 4, 8 and 12)."""
    for start in (0, 4, 8):
        await fill(resources, 4, start)
        await resources.checkpointer.sign_head()
    return resources


async def bundle(
    resources: Resources, *, key: Ed25519PrivateKey | None = None, **scope: object
) -> bytes:
    out = io.BytesIO()
    await export_log(resources.store, out, key or resources.signing_key, **scope)  # type: ignore[arg-type]
    return out.getvalue()


def ours(path: Path, key: str | None, expect_head: Head | None = None) -> bool:
    return verify_file(path, key, expect_head=expect_head).ok


def theirs(data: bytes, key: str | None) -> bool:
    try:
        independent_verifier.verify_bundle(data, key)
    except independent_verifier.Invalid:
        return False
    return True


def both(tmp_path: Path, data: bytes, key: str | None) -> tuple[bool, bool]:
    path = tmp_path / f"bundle-{len(list(tmp_path.iterdir()))}.jsonl"
    path.write_bytes(data)
    return ours(path, key), theirs(data, key)


def public_hex(resources: Resources) -> str:
    return public_raw(resources.signing_key.public_key()).hex()


def lines_of(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def joined(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def kind_at(lines: list[bytes], kind: str, nth: int = 0) -> int:
    return [i for i, line in enumerate(lines) if json.loads(line)["kind"] == kind][nth]


def flip_hex(line: bytes, field: str) -> bytes:
    """One hex digit of a field changed: still valid JSON, still hex."""
    start = line.index(f'"{field}":"'.encode()) + len(field) + 4
    digit = line[start : start + 1]
    return line[:start] + (b"1" if digit == b"0" else b"0") + line[start + 1 :]


def edit_data_byte(lines: list[bytes]) -> list[bytes]:
    at = kind_at(lines, "event", 2)
    return [*lines[:at], lines[at].replace(b"reason-", b"reason+", 1), *lines[at + 1 :]]


def edit_field(kind: str, field: str, nth: int = 0) -> Edit:
    def edit(lines: list[bytes]) -> list[bytes]:
        at = kind_at(lines, kind, nth)
        return [*lines[:at], flip_hex(lines[at], field), *lines[at + 1 :]]

    return edit


def swap_entries(lines: list[bytes]) -> list[bytes]:
    first = kind_at(lines, "event", 1)
    second = first + 1
    swapped = list(lines)
    swapped[first], swapped[second] = lines[second], lines[first]
    return swapped


def drop(kind: str, nth: int = 0) -> Edit:
    def edit(lines: list[bytes]) -> list[bytes]:
        at = kind_at(lines, kind, nth)
        return [*lines[:at], *lines[at + 1 :]]

    return edit


def without_trailer(lines: list[bytes]) -> list[bytes]:
    return lines[:-1]


def with_line_after_trailer(lines: list[bytes]) -> list[bytes]:
    return [*lines, lines[-2]]


DAMAGE: dict[str, Edit] = {
    "one byte of an event's data": edit_data_byte,
    "an event's hash": edit_field("event", "hash", 3),
    "an event's prev_hash": edit_field("event", "prev_hash", 3),
    "a checkpoint's signature": edit_field("checkpoint", "signature", 1),
    "a checkpoint's head hash": edit_field("checkpoint", "head_hash", 1),
    "the header's signature": edit_field("header", "signature"),
    "the trailer's signature": edit_field("trailer", "signature"),
    "the trailer's digest": edit_field("trailer", "digest"),
    "two entries swapped": swap_entries,
    "a middle entry dropped": drop("event", 1),
    "the last entry dropped": lambda lines: [*lines[:-2], lines[-1]],
    "a checkpoint dropped": drop("checkpoint", 1),
    "no trailer": without_trailer,
    "a line after the trailer": with_line_after_trailer,
}
LINK_DAMAGE: dict[str, Edit] = {
    "a link's hash": edit_field("link", "hash", 2),
    "a link's prev_hash": edit_field("link", "prev_hash", 2),
    "a link dropped": drop("link", 2),
}


@pytest.mark.parametrize("scope", ["all", "model:model-a"])
async def test_both_verifiers_accept_a_good_bundle_and_reject_every_damaged_one(
    logged: Resources, tmp_path: Path, scope: str
) -> None:
    in_scope = None if scope == "all" else "model-a".__eq__
    data = await bundle(logged, in_scope=in_scope, scope=scope)
    key = public_hex(logged)
    assert both(tmp_path, data, key) == (True, True)
    assert both(tmp_path, data, None) == (True, True)
    lines = lines_of(data)
    damages = dict(DAMAGE)
    if scope != "all":
        assert b'"kind":"link"' in data and b"model-b" not in data
        damages.update(LINK_DAMAGE)
    for name, damage in damages.items():
        damaged = joined(damage(lines))
        assert damaged != data, name
        assert both(tmp_path, damaged, key) == (False, False), name


async def test_a_bundle_cut_after_any_line_fails_both_verifiers(
    logged: Resources, tmp_path: Path
) -> None:
    data = await bundle(logged)
    key = public_hex(logged)
    lines = lines_of(data)
    # `head -n K` for every K short of the whole file
    for keep in range(len(lines)):
        cut = joined(lines[:keep])
        assert both(tmp_path, cut, key) == (False, False), keep
        assert both(tmp_path, cut, None) == (False, False), keep
    # cut inside a line (no final newline)
    assert both(tmp_path, data[: len(data) // 2], key) == (False, False)


async def test_the_reported_truncation_no_longer_verifies(
    logged: Resources, tmp_path: Path
) -> None:
    """head -n 6 of a bundle once answered ok with no checkpoint checked."""
    data = await bundle(logged)
    cut = tmp_path / "t.jsonl"
    cut.write_bytes(joined(lines_of(data)[:6]))
    report = verify_file(cut, public_hex(logged))
    assert not report.ok
    assert "no trailer" in (report.problem or "")


async def test_the_header_states_the_signed_head_up_front(
    logged: Resources, tmp_path: Path
) -> None:
    data = await bundle(logged)
    lines = [json.loads(line) for line in lines_of(data)]
    header, trailer = lines[0], lines[-1]
    head, head_hash = await logged.store.head()
    assert header["head"] == {"position": head, "hash": head_hash.hex()} == trailer["head"]
    assert header["entries"] == 12 and header["checkpoints"] == 3
    assert trailer["lines"] == len(lines) - 1
    kinds = [line["kind"] for line in lines]
    assert kinds == ["header"] + ["checkpoint"] * 3 + ["event"] * 12 + ["trailer"]
    assert [line["sequence"] for line in lines[1:4]] == [1, 2, 3]


async def test_a_bundle_ends_at_the_newest_checkpoint_not_at_later_events(
    logged: Resources, tmp_path: Path
) -> None:
    await fill(logged, 2, 100)  # appended after the last checkpoint
    data = await bundle(logged)
    header = json.loads(lines_of(data)[0])
    assert header["head"]["position"] == 12
    assert both(tmp_path, data, public_hex(logged)) == (True, True)


async def test_a_bundle_wholly_signed_by_another_key_verifies_only_unpinned(
    resources: Resources, tmp_path: Path
) -> None:
    """Why `verify FILE` without --public-key warns: it trusts whatever key the file carries."""
    forger = Ed25519PrivateKey.generate()
    await fill(resources, 5)
    await Checkpointer(resources.store, forger).sign_head()
    forged = await bundle(resources, key=forger)
    assert both(tmp_path, forged, None) == (True, True)
    assert both(tmp_path, forged, public_hex(resources)) == (False, False)
    path = tmp_path / "forged.jsonl"
    path.write_bytes(forged)
    assert any("--public-key" in warning for warning in verify_file(path).warnings)


async def test_a_header_and_trailer_resigned_by_another_key_fail_on_the_checkpoints(
    logged: Resources, tmp_path: Path
) -> None:
    forged = await bundle(logged, key=Ed25519PrivateKey.generate())
    assert both(tmp_path, forged, None) == (False, False)


def test_the_independent_ed25519_follows_rfc_8032() -> None:
    # RFC 8032, section 7.1, TEST 1 and TEST 2
    for public, message, signature in (
        (
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
            "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
    ):
        key, text, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
        assert independent_verifier.ed25519_verify(key, text, sig)
        assert not independent_verifier.ed25519_verify(key, text + b"x", sig)
        assert not independent_verifier.ed25519_verify(key, text, sig[:-1] + bytes([sig[-1] ^ 1]))
    # and agrees with the library the server signs with
    signer = Ed25519PrivateKey.generate()
    public_key = public_raw(signer.public_key())
    for size in (0, 1, 100, 1000):
        message = bytes(range(256)) * 4
        signed = signer.sign(message[:size])
        assert independent_verifier.ed25519_verify(public_key, message[:size], signed)
        assert not independent_verifier.ed25519_verify(public_key, message[: size + 1], signed)
        other = public_raw(Ed25519PrivateKey.generate().public_key())
        assert not independent_verifier.ed25519_verify(other, message[:size], signed)


async def test_an_unpinned_verification_warns_and_a_pinned_one_does_not(
    logged: Resources, tmp_path: Path
) -> None:
    path = tmp_path / "b.jsonl"
    path.write_bytes(await bundle(logged))
    unpinned = verify_file(path)
    assert unpinned.ok and any("--public-key" in w for w in unpinned.warnings)
    pinned = verify_file(path, public_hex(logged))
    assert pinned.ok and pinned.warnings == []


async def test_an_expected_head_is_checked_against_the_bundle(
    logged: Resources, tmp_path: Path
) -> None:
    path = tmp_path / "b.jsonl"
    path.write_bytes(await bundle(logged))
    key = public_hex(logged)
    rows = await logged.store.read_stored(0, 100)
    at_8 = Head(8, rows[7].hash.hex())
    assert ours(path, key, at_8)
    assert not ours(path, key, Head(8, rows[6].hash.hex()))
    report = verify_file(path, key, expect_head=Head(13, rows[7].hash.hex()))
    assert not report.ok and "shorter than the expected head" in (report.problem or "")


async def test_an_empty_log_exports_a_bundle_both_verifiers_accept(
    resources: Resources, tmp_path: Path
) -> None:
    data = await bundle(resources)
    assert both(tmp_path, data, public_hex(resources)) == (True, True)
    assert both(tmp_path, joined(lines_of(data)[:-1]), public_hex(resources)) == (False, False)


async def test_an_older_format_bundle_is_refused_with_the_reason(tmp_path: Path) -> None:
    old = tmp_path / "old.jsonl"
    old.write_text(
        '{"kind":"header","format":"model-ledger-audit/1","exported_at":"2026-01-01T00:00:00Z",'
        '"public_key":"' + "00" * 32 + '","key_id":"x","scope":"all"}\n'
    )
    report = verify_file(old)
    assert not report.ok and "export again" in (report.problem or "")


async def test_awkward_payloads_verify_in_both(resources: Resources, tmp_path: Path) -> None:
    for value in [1e-300, -0.0, 2**100, 'naïve ☃ \u0000 \U0001f600 "q" \\ \n', nested(40)]:
        await append_raw(resources.store, value)
    await resources.checkpointer.sign_head()
    data = await bundle(resources)
    assert both(tmp_path, data, public_hex(resources)) == (True, True)
    damaged = joined(edit_field("event", "hash", 4)(lines_of(data)))
    assert both(tmp_path, damaged, None) == (False, False)
