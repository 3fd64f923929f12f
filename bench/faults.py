"""Fault bench: what the log and the job runner keep through kill -9, outages, tampering and
hostile input, in one table.

It runs the fault suite's scenarios (tests/faults: real `model-ledger` processes on a
PostgreSQL and a Redis of their own, which the scenarios kill, stop and restart) and prints
what each measured: writes acknowledged and lost, jobs requested, terminal and duplicated, the
time to recover after each outage, the revocation window, and tampering cases detected of
those tried. The fault tests assert the same figures; this prints them.

    uv run python -m bench.faults [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from bench import common
from tests.faults import bundles, hostile, integrity, jobs, outages, revocation, scenarios
from tests.faults.stack import Stack, private_stack


@dataclass(frozen=True)
class Row:
    """One line of the table: a fault, what was measured, and whether the promise held."""

    fault: str
    measured: str
    held: bool
    seconds: float
    raw: dict[str, Any]


Describe = Callable[[Any], tuple[str, bool]]


def _kill9(outcome: scenarios.LoadOutcome) -> tuple[str, bool]:
    held = outcome.lost == 0 and outcome.gap_free and outcome.chain_ok
    held = held and 500 not in outcome.statuses
    text = (
        f"{outcome.acknowledged} writes acknowledged, {outcome.lost} lost; "
        f"gap-free {_yes(outcome.gap_free)}, chain ok {_yes(outcome.chain_ok)}; "
        f"500s: {outcome.statuses.get(500, 0)}"
    )
    return text, held


async def _tampering(stack: Stack) -> integrity.TamperOutcome:
    pin = await integrity.written_and_signed(stack)
    return await integrity.tampering_by_a_superuser(stack, pin)


def _tampered(outcome: integrity.TamperOutcome) -> tuple[str, bool]:
    held = outcome.detected == outcome.located == outcome.tried
    held = held and outcome.passed_honestly == outcome.must_pass
    text = (
        f"{outcome.detected} of {outcome.tried} detectable cases detected, {outcome.located} "
        f"at the right position ({outcome.cases} tamperings of a {outcome.events}-event log); "
        f"{outcome.passed_honestly} of {outcome.must_pass} undetectable or clean copies pass "
        "and say what they left unchecked"
    )
    return text, held


def _bundles(outcome: bundles.BundleOutcome) -> tuple[str, bool]:
    held = outcome.tried == outcome.ours_detected == outcome.theirs_detected
    held = held and outcome.good == outcome.ours_accepted == outcome.theirs_accepted
    text = (
        f"{outcome.tried} damaged bundles: ours refused {outcome.ours_detected}, the "
        f"independent verifier {outcome.theirs_detected}; {outcome.good} whole bundles "
        f"accepted by both: {_yes(outcome.good == outcome.ours_accepted)}"
    )
    return text, held


def _hostile(outcome: hostile.HostileOutcome) -> tuple[str, bool]:
    errors = sum(n for status, n in outcome.statuses.items() if status.startswith("5"))
    held = errors == 0 and outcome.appended == 0 and outcome.answers_after
    text = (
        f"{outcome.sent} hostile requests: {errors} 5xx, {outcome.appended} events appended, "
        f"slowest /health meanwhile {outcome.slowest_health_seconds * 1000:.0f} ms, memory "
        f"+{outcome.memory_growth_mb:.0f} MB"
    )
    return text, held


def _revocation(outcome: revocation.RevocationOutcome) -> tuple[str, bool]:
    text = (
        f"revoked token refused by a scorer process after p50 "
        f"{outcome.revoked_p50 * 1000:.0f} ms, max {outcome.revoked_max * 1000:.0f} ms "
        f"({outcome.trials} trials); a new token admitted within "
        f"{outcome.issued_max * 1000:.0f} ms"
    )
    return text, outcome.revoked_max < 1.0


def _jobs(outcome: jobs.JobsOutcome) -> tuple[str, bool]:
    held = outcome.terminal == outcome.accepted == outcome.requested
    held = held and outcome.duplicated == 0 and outcome.never_finished == 0
    text = (
        f"{outcome.requested} jobs requested, {outcome.terminal} terminal, "
        f"{outcome.duplicated} duplicated, {outcome.never_finished} never finished; "
        f"{outcome.interrupted} attempts cut by the kill, {outcome.rerun} rerun; all terminal "
        f"{outcome.seconds_to_terminal:.1f} s after the kill (arq's claim of the dead worker)"
    )
    return text, held


def _redis(outcome: outages.RedisOutageOutcome) -> tuple[str, bool]:
    held = outcome.lost == 0 and outcome.gap_free and outcome.chain_ok
    held = held and outcome.jobs_duplicated == 0 and outcome.jobs_never_finished == 0
    held = held and 500 not in outcome.statuses
    text = (
        f"{outcome.acknowledged} writes acknowledged ({outcome.acknowledged_while_down} while "
        f"Redis was down), {outcome.lost} lost; {outcome.jobs_requested} jobs "
        f"({outcome.jobs_requested_while_down} requested while down), "
        f"{outcome.jobs_terminal} terminal, {outcome.jobs_duplicated} duplicated; all "
        f"terminal {outcome.seconds_to_terminal:.1f} s after Redis answered"
    )
    return text, held


def _database(outcome: outages.DatabaseOutageOutcome) -> tuple[str, bool]:
    held = outcome.lost == 0 and outcome.errors == 0 and outcome.gap_free
    held = held and outcome.chain_ok and outcome.same_api_process
    text = (
        f"{outcome.refused} writes answered 503, {outcome.errors} 500; first write "
        f"{outcome.seconds_to_first_write:.2f} s and /ready 200 {outcome.seconds_to_ready:.2f} s "
        f"after the start command; {outcome.acknowledged} acknowledged, {outcome.lost} lost; "
        "same API process"
    )
    return text, held


async def _postgres_stopped(stack: Stack) -> outages.DatabaseOutageOutcome:
    return await outages.database_restarted_under_load(stack, "stop")


async def _postgres_killed(stack: Stack) -> outages.DatabaseOutageOutcome:
    return await outages.database_restarted_under_load(stack, "kill")


SCENARIOS: list[tuple[str, Callable[[Stack], Awaitable[Any]], Describe]] = [
    ("kill -9 of the API x2 under 8 writers", scenarios.kill9_api_under_load, _kill9),
    ("kill -9 of a worker, 9 compiles on one model", jobs.jobs_under_worker_kill9, _jobs),
    (
        "Redis kill -9, restarted empty, under load",
        outages.redis_restarted_empty_under_load,
        _redis,
    ),
    ("PostgreSQL stopped and restarted under load", _postgres_stopped, _database),
    ("PostgreSQL kill -9 (crash) and restart under load", _postgres_killed, _database),
    ("a superuser tampers with a signed log", _tampering, _tampered),
    ("export bundles truncated, edited, reordered", bundles.damaged_bundles, _bundles),
    ("hostile requests to a real server", hostile.hostile_bodies, _hostile),
    ("token revoked on the API, used on a scorer", revocation.revocation_window, _revocation),
]


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


async def run_all() -> list[Row]:
    """Every scenario on a stack of its own, in order."""
    rows = []
    for fault, scenario, describe in SCENARIOS:
        async with private_stack() as stack:
            began = time.monotonic()
            outcome = await scenario(stack)
            took = time.monotonic() - began
        measured, held = describe(outcome)
        raw = asdict(outcome) if is_dataclass(outcome) else {"outcome": repr(outcome)}
        rows.append(Row(fault, measured, held, round(took, 1), raw))
        print(f"  {fault}: {measured}", flush=True)
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| fault | measured | held | s |", "|---|---|---|---|"]
    lines += [f"| {r.fault} | {r.measured} | {_yes(r.held)} | {r.seconds:.0f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    options = parser.parse_args()
    rows = common.run(run_all())
    print()
    print(table(rows))
    held = sum(r.held for r in rows)
    print(f"\n{held} of {len(rows)} promises held")
    if options.json:
        plain = [_plain(asdict(r)) for r in rows]
        options.json.write_text(json.dumps(plain, indent=2, default=str))


def _plain(value: Any) -> Any:
    """JSON-ready: counters keyed by tuples get string keys."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


if __name__ == "__main__":
    main()
