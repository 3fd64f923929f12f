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
from tests.faults import scenarios
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


SCENARIOS: list[tuple[str, Callable[[Stack], Awaitable[Any]], Describe]] = [
    ("kill -9 of the API x2 under 8 writers", scenarios.kill9_api_under_load, _kill9),
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
        options.json.write_text(json.dumps([asdict(r) for r in rows], indent=2, default=str))


if __name__ == "__main__":
    main()
