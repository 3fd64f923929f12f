"""The scorer's Prometheus series (created on first use, in the default registry that
`GET /metrics` exposes).

Per-request series are resolved to their label children once per (model, version,
environment, arm), when a route is built (`score_meter`), so a request only observes: no
label lookup on the hot path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

# in-process scoring takes microseconds (one row) to tens of milliseconds (10,000 rows)
SCORE_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
SCORE_LABELS = ("model", "version", "environment", "arm")


@dataclass(frozen=True)
class ScorerMetrics:
    """Series shared by every scorer and prediction log of the process."""

    logged_rows: Counter
    dropped_rows: Counter
    libraries_refused: Counter
    shadow_skipped: Counter
    pending_rows: Gauge
    score_seconds: Histogram
    scored_rows: Counter
    score_errors: Counter


@functools.cache
def scorer_metrics() -> ScorerMetrics:
    """The process's series (one registration per process)."""
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
        score_seconds=Histogram(
            "model_ledger_score_duration_seconds",
            "Time to score one request in process (validation, the library, queueing the log)",
            SCORE_LABELS,
            buckets=SCORE_BUCKETS,
        ),
        scored_rows=Counter(
            "model_ledger_scored_rows",
            "Rows scored (the shadow arm's are scored off the request path, by the log)",
            SCORE_LABELS,
        ),
        score_errors=Counter(
            "model_ledger_score_errors",
            "Score requests refused: invalid_input, not_deployed (model and environment are "
            "then empty: names from requests would be unbounded), unavailable, error",
            [*SCORE_LABELS, "reason"],
        ),
    )


@dataclass(frozen=True, slots=True)
class ScoreMeter:
    """The series of one (model, version, environment, arm), labels already resolved."""

    seconds: Histogram
    rows: Counter
    invalid: Counter
    failed: Counter


@functools.cache
def score_meter(model: str, version: int, environment: str, arm: str) -> ScoreMeter:
    """The resolved series of an arm of a route (cached: a route rebuild reuses them)."""
    metrics = scorer_metrics()
    labels = (model, str(version), environment, arm)
    return ScoreMeter(
        seconds=metrics.score_seconds.labels(*labels),
        rows=metrics.scored_rows.labels(*labels),
        invalid=metrics.score_errors.labels(*labels, "invalid_input"),
        failed=metrics.score_errors.labels(*labels, "error"),
    )


def count_refusal(model: str, environment: str, reason: str) -> None:
    """A request no version was picked for (nothing deployed, or no verified library)."""
    scorer_metrics().score_errors.labels(model, "", environment, "", reason).inc()
