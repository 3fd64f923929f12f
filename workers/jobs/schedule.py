"""Scheduled checks, requested like any other job (an event, relayed to arq): a drift job
for every serving version with enough new sampled inputs in the prediction log, and a
performance job for every version with enough outcome labels recorded since its last one."""

from __future__ import annotations

import logging
import uuid

import asyncpg

from app.resources import Resources
from domain import events as ev
from domain.commands import RequestJob
from domain.errors import DomainError
from domain.events import JobKind

_log = logging.getLogger("model_ledger.jobs")

SCHEDULER = ev.EventMeta(actor="system:drift-schedule", role="admin")
PERFORMANCE_SCHEDULER = ev.EventMeta(actor="system:performance-schedule", role="admin")
QUALITY_SCHEDULER = ev.EventMeta(actor="system:data-quality-schedule", role="admin")

# versions with at least $1 sampled inputs logged since their last job of kind $2
_DUE = """
SELECT p.name, p.environment, p.version, count(*) AS rows
FROM predictions p
WHERE p.features IS NOT NULL AND p.created_at > coalesce((
    SELECT max(j.requested_at) FROM jobs j
    WHERE j.kind = $2 AND j.name = p.name AND j.version = p.version
      AND j.params->>'environment' = p.environment), '-infinity')
GROUP BY p.name, p.environment, p.version
HAVING count(*) >= $1
ORDER BY p.name, p.environment, p.version
"""


# versions with at least $1 outcome labels recorded since their last performance job
_LABELLED = """
SELECT o.name, o.environment, o.version, count(*) AS rows
FROM outcomes o
WHERE o.recorded_at > coalesce((
    SELECT max(j.requested_at) FROM jobs j
    WHERE j.kind = 'performance' AND j.name = o.name AND j.version = o.version
      AND j.params->>'environment' = o.environment), '-infinity')
GROUP BY o.name, o.environment, o.version
HAVING count(*) >= $1
ORDER BY o.name, o.environment, o.version
"""


async def schedule_drift_checks(resources: Resources) -> int:
    """Request the drift checks that are due; returns how many were requested."""
    await resources.projector.catch_up()  # the jobs view says when each was last checked
    due = await resources.pool.fetch(_DUE, resources.settings.drift_min_new_rows, "drift")
    return await _request(resources, due, "drift", SCHEDULER)


async def schedule_data_quality_checks(resources: Resources) -> int:
    """Request the data-quality checks that are due (at the drift checks' cadence and row
    threshold); returns how many were requested."""
    await resources.projector.catch_up()
    due = await resources.pool.fetch(_DUE, resources.settings.drift_min_new_rows, "data_quality")
    return await _request(resources, due, "data_quality", QUALITY_SCHEDULER)


async def schedule_performance_checks(resources: Resources) -> int:
    """Request the performance checks that are due; returns how many were requested."""
    await resources.projector.catch_up()
    due = await resources.pool.fetch(_LABELLED, resources.settings.performance_min_new_labels)
    return await _request(resources, due, "performance", PERFORMANCE_SCHEDULER)


async def _request(
    resources: Resources, due: list[asyncpg.Record], kind: JobKind, meta: ev.EventMeta
) -> int:
    requested = 0
    for row in due:
        command = RequestJob(
            name=row["name"],
            job_id=str(uuid.uuid4()),
            kind=kind,
            version=row["version"],
            params={"environment": row["environment"]},
        )
        try:
            await resources.jobs.request(command, meta, None)
        except DomainError as error:  # e.g. the version was retired since
            _log.info("%s check of %s v%s skipped: %s", kind, row["name"], row["version"], error)
            continue
        requested += 1
    return requested


EXPERIMENT_SCHEDULER = ev.EventMeta(actor="system:experiment-schedule", role="admin")

# experiments started and not concluded (one stopped by a deployment change is refused at
# request: RequestJob checks that it still runs)
_OPEN_EXPERIMENTS = """
SELECT s.data->>'name' AS name, s.data->>'experiment_id' AS experiment_id
FROM events s
WHERE s.type = 'experiment.started' AND NOT EXISTS (
    SELECT 1 FROM events e WHERE e.type = 'experiment.ended' AND e.stream = s.stream
      AND e.data->>'experiment_id' = s.data->>'experiment_id')
ORDER BY s.position
"""


async def schedule_experiment_looks(resources: Resources) -> int:
    """Request a look at every running A/B experiment; returns how many were requested."""
    requested = 0
    for row in await resources.pool.fetch(_OPEN_EXPERIMENTS):
        command = RequestJob(
            name=row["name"],
            job_id=str(uuid.uuid4()),
            kind="experiment",
            params={"experiment_id": row["experiment_id"]},
        )
        try:
            await resources.jobs.request(command, EXPERIMENT_SCHEDULER, None)
        except DomainError as error:  # stopped since (its challenger was ended)
            _log.info("look at experiment %s skipped: %s", row["experiment_id"], error)
            continue
        requested += 1
    return requested
