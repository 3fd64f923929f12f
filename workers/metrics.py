"""A worker's Prometheus series: each attempt's duration and outcome by job kind.

A worker is a process of its own: it serves its registry on `worker_metrics_port` (its own
`/metrics`, see `serve_metrics`); in the embedded stack the worker runs inside the API
process and these series appear on the API's `GET /metrics`. Cluster-wide views of the
jobs (how many wait, run, failed), which any process can read from the log, are the API's
(`app.services.ops_metrics`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Histogram, start_http_server

_log = logging.getLogger("model_ledger.jobs")

# a drift check takes seconds, compiling a large model minutes
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


@dataclass(frozen=True)
class JobMetrics:
    """Attempts by kind and outcome (succeeded, failed, retried)."""

    seconds: Histogram
    attempts: Counter


@functools.cache
def job_metrics() -> JobMetrics:
    """The process's series (one registration per process)."""
    return JobMetrics(
        seconds=Histogram(
            "model_ledger_job_duration_seconds",
            "Time one attempt of a job ran in this worker, by kind and outcome",
            ["kind", "outcome"],
            buckets=JOB_BUCKETS,
        ),
        attempts=Counter(
            "model_ledger_job_attempts",
            "Job attempts run in this worker by kind and outcome: succeeded, failed (for "
            "good), retried (it failed and runs again)",
            ["kind", "outcome"],
        ),
    )


def observe_attempt(kind: str, outcome: str, seconds: float) -> None:
    """Count one attempt (kinds are a fixed few: the labels stay bounded)."""
    metrics = job_metrics()
    metrics.seconds.labels(kind, outcome).observe(seconds)
    metrics.attempts.labels(kind, outcome).inc()


def serve_metrics(host: str, port: int) -> tuple[WSGIServer, Thread] | None:
    """The worker's own `/metrics` on `port` (0: none), in a daemon thread."""
    if port <= 0:
        return None
    job_metrics()  # the series exist (at zero) before the first job
    served = start_http_server(port, addr=host)
    _log.info("worker metrics on http://%s:%d/metrics", host, port)
    return served
