"""What route handlers are given (Litestar's `Provide`): the services, never the resources."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from litestar import Request
from litestar.di import Provide

from app.resources import Resources
from app.scoring.feedback import Rewards
from app.scoring.scorer import Scorer
from app.services.audit import AuditLog
from app.services.authenticator import Authenticator
from app.services.datasets import Datasets
from app.services.governance import Governance
from app.services.jobs import Jobs
from app.services.monitoring import Monitoring
from app.services.ops_metrics import ClusterMetrics
from app.services.probes import Probes
from app.services.registry import Registry
from app.services.reports import Reports
from app.services.tokens import Tokens
from app.services.uploads import Uploads

Req = Request[Any, Any, Any]


def _resources(request: Req) -> Resources:
    # from the request, not a `state` parameter: Litestar builds a State (a dict copy and a
    # lock) for each dependency that takes one, on every request
    resources: Resources = request.app.state.resources
    return resources


def provide_governance(request: Req) -> Governance:
    """Commands: the one path every change takes."""
    return _resources(request).governance


def provide_registry(request: Req) -> Registry:
    """Reads of the registry, now or as of any instant."""
    return _resources(request).registry


@dataclass(frozen=True, slots=True)
class Writing:
    """What a handler that writes and answers with the registry's view uses, as one
    dependency: Litestar resolves two or more of a handler's dependencies in an anyio task
    group per request, a sixth of a `POST /v1/models`'s CPU in the server (profiled) for
    providers that only look an attribute up."""

    governance: Governance
    registry: Registry
    now: datetime  # the server's clock, read once per request


def provide_writing(request: Req) -> Writing:
    """The command path, the registry's reads and the request's time."""
    res = _resources(request)
    return Writing(res.governance, res.registry, res.clock())


def provide_jobs(request: Req) -> Jobs:
    """Job requests and their status."""
    return _resources(request).jobs


def provide_reports(request: Req) -> Reports:
    """The compliance and drift reports a version's events name."""
    resources = _resources(request)
    return Reports(resources.store, resources.artifacts)


def provide_monitoring(request: Req) -> Monitoring:
    """Monitoring signals (drift, alerts, looks) and score distributions, for the console."""
    return Monitoring(_resources(request).pool)


def provide_now(request: Req) -> datetime:
    """The server's clock, read once per request."""
    return _resources(request).clock()


def provide_tokens(request: Req) -> Tokens:
    """Issuing, listing and revoking tokens."""
    res = _resources(request)
    return Tokens(res.store, res.projector, res.minter, res.authenticator)


def provide_authenticator(request: Req) -> Authenticator:
    """The token table: who a token is, and whether it is fresh."""
    return _resources(request).authenticator


def provide_audit(request: Req) -> AuditLog:
    """The log as stored, and its verification."""
    res = _resources(request)
    return AuditLog(res.store, res.signing_key.public_key(), res.settings.witness_file)


def provide_uploads(request: Req) -> Uploads:
    """Artifacts and datasets, stored and checked."""
    res = _resources(request)
    return Uploads(res.artifacts, res.sandbox, res.settings.max_upload_bytes)


def provide_datasets(request: Req) -> Datasets:
    """Named datasets and their versions."""
    return _resources(request).datasets


def provide_probes(request: Req) -> Probes:
    """What readiness asks of the stores."""
    res = _resources(request)
    return Probes(res.store, res.redis, res.database_role)


def provide_scorer(request: Req) -> Scorer:
    """Scoring with the deployed versions' compiled libraries."""
    return _resources(request).scoring.scorer


def provide_rewards(request: Req) -> Rewards:
    """Rewards for predictions."""
    res = _resources(request)
    return Rewards(res.pool, res.scoring.predictions, res.clock)


def provide_cluster_metrics(request: Req) -> ClusterMetrics:
    """The cluster's gauges, read from the views and the queue."""
    res = _resources(request)
    return ClusterMetrics(res.pool, res.redis, res.settings.queue_name)


DEPENDENCIES = {
    "governance": Provide(provide_governance, sync_to_thread=False),
    "registry": Provide(provide_registry, sync_to_thread=False),
    "writing": Provide(provide_writing, sync_to_thread=False),
    "jobs": Provide(provide_jobs, sync_to_thread=False),
    "reports": Provide(provide_reports, sync_to_thread=False),
    "now": Provide(provide_now, sync_to_thread=False),
    "monitoring": Provide(provide_monitoring, sync_to_thread=False),
    "tokens": Provide(provide_tokens, sync_to_thread=False),
    "authenticator": Provide(provide_authenticator, sync_to_thread=False),
    "audit": Provide(provide_audit, sync_to_thread=False),
    "uploads": Provide(provide_uploads, sync_to_thread=False),
    "probes": Provide(provide_probes, sync_to_thread=False),
    "datasets": Provide(provide_datasets, sync_to_thread=False),
    "scorer": Provide(provide_scorer, sync_to_thread=False),
    "rewards": Provide(provide_rewards, sync_to_thread=False),
    "cluster": Provide(provide_cluster_metrics, sync_to_thread=False),
}
