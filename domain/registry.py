"""The whole registry as a fold of the log: every model and the policies in force.

Replaying the log up to an instant through `apply` is the definition of the registry as of
that instant; the projections and the as-of reads are checked against it.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from domain import events as ev
from domain.model import evolve
from domain.policy import PolicyBook
from domain.state import EventContext, ModelState

MODEL_EVENT_TYPES: tuple[type[ev.Event], ...] = (
    ev.ModelRegistered,
    ev.ModelUpdated,
    ev.VersionRegistered,
    ev.JobRequested,
    ev.VersionCompiled,
    ev.ComplianceChecked,
    ev.VersionApproved,
    ev.VersionRejected,
    ev.ApprovalRevoked,
    ev.DeploymentChanged,
    ev.VersionRetired,
    ev.DriftDetected,
    ev.BanditUpdated,
    ev.ExperimentStarted,
    ev.ExperimentUpdated,
    ev.ExperimentEnded,
    ev.RetrainingPolicySet,
    ev.RetrainingTriggered,
    ev.RetrainingSkipped,
)
REGISTRY_EVENT_TYPES: tuple[type[ev.Event], ...] = (*MODEL_EVENT_TYPES, ev.PolicySet)
REGISTRY_TAGS: list[str] = [str(t.__struct_config__.tag) for t in REGISTRY_EVENT_TYPES]


class RegistryState(msgspec.Struct, kw_only=True):
    """Every model's state and the policy book, after the event at `position`."""

    models: dict[str, ModelState] = msgspec.field(default_factory=dict)
    policies: PolicyBook = msgspec.field(default_factory=PolicyBook)
    position: int = 0
    time: datetime | None = None


def model_name(event: ev.Event) -> str | None:
    """The model an event belongs to, or None for events outside model streams."""
    if isinstance(event, MODEL_EVENT_TYPES):
        name: str = event.name  # type: ignore[attr-defined]
        return name
    return None


def apply(registry: RegistryState, event: ev.AnyEvent, ctx: EventContext) -> RegistryState:
    """Fold one event into the registry (updates it in place and returns it)."""
    if isinstance(event, ev.PolicySet):
        registry.policies.set(event.risk_tier, event.policy, ctx.stream_version)
    elif (name := model_name(event)) is not None:
        state = evolve(registry.models.get(name), event, ctx)
        if state is not None:
            registry.models[name] = state
    registry.position = ctx.position
    registry.time = ctx.recorded_at
    return registry
