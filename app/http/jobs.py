"""Jobs: request one (train, compile, compliance, drift, bandit) and follow its status."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from app.http.auth import event_meta, idempotency, requires
from app.http.schemas import Input
from app.services.jobs import Jobs, JobView
from domain import events as ev
from domain.commands import RequestJob


class JobCreate(Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A job request. `params` by kind — train: dataset_sha256, target, and optionally
    trainer (lightgbm | sklearn), params (the trainer's), seed, compliance (the fairness check
    the new version gets: dataset_sha256, target, sensitive_features?); compliance: dataset_sha256,
    target, and optionally sensitive_features, threshold; drift: environment, and
    optionally dataset_sha256 (the window; else the prediction log); bandit: environment."""

    kind: ev.JobKind
    model: str
    version: int | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class JobAccepted(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    position: int


class JobController(Controller):
    """Background jobs, requested as events and run by the workers."""

    path = "/v1/jobs"
    tags = ["jobs"]

    @post("/", operation_id="requestJob", status_code=202, guards=[requires("admin", "ci")])
    async def request_job(
        self,
        data: JSONBody[JobCreate],
        request: Request[Any, Any, Any],
        jobs: NamedDependency[Jobs],
    ) -> JobAccepted:
        """Request a job; it runs once a worker takes it (also if Redis is down right now)."""
        command = RequestJob(
            name=data.model,
            job_id=str(uuid.uuid4()),
            kind=data.kind,
            version=data.version,
            params=dict(data.params),
        )
        outcome = await jobs.request(command, event_meta(request), idempotency(request, data))
        return JobAccepted(job_id=command.job_id, position=outcome.position)

    @get("/{job_id:str}", operation_id="getJob")
    async def get_job(self, job_id: FromPath[str], jobs: NamedDependency[Jobs]) -> JobView:
        """A job's status, attempts, result or error."""
        return await jobs.view(job_id)
