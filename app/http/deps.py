"""What route handlers are given (Litestar's `Provide`): the services, never the resources."""

from __future__ import annotations

from datetime import datetime

from litestar.datastructures import State
from litestar.di import Provide

from app.resources import Resources
from app.services.governance import Governance
from app.services.jobs import Jobs
from app.services.registry import Registry
from app.services.reports import Reports


def _resources(state: State) -> Resources:
    resources: Resources = state.resources
    return resources


def provide_governance(state: State) -> Governance:
    """Commands: the one path every change takes."""
    return _resources(state).governance


def provide_registry(state: State) -> Registry:
    """Reads of the registry, now or as of any instant."""
    return _resources(state).registry


def provide_jobs(state: State) -> Jobs:
    """Job requests and their status."""
    return _resources(state).jobs


def provide_reports(state: State) -> Reports:
    """The compliance and drift reports a version's events name."""
    resources = _resources(state)
    return Reports(resources.store, resources.artifacts)


def provide_now(state: State) -> datetime:
    """The server's clock, read once per request."""
    return _resources(state).clock()


DEPENDENCIES = {
    "governance": Provide(provide_governance, sync_to_thread=False),
    "registry": Provide(provide_registry, sync_to_thread=False),
    "jobs": Provide(provide_jobs, sync_to_thread=False),
    "reports": Provide(provide_reports, sync_to_thread=False),
    "now": Provide(provide_now, sync_to_thread=False),
}
