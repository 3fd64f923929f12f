"""What the audit bench's modules share: the sizes of a run, and its progress lines."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from bench import common


@dataclass(frozen=True)
class Sizes:
    events: int
    models: int
    history_models: int  # the sample of models whose history is read
    history_iterations: int  # per op, after warm-up, unless the budget runs out first
    history_block: int
    history_budget_seconds: float
    registry_rounds: int  # each: the current view, then one as-of view per position
    read_rounds: int  # catch-up read scans (the rebuild runs once)
    checked_models: int  # streams re-decided by the deciders


FULL = Sizes(1_000_000, 1_000, 64, 300, 10, 240.0, 3, 3, 20)
QUICK = Sizes(50_000, 100, 32, 120, 10, 60.0, 3, 3, 100)

_T0 = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr: seconds since the start, resident memory, the message."""
    memory = common.rss_mib()
    print(
        f"[{time.perf_counter() - _T0:7.1f}s rss {memory.get('rss', 0):>6} MiB] {message}",
        file=sys.stderr,
        flush=True,
    )
