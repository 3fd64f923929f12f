"""Driving the sweeper in tests: jobs Redis forgot, and what the log says about them."""

from __future__ import annotations

import httpx
import msgspec
from arq.constants import in_progress_key_prefix, job_key_prefix

from app.resources import Resources
from app.services.sweeper import ACTOR
from app.settings import Settings
from domain import events as ev
from domain.decide import model_stream
from tests.http.governance_helpers import create_model, register_version


def patient(settings: Settings) -> Settings:
    """The worker's own limit, long enough for a compile on a loaded machine (the tests' short
    one is the sweeper's view; a run past it may draw a second requeue, never a second
    outcome)."""
    return msgspec.structs.replace(settings, job_timeout_seconds=120.0)


async def compile_job(client: httpx.AsyncClient, ci: dict[str, str], name: str) -> str:
    assert (await create_model(client, ci, name)).status_code == 201
    created = await register_version(client, ci, name, seed=4)
    assert created.status_code == 201, created.text
    job_id: str = created.json()["compile_job_id"]
    return job_id


async def forget(resources: Resources, job_id: str) -> None:
    """What a Redis restarted without its data, or flushed, does to a job."""
    redis = resources.redis
    await redis.delete(job_key_prefix + job_id, in_progress_key_prefix + job_id)
    await redis.zrem(resources.settings.queue_name, job_id)


async def _job_events(resources: Resources, name: str, kind: type[ev.Event]) -> list[ev.Event]:
    recorded = await resources.store.read_stream(model_stream(name))
    return [r.event for r in recorded if isinstance(r.event, kind)]


async def outcomes(resources: Resources, name: str) -> int:
    recorded = await resources.store.read_stream(model_stream(name))
    return sum(
        isinstance(r.event, ev.JobSucceeded)
        or (isinstance(r.event, ev.JobFailed) and r.event.final)
        for r in recorded
    )


async def requeued_by_sweeper(resources: Resources, name: str) -> list[ev.JobRequeued]:
    recorded = await resources.store.read_stream(model_stream(name))
    found = [r for r in recorded if isinstance(r.event, ev.JobRequeued)]
    assert all(r.meta.actor == ACTOR for r in found)
    return [r.event for r in found if isinstance(r.event, ev.JobRequeued)]


async def queued(resources: Resources, job_id: str) -> bool:
    return bool(await resources.redis.exists(job_key_prefix + job_id))
