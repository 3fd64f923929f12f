"""The auditor's registry: the whole registry now or at any past instant, and diffs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Response
from msgspec import UNSET, UnsetType

from app.http.auth import event_meta, idempotency, requires
from app.http.problems import also_answers
from app.services.dossier import Dossier, dossier_markdown
from app.services.governance import Governance
from app.services.registry import Instant, Registry, RegistryView, diff, keyed
from domain import commands as cmd
from domain.errors import NotFound
from domain.events import PolicySet
from domain.policy import Policy, PolicyBook

AsOf = Annotated[
    str | None, QueryParameter(description="a position, or an RFC 3339 time; default: now")
]
Models = Annotated[
    list[str] | None,
    QueryParameter(
        description="only these models (repeat the parameter for several); default: all. "
        "Each starts from its own snapshot, so one model as of any instant is a fast read."
    ),
]


class RegistryDiff(msgspec.Struct, frozen=True, kw_only=True):
    from_: Instant = msgspec.field(name="from")
    to: Instant
    changes: list[dict[str, Any]]


class PolicyOut(msgspec.Struct, frozen=True, kw_only=True):
    risk_tier: str
    version: int
    policy: Policy


# PUT /v1/policies/{tier}: every field of a policy, none required; those given replace the
# tier's current values (each field whole), the others keep theirs
PolicyChanges = msgspec.defstruct(
    "PolicyChanges",
    [(f.name, f.type | UnsetType, UNSET) for f in msgspec.structs.fields(Policy)],
    kw_only=True,
    frozen=True,
    forbid_unknown_fields=True,
)
PolicyChanges.__doc__ = (
    "Fields of a tier's policy to change; each given field replaces the current value whole, "
    "fields left out keep the tier's current values."
)


class PolicyList(msgspec.Struct, frozen=True, kw_only=True):
    """The policy in force for each risk tier."""

    policies: list[PolicyOut]


class RegistryController(Controller):
    """Registry snapshots and diffs (any role), dossiers (auditor, admin)."""

    tags = ["audit"]

    @get("/v1/registry", operation_id="registry", opt=also_answers(404))
    async def registry(
        self, registry: NamedDependency[Registry], as_of: AsOf = None, model: Models = None
    ) -> RegistryView:
        """The whole registry, or some of its models, as it was at `as_of` (a replay of the
        log up to then)."""
        return await registry.view(as_of, model)

    @get("/v1/registry/diff", operation_id="registryDiff", opt=also_answers(404))
    async def registry_diff(
        self,
        registry: NamedDependency[Registry],
        from_: Annotated[str, QueryParameter(name="from", description="position or time")],
        to: Annotated[
            str | None, QueryParameter(description="position or time; default now")
        ] = None,
        model: Models = None,
    ) -> RegistryDiff:
        """What changed in the registry (or in some of its models) between two instants."""
        before = await registry.view(from_, model)
        after = await registry.view(to, model)
        return RegistryDiff(
            from_=before.as_of, to=after.as_of, changes=diff(keyed(before), keyed(after))
        )

    @get(
        "/v1/models/{name:str}/versions/{version:int}/dossier",
        operation_id="dossier",
        guards=[requires("auditor", "admin")],
        media_type="application/json",
    )
    async def dossier(
        self,
        name: FromPath[str],
        version: FromPath[int],
        request: Request[Any, Any, Any],
        registry: NamedDependency[Registry],
        now: NamedDependency[datetime],
    ) -> Response[Dossier | str]:
        """The model card of a version; `Accept: text/markdown` for Markdown."""
        card = await registry.dossier(name, version, now)
        if "text/markdown" in request.headers.get("accept", ""):
            return Response(dossier_markdown(card), media_type="text/markdown")
        return Response(card)


class PolicyController(Controller):
    """Governance policies per risk tier (read: any; write: admin)."""

    path = "/v1/policies"
    tags = ["policies"]

    @get(operation_id="listPolicies")
    async def list_policies(self, registry: NamedDependency[Registry]) -> PolicyList:
        """The policy in force for each risk tier and its version (0: built-in default)."""
        book: PolicyBook = await registry.policies()
        return PolicyList(
            policies=[
                PolicyOut(risk_tier=tier, version=book.of(tier)[1], policy=book.of(tier)[0])
                for tier in ("low", "medium", "high")
            ]
        )

    @get("/{tier:str}", operation_id="getPolicy")
    async def get_policy(
        self, tier: FromPath[str], registry: NamedDependency[Registry]
    ) -> PolicyOut:
        """The policy in force for one risk tier and its version (0: built-in default)."""
        if tier not in ("low", "medium", "high"):
            raise NotFound(f"no risk tier {tier!r}")
        policy, version = (await registry.policies()).of(tier)
        return PolicyOut(risk_tier=tier, version=version, policy=policy)

    @put(
        "/{tier:str}",
        operation_id="setPolicy",
        guards=[requires("admin")],
        status_code=200,
    )
    async def set_policy(
        self,
        tier: FromPath[str],
        data: JSONBody[PolicyChanges],  # type: ignore[valid-type]
        request: Request[Any, Any, Any],
        governance: NamedDependency[Governance],
    ) -> PolicyOut:
        """Change a tier's policy: the fields given replace the tier's current values (each
        field whole, e.g. all of `metric_thresholds`); the fields left out keep theirs. A new
        version, recorded (and audited) as an event; 409 only if it keeps losing races."""
        given = msgspec.structs.asdict(data)
        changes = {field: value for field, value in given.items() if value is not UNSET}
        outcome = await governance.handle(
            cmd.AmendPolicy(tier=tier, changes=changes),
            event_meta(request),
            idempotency(request, data),
        )
        recorded = outcome.events[0].event if outcome.events else None
        assert isinstance(recorded, PolicySet)
        return PolicyOut(risk_tier=tier, version=outcome.stream_version, policy=recorded.policy)
