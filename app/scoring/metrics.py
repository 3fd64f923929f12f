"""The scorer's Prometheus counters (created on first use, in the default registry that
`GET /metrics` exposes)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Gauge


@dataclass(frozen=True)
class ScorerMetrics:
    """Counters shared by every scorer and prediction log of the process."""

    logged_rows: Counter
    dropped_rows: Counter
    libraries_refused: Counter
    shadow_skipped: Counter
    pending_rows: Gauge


@functools.cache
def scorer_metrics() -> ScorerMetrics:
    """The process's counters (one registration per process)."""
    return ScorerMetrics(
        logged_rows=Counter(
            "model_ledger_prediction_log_rows",
            "Prediction rows written to the prediction log",
            ["arm"],
        ),
        dropped_rows=Counter(
            "model_ledger_prediction_log_dropped_rows",
            "Prediction rows not logged: the log's queue was full (overload) or a write failed",
            ["reason"],
        ),
        libraries_refused=Counter(
            "model_ledger_scorer_libraries_refused",
            "Libraries the scorer would not serve (digest mismatch, missing file, not approved)",
        ),
        shadow_skipped=Counter(
            "model_ledger_scorer_shadow_skipped",
            "Requests the shadow version could not score (its inputs differ from the champion's)",
        ),
        pending_rows=Gauge(
            "model_ledger_prediction_log_pending_rows",
            "Prediction rows in memory not written yet (queued, or held: the database is away)",
        ),
    )
