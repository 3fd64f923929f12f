"""A model's retraining policy (what a critical alert retrains on) and named datasets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from app.http.auth import event_meta, idempotency, requires
from app.services.datasets import Datasets
from app.services.governance import Governance
from app.services.registry import Registry
from domain import commands as cmd
from domain.datasets import DatasetVersion
from domain.policy import RetrainingPolicy
from domain.state import ModelState, RetrainingDecision


class RetrainingPolicyOut(msgspec.Struct, frozen=True, kw_only=True):
    """A model's retraining policy (null: none set) and what it decided about alerts."""

    name: str
    policy: RetrainingPolicy | None
    set_by: str | None
    set_at: datetime | None
    # where the policy was set: it applies to alerts recorded after this position
    position: int | None
    # newest first: each alert it covered, and the train job it requested or why not
    decisions: list[RetrainingDecision]


class NamedDataset(msgspec.Struct, frozen=True, kw_only=True):
    """A named dataset: its versions, oldest first; `latest` is what retraining uses."""

    name: str
    latest: DatasetVersion
    versions: list[DatasetVersion]


def _policy_out(model: ModelState) -> RetrainingPolicyOut:
    return RetrainingPolicyOut(
        name=model.name,
        policy=model.retraining,
        set_by=model.retraining_set_by,
        set_at=model.retraining_set_at,
        position=model.retraining_position or None,
        decisions=list(reversed(model.retrainings)),
    )


class RetrainingController(Controller):
    """Retraining on policy: per model, what a critical alert retrains on (read: any role;
    write: admin, ci)."""

    path = "/v1/models/{name:str}/retraining-policy"
    tags = ["models"]

    @get(operation_id="getRetrainingPolicy")
    async def get_policy(
        self, name: FromPath[str], registry: NamedDependency[Registry]
    ) -> RetrainingPolicyOut:
        """The model's retraining policy and its decisions, newest first."""
        model, _ = await registry.model_state(name)
        return _policy_out(model)

    @put(operation_id="setRetrainingPolicy", guards=[requires("admin", "ci")], status_code=200)
    async def set_policy(
        self,
        name: FromPath[str],
        data: JSONBody[RetrainingPolicy],
        request: Request[Any, Any, Any],
        governance: NamedDependency[Governance],
        registry: NamedDependency[Registry],
    ) -> RetrainingPolicyOut:
        """Set the model's retraining policy, whole: on a critical alert it covers, train on
        the latest version of `dataset` with the serving version's parameters. The new
        version is compiled (and checked for fairness where the tier requires it) and waits
        for approvals: it is never deployed by the policy. `enabled: false` turns it off."""
        command = cmd.SetRetrainingPolicy(name=name, policy=data)
        await governance.handle(command, event_meta(request), idempotency(request, data))
        model, _ = await registry.model_state(name)
        return _policy_out(model)


class DatasetController(Controller):
    """Named datasets (uploaded with `POST /v1/datasets` and a `name` part)."""

    path = "/v1/datasets"
    tags = ["jobs"]

    @get("/{name:str}", operation_id="getDataset")
    async def get_dataset(
        self, name: FromPath[str], datasets: NamedDependency[Datasets]
    ) -> NamedDataset:
        """A named dataset's versions; the latest is what a retraining policy trains on."""
        found = await datasets.get(name)
        latest = found.latest()
        assert latest is not None
        return NamedDataset(name=found.name, latest=latest, versions=found.versions)
