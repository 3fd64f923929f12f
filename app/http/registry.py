"""The auditor's registry: the whole registry now or at any past instant, and diffs."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Response

from app.http.auth import event_meta, idempotency, requires
from app.http.problems import also_answers, never_answers
from app.resources import Resources
from app.services.dossier import Dossier, build_dossier, dossier_markdown
from app.services.governance import Governance
from app.services.registry import Instant, Registry, RegistryView, diff, keyed
from domain import commands as cmd
from domain.decide import model_stream
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
        state: State,
        from_: Annotated[str, QueryParameter(name="from", description="position or time")],
        to: Annotated[
            str | None, QueryParameter(description="position or time; default now")
        ] = None,
        model: Models = None,
    ) -> RegistryDiff:
        """What changed in the registry (or in some of its models) between two instants."""
        resources: Resources = state.resources
        before = await resources.registry.view(from_, model)
        after = await resources.registry.view(to, model)
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
        state: State,
    ) -> Response[Dossier | str]:
        """The model card of a version; `Accept: text/markdown` for Markdown."""
        resources: Resources = state.resources
        model, policies = await resources.registry.model_state(name)
        events = await resources.store.read_stream(model_stream(name))
        head, _ = await resources.store.head()
        card = build_dossier(
            model, version, policies, events, now=resources.clock(), as_of_position=head
        )
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

    @put(
        "/{tier:str}",
        operation_id="setPolicy",
        guards=[requires("admin")],
        status_code=200,
        opt=never_answers(409),  # a policy version is appended whatever the stream holds
    )
    async def set_policy(
        self,
        tier: FromPath[str],
        data: JSONBody[Policy],
        request: Request[Any, Any, Any],
        governance: NamedDependency[Governance],
    ) -> PolicyOut:
        """Set a tier's policy: a new version, recorded (and audited) as an event."""
        outcome = await governance.handle(
            cmd.SetPolicy(tier=tier, policy=data), event_meta(request), idempotency(request, data)
        )
        return PolicyOut(risk_tier=tier, version=outcome.stream_version, policy=data)
