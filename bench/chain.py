"""What chained, witnessed checkpoints and signed bundles cost, as ratios to peers measured in
the same run on the same log:

C1  verify of the database (chain, checkpoints, witness file) vs reading the same rows
    (`read_stored` pages of 5,000: the floor any verifier pays)
C2  signing one checkpoint (advisory lock, one state query, Ed25519, insert, fsync'd witness
    line) vs appending one event (p50 of each, interleaved)
C3  append throughput of 8 concurrent writers while a signer signs every second (60 times the
    default rate) and back to back (the contention bound), vs the same writers with no signer
C4  export of a bundle and its verification offline (ours, and the independent stdlib
    verifier of tests/store in a subprocess) vs C1's database verification

    uv run python -m bench.chain [--events N] [--seconds S] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.resources import create_pool
from app.services.audit import verify_log
from app.services.export import export_log, verify_file
from app.store.checkpoints import Checkpointer, public_raw
from app.store.events import EventStore
from app.store.witness import Witness
from bench.common import bench_server, fresh_database, machine_notes, median, run
from domain.events import EventMeta, TokenRevoked

META = EventMeta(actor="bench", role="admin")
_VERIFIER = Path(__file__).parent.parent / "tests" / "store" / "independent_verifier.py"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def append_one(store: EventStore, n: int) -> None:
    await store.append(
        f"s-{n % 50}",
        [TokenRevoked(token_id=f"t{n}", reason="r" * 40)],
        meta=META,
        expected_version=None,
    )


async def fill(store: EventStore, signer: Checkpointer, events: int) -> None:
    """`events` events in concurrent waves, a checkpoint after every 1,000."""
    for start in range(0, events, 1_000):
        await asyncio.gather(
            *(append_one(store, n) for n in range(start, min(events, start + 1_000)))
        )
        await signer.sign_head()


async def timed(action: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await action
    return time.perf_counter() - start, result


async def read_floor(store: EventStore) -> float:
    start, after = time.perf_counter(), 0
    while batch := await store.read_stored(after, 5_000):
        after = batch[-1].position
    return time.perf_counter() - start


async def c1_verify(store: EventStore, key: Ed25519PrivateKey, witness: Path) -> dict[str, Any]:
    verify, floor = [], []
    for _ in range(3):
        seconds, report = await timed(verify_log(store, key.public_key(), witness_file=witness))
        assert report.ok, report.problem
        verify.append(seconds)
        floor.append(await read_floor(store))
    return {
        "events": report.checked,
        "checkpoints": report.checkpoints_checked,
        "witnessed": report.witnessed,
        "verify_s": round(median(verify), 3),
        "read_floor_s": round(median(floor), 3),
        "ratio": round(median(verify) / median(floor), 2),
    }


async def c2_sign(store: EventStore, signer: Checkpointer) -> dict[str, Any]:
    sign, append = [], []
    for n in range(200):
        seconds, _ = await timed(append_one(store, 10_000_000 + n))
        append.append(seconds)
        seconds, signed = await timed(signer.sign_head())
        assert signed is not None
        sign.append(seconds)
    return {
        "sign_p50_ms": round(median(sign) * 1000, 2),
        "append_p50_ms": round(median(append) * 1000, 2),
        "ratio": round(median(sign) / median(append), 2),
    }


async def _writers(store: EventStore, seconds: float, writers: int) -> int:
    deadline = time.perf_counter() + seconds
    counts = [0] * writers

    async def writer(index: int) -> None:
        n = 20_000_000 + index * 1_000_000
        while time.perf_counter() < deadline:
            await append_one(store, n + counts[index])
            counts[index] += 1

    await asyncio.gather(*(writer(i) for i in range(writers)))
    return sum(counts)


async def _keep_signing(signer: Checkpointer, stop: asyncio.Event, pause: float) -> int:
    count = 0
    while not stop.is_set():
        count += await signer.sign_head() is not None
        await asyncio.sleep(pause)
    return count


async def c3_appends(store: EventStore, signer: Checkpointer, seconds: float) -> dict[str, Any]:
    """Writers alone, with a signer every second, with a signer back to back; interleaved."""
    pauses = {"alone": None, "every_second": 1.0, "back_to_back": 0.0}
    rates: dict[str, list[float]] = {mode: [] for mode in pauses}
    signed = dict.fromkeys(pauses, 0)
    modes = list(pauses)
    for round_ in range(3):
        # rotated, so the log's growth and the machine's drift fall on every mode alike
        for mode in modes[round_:] + modes[:round_]:
            pause = pauses[mode]
            stop = asyncio.Event()
            task = None
            if pause is not None:
                task = asyncio.create_task(_keep_signing(signer, stop, pause))
            rates[mode].append(await _writers(store, seconds, 8) / seconds)
            stop.set()
            if task is not None:
                signed[mode] += await task
    alone = median(rates["alone"])
    return {
        "appends_per_s_alone": round(alone),
        **{f"appends_per_s_signing_{m}": round(median(rates[m])) for m in pauses if m != "alone"},
        **{f"checkpoints_signed_{m}": count for m, count in signed.items() if count},
        "ratio_every_second": round(median(rates["every_second"]) / alone, 3),
        "ratio_back_to_back": round(median(rates["back_to_back"]) / alone, 3),
    }


async def c4_bundle(
    store: EventStore, key: Ed25519PrivateKey, folder: Path, verify_s: float
) -> dict[str, Any]:
    path = folder / "audit.jsonl"
    with path.open("wb") as out:
        export_s, lines = await timed(export_log(store, out, key))
    key_hex = public_raw(key.public_key()).hex()
    ours_s, report = await timed(asyncio.to_thread(verify_file, path, key_hex))
    assert report.ok, report.problem
    start = time.perf_counter()
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(_VERIFIER), str(path), "--public-key", key_hex],
        capture_output=True,
        check=False,
    )
    theirs_s = time.perf_counter() - start
    assert result.stdout.strip() == b"ok", result.stdout
    return {
        "lines": lines,
        "mib": round(path.stat().st_size / 2**20, 1),
        "export_s": round(export_s, 2),
        "verify_file_s": round(ours_s, 2),
        "independent_verifier_s": round(theirs_s, 2),
        "verify_file_vs_database": round(ours_s / verify_s, 2),
    }


async def main(events: int, seconds: float) -> dict[str, Any]:
    async with bench_server() as (server, source), fresh_database(server, "ml_chain") as url:
        pool = await create_pool(url, min_size=2, max_size=10)
        try:
            with tempfile.TemporaryDirectory(prefix="ml-chain-") as folder:
                witness = Path(folder) / "witness.jsonl"
                key = Ed25519PrivateKey.generate()
                store = EventStore(pool)
                signer = Checkpointer(store, key, Witness(witness))
                figures: dict[str, Any] = {"machine": await machine_notes(pool, source)}
                log(f"filling {events} events")
                await fill(store, signer, events)
                log("C1 verify")
                figures["C1"] = await c1_verify(store, key, witness)
                log("C4 bundle (of the same log as C1)")
                figures["C4"] = await c4_bundle(store, key, Path(folder), figures["C1"]["verify_s"])
                log("C2 sign")
                figures["C2"] = await c2_sign(store, signer)
                log("C3 appends while signing")
                figures["C3"] = await c3_appends(store, signer, seconds)
        finally:
            await pool.close()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run(main(args.events, args.seconds))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
