"""Gauges of the whole deployment, read from the views and the queue when `/metrics` is
scraped: jobs by kind and status, the arq queue's depth, each view's lag behind the log, and
the latest drift and live performance values of every serving version.

They describe the cluster, not the process: every API replica reports the same values, so
aggregate them with `max` (not `sum`) across instances. Workers' own series (attempt
durations and outcomes) are served by each worker (`workers.metrics`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import msgspec
from arq.connections import ArqRedis
from prometheus_client import Counter, Gauge

_log = logging.getLogger("model_ledger")

# a scrape waits at most this long for the gauges; past it, the previous values are served
_REFRESH_SECONDS = 2.0
_JOBS_SQL = "SELECT kind, status, count(*) AS jobs FROM jobs GROUP BY kind, status"
_LAG_SQL = (
    "SELECT c.name, (SELECT coalesce(max(position), 0) FROM events) - c.position AS lag "
    "FROM projection_checkpoints c"
)
# the latest value of each statistic alerted on, of versions deployed now
_DRIFT_SQL = """
SELECT DISTINCT ON (a.name, a.version, a.environment, a.feature, a.statistic)
       a.name, a.version, a.environment, coalesce(a.feature, '') AS feature, a.statistic,
       a.value
FROM drift_alerts a JOIN deployments d
  ON d.name = a.name AND d.environment = a.environment
 AND a.version IN (d.champion, d.challenger)
ORDER BY a.name, a.version, a.environment, a.feature, a.statistic, a.position DESC
"""
# the latest performance check of each version deployed now (the log's type index finds them)
_PERFORMANCE_SQL = """
SELECT DISTINCT ON (e.data->>'name', e.data->>'version', e.data->>'environment')
       e.data->>'name' AS name, e.data->>'version' AS version,
       e.data->>'environment' AS environment, e.data->>'metrics' AS metrics
FROM events e JOIN deployments d
  ON d.name = e.data->>'name' AND d.environment = e.data->>'environment'
 AND (e.data->>'version')::int IN (d.champion, d.challenger)
WHERE e.type = 'performance.checked'
ORDER BY e.data->>'name', e.data->>'version', e.data->>'environment', e.position DESC
"""
_metrics = msgspec.json.Decoder(dict[str, float])


@dataclass(frozen=True)
class ClusterGauges:
    """The series (registered once per process)."""

    jobs: Gauge
    queue_depth: Gauge
    projection_lag: Gauge
    drift_value: Gauge
    performance_value: Gauge
    refresh_failures: Counter


@functools.cache
def cluster_gauges() -> ClusterGauges:
    """The process's series."""
    return ClusterGauges(
        jobs=Gauge(
            "model_ledger_jobs",
            "Jobs in the jobs view by kind and status (requested and running: the backlog)",
            ["kind", "status"],
        ),
        queue_depth=Gauge(
            "model_ledger_job_queue_depth",
            "Jobs waiting in the arq queue in Redis (relayed, not yet taken by a worker)",
        ),
        projection_lag=Gauge(
            "model_ledger_projection_lag_events",
            "Events in the log a view has not applied yet",
            ["projection"],
        ),
        drift_value=Gauge(
            "model_ledger_drift_value",
            "The latest alerted value of a drift statistic of a deployed version",
            ["model", "version", "environment", "feature", "statistic"],
        ),
        performance_value=Gauge(
            "model_ledger_performance_value",
            "A metric of the latest performance check (scores against outcome labels) of a "
            "deployed version: auc, precision, recall, brier, ece, rmse, ...",
            ["model", "version", "environment", "metric"],
        ),
        refresh_failures=Counter(
            "model_ledger_metrics_refresh_failures",
            "Scrapes that served the previous cluster gauges: the database or Redis was "
            "away or slow",
        ),
    )


class ClusterMetrics:
    """Refreshes the cluster gauges from the views and the queue (see the module)."""

    def __init__(self, pool: asyncpg.Pool, redis: ArqRedis, queue_name: str) -> None:
        self._pool = pool
        self._redis = redis
        self._queue = queue_name
        self._gauges = cluster_gauges()

    async def refresh(self) -> bool:
        """Read and set every gauge; False (the old values stay) when a store failed."""
        try:
            async with asyncio.timeout(_REFRESH_SECONDS):
                jobs, lag, drift, performance = await self._read()
                depth = await self._redis.zcard(self._queue)
        except Exception as error:  # a scrape must answer, with what it had
            self._gauges.refresh_failures.inc()
            _log.warning("metrics: cluster gauges not refreshed: %s", error)
            return False
        self._set(jobs, lag, drift, int(depth))
        self._set_performance(performance)
        return True

    async def _read(self) -> tuple[list[asyncpg.Record], ...]:
        async with self._pool.acquire() as conn:
            return (
                await conn.fetch(_JOBS_SQL),
                await conn.fetch(_LAG_SQL),
                await conn.fetch(_DRIFT_SQL),
                await conn.fetch(_PERFORMANCE_SQL),
            )

    def _set_performance(self, checks: Sequence[asyncpg.Record]) -> None:
        gauge = self._gauges.performance_value
        gauge.clear()
        for row in checks:
            labels = (row["name"], row["version"], row["environment"])
            for metric, value in _metrics.decode(row["metrics"]).items():
                gauge.labels(*labels, metric).set(value)

    def _set(
        self,
        jobs: Sequence[asyncpg.Record],
        lag: Sequence[asyncpg.Record],
        drift: Sequence[asyncpg.Record],
        depth: int,
    ) -> None:
        # cleared and set with no await between: a scrape never sees half of it
        gauges = self._gauges
        gauges.jobs.clear()
        for row in jobs:
            gauges.jobs.labels(row["kind"], row["status"]).set(row["jobs"])
        gauges.projection_lag.clear()
        for row in lag:
            gauges.projection_lag.labels(row["name"]).set(max(0, row["lag"]))
        gauges.drift_value.clear()
        for row in drift:
            labels = (row["name"], str(row["version"]), row["environment"])
            gauges.drift_value.labels(*labels, row["feature"], row["statistic"]).set(row["value"])
        gauges.queue_depth.set(depth)
