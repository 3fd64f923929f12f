"""Models, versions, approvals, deployments, drift alerts and a model's history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from app.http.auth import event_meta, idempotency, requires
from app.http.deps import Writing
from app.http.problems import never_answers
from app.http.schemas import (
    ChangeIn,
    ChangesCreate,
    DecisionCreate,
    DecisionOut,
    DeploymentOut,
    DeploymentsOut,
    DriftAlertCreate,
    DriftAlertOut,
    EvidenceBinding,
    GateOut,
    HistoryOut,
    ModelCreate,
    ModelList,
    ModelPatch,
    PromotionCreate,
    PromotionPlan,
    ReportOut,
    RetirementCreate,
    RetirementOut,
    RevocationCreate,
    RollbackCreate,
)
from app.services.governance import Governance
from app.services.registry import Registry
from app.services.reports import Reports
from app.services.views import ModelView, VersionView, render_model, render_version
from app.store.codec import RecordedEvent
from domain import commands as cmd
from domain import events as ev
from domain.errors import InvalidInput, NotFound
from domain.gates import missing_evidence

Req = Request[Any, Any, Any]
WRITERS = requires("admin", "ci")


def _deployments(events: list[RecordedEvent]) -> list[DeploymentOut]:
    return [
        DeploymentOut(
            environment=e.event.environment,
            action=e.event.action,
            version=e.event.version,
            champion=e.event.champion,
            challenger=e.event.challenger,
            strategy=e.event.strategy,
            traffic_percent=e.event.traffic_percent,
            policy_version=e.event.policy_version,
            gates=[GateOut(name=g.name, passed=g.passed, detail=g.detail) for g in e.event.gates],
            position=e.position,
            reason=e.event.reason,
        )
        for e in events
        if isinstance(e.event, ev.DeploymentChanged)
    ]


def _if_match(request: Req) -> int | None:
    """The model stream version a client saw (`If-Match: "7"`), if it sent one."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if not (value.isascii() and value.isdigit()):
        raise InvalidInput('If-Match must be a model ETag such as "7"', field="If-Match")
    return int(value)


def _dry_runnable(done: type, description: str) -> dict[int, ResponseSpec]:
    """Success responses of a route with `dry_run`: 201 with what was done, 200 with the plan."""
    return {
        200: ResponseSpec(
            PromotionPlan,
            description="dry_run: the gates; nothing recorded",
            generate_examples=False,
        ),
        201: ResponseSpec(done, description=description, generate_examples=False),
    }


def _changes(changes: Sequence[ChangeIn | PromotionCreate]) -> list[cmd.DeploymentChange]:
    return [_change(c, i) for i, c in enumerate(changes)]


def _change(change: ChangeIn | PromotionCreate, index: int) -> cmd.DeploymentChange:
    field = f"changes[{index}]"
    if isinstance(change, ChangeIn) and change.action == "end_challenger":
        if change.version is not None or change.traffic_percent is not None:
            raise InvalidInput(
                "end_challenger ends what runs: it takes no version or traffic_percent",
                field=f"{field}.version",
            )
        if change.strategy != "full":
            raise InvalidInput("end_challenger takes no strategy", field=f"{field}.strategy")
        return cmd.EndChallenger(environment=change.environment, reason=change.reason)
    if change.version is None:
        raise InvalidInput("promote needs the version to serve", field=f"{field}.version")
    if isinstance(change, ChangeIn) and change.reason:
        raise InvalidInput("reason is recorded for end_challenger only", field=f"{field}.reason")
    return cmd.Promote(
        version=change.version,
        environment=change.environment,
        strategy=change.strategy,
        traffic_percent=change.traffic_percent,
    )


class ModelController(Controller):
    """The registry's write side and per-model reads."""

    path = "/v1/models"
    tags = ["models"]

    @post(operation_id="createModel", guards=[WRITERS], opt=never_answers(404))
    async def create(
        self,
        data: JSONBody[ModelCreate],
        request: Req,
        writing: NamedDependency[Writing],
    ) -> ModelView:
        """Register a model name with its risk tier; 409 if the name exists."""
        command = cmd.RegisterModel(**{f: getattr(data, f) for f in data.__struct_fields__})
        meta, idem = event_meta(request), idempotency(request, data)
        outcome = await writing.governance.handle(command, meta, idem)
        model, policies = await writing.registry.answer(data.name, outcome)
        return render_model(model, policies, writing.now)

    @get(operation_id="listModels")
    async def list_models(self, registry: NamedDependency[Registry]) -> ModelList:
        """Every model with its versions and deployments per environment."""
        view = await registry.view(None)
        return ModelList(models=view.models)

    @get(
        "/{name:str}",
        operation_id="getModel",
        response_headers=[
            # `value` is documentation only: it gives the header its schema (a string)
            ResponseHeader(
                name="ETag",
                value='"7"',
                description='the model stream version, quoted (`"7"`); send it as `If-Match`',
                documentation_only=True,
            )
        ],
    )
    async def get_model(
        self,
        name: FromPath[str],
        registry: NamedDependency[Registry],
        now: NamedDependency[datetime],
    ) -> Response[ModelView]:
        """One model with its versions summary and deployments; ETag for If-Match."""
        model, policies = await registry.model_state(name)
        view = render_model(model, policies, now)
        return Response(view, headers={"ETag": f'"{view.stream_version}"'})

    @patch("/{name:str}", operation_id="updateModel", guards=[WRITERS])
    async def update(
        self,
        name: FromPath[str],
        data: JSONBody[ModelPatch],
        request: Req,
        writing: NamedDependency[Writing],
    ) -> ModelView:
        """Change description, owner, tags or sensitive features."""
        fields = {f: getattr(data, f) for f in data.__struct_fields__}
        command = cmd.UpdateModel(name=name, **fields)
        meta, idem = event_meta(request), idempotency(request, data)
        outcome = await writing.governance.handle(command, meta, idem)
        model, policies = await writing.registry.answer(name, outcome)
        return render_model(model, policies, writing.now)

    @get("/{name:str}/versions/{version:int}", operation_id="getVersion")
    async def get_version(
        self,
        name: FromPath[str],
        version: FromPath[int],
        registry: NamedDependency[Registry],
        now: NamedDependency[datetime],
    ) -> VersionView:
        """One version: state, digests, compiled certificate, approvals, gates, deployments."""
        model, found, policies = await registry.version(name, version)
        return render_version(model, found, policies, now, gates=True)

    @get(
        "/{name:str}/versions/{version:int}/reports/{sha256:str}",
        operation_id="getReport",
        guards=[requires("admin", "ci", "approver", "auditor")],
    )
    async def get_report(
        self,
        name: FromPath[str],
        version: FromPath[int],
        sha256: FromPath[str],
        reports: NamedDependency[Reports],
    ) -> ReportOut:
        """A compliance or drift report this version's events name, as stored; 404 otherwise."""
        found = await reports.get(name, version, sha256)
        return ReportOut(
            model=name,
            version=version,
            sha256=sha256,
            kind=found.kind,  # type: ignore[arg-type]
            position=found.position,
            # the stored JSON, passed through unparsed
            report=msgspec.Raw(found.content),  # type: ignore[arg-type]
        )

    @post(
        "/{name:str}/versions/{version:int}/approvals",
        operation_id="decideVersion",
        guards=[requires("approver")],
    )
    async def approve(
        self,
        name: FromPath[str],
        version: FromPath[int],
        data: JSONBody[DecisionCreate],
        request: Req,
        *,
        writing: NamedDependency[Writing],
    ) -> DecisionOut:
        """Approve or reject a version (four-eyes; bound to its current digests, and warned
        of required evidence still missing, which would lapse it once recorded)."""
        meta = event_meta(request)
        command = cmd.DecideVersion(
            name=name,
            version=version,
            approver=meta.actor,
            decision=data.decision,
            comment=data.comment,
        )
        outcome = await writing.governance.handle(command, meta, idempotency(request, data))
        recorded = outcome.events[0]
        event = recorded.event
        assert isinstance(event, (ev.VersionApproved, ev.VersionRejected))
        binding, warnings = None, []
        if isinstance(event, ev.VersionApproved):
            binding = EvidenceBinding(
                artifact_sha256=event.artifact_sha256,
                library_sha256=event.library_sha256,
                report_sha256s=list(event.report_sha256s),
            )
            model, policies = await writing.registry.answer(name, outcome)
            found = writing.registry.version_of(model, version)
            warnings = missing_evidence(found, policies.of(model.risk_tier)[0])
        return DecisionOut(
            version=event.version,
            approver=event.approver,
            decision="approve" if isinstance(event, ev.VersionApproved) else "reject",
            comment=event.comment,
            policy_version=event.policy_version,
            expires_at=getattr(event, "expires_at", None),
            position=recorded.position,
            binds_to=binding,
            warnings=warnings,
        )

    @post(
        "/{name:str}/versions/{version:int}/approvals/revocation",
        operation_id="revokeDecision",
        guards=[requires("approver")],
    )
    async def revoke(
        self,
        name: FromPath[str],
        version: FromPath[int],
        data: JSONBody[RevocationCreate],
        request: Req,
        governance: NamedDependency[Governance],
    ) -> RetirementOut:
        """Withdraw the caller's own standing decision on a version."""
        meta = event_meta(request)
        command = cmd.RevokeDecision(
            name=name, version=version, approver=meta.actor, reason=data.reason
        )
        outcome = await governance.handle(command, meta, idempotency(request, data))
        return RetirementOut(version=version, reason=data.reason, position=outcome.position)

    @post(
        "/{name:str}/versions/{version:int}/retirement",
        operation_id="retireVersion",
        guards=[WRITERS],
    )
    async def retire(
        self,
        name: FromPath[str],
        version: FromPath[int],
        data: JSONBody[RetirementCreate],
        request: Req,
        governance: NamedDependency[Governance],
    ) -> RetirementOut:
        """Retire a version that serves nowhere."""
        command = cmd.RetireVersion(name=name, version=version, reason=data.reason)
        outcome = await governance.handle(command, event_meta(request), idempotency(request, data))
        return RetirementOut(version=version, reason=data.reason, position=outcome.position)

    @post(
        "/{name:str}/promotions",
        operation_id="promote",
        guards=[WRITERS],
        responses=_dry_runnable(DeploymentOut, "the deployment change, recorded"),
    )
    async def promote(
        self,
        name: FromPath[str],
        data: JSONBody[PromotionCreate],
        request: Req,
        governance: NamedDependency[Governance],
    ) -> Response[PromotionPlan | DeploymentOut]:
        """Promote a version; `dry_run` returns the gates and appends nothing."""
        changes = _changes([data])
        if data.dry_run:
            return Response(await _plan(governance, name, changes), status_code=200)
        outcome = await governance.handle(
            cmd.ChangeDeployments(name=name, changes=changes),
            event_meta(request),
            idempotency(request, data),
            expected_version=_if_match(request),
        )
        return Response(_deployments(outcome.events)[0], status_code=201)

    @post(
        "/{name:str}/deployment-changes",
        operation_id="changeDeployments",
        guards=[WRITERS],
        responses=_dry_runnable(DeploymentsOut, "the deployment changes, recorded together"),
    )
    async def change_deployments(
        self,
        name: FromPath[str],
        data: JSONBody[ChangesCreate],
        request: Req,
        governance: NamedDependency[Governance],
    ) -> Response[PromotionPlan | DeploymentsOut]:
        """Several changes, all or none, in one append: promote a version, or end the
        challenger of an environment (`end_challenger`, with a reason: stops a canary, shadow
        or bandit experiment; the champion takes all traffic)."""
        changes = _changes(data.changes)
        if data.dry_run:
            return Response(await _plan(governance, name, changes), status_code=200)
        outcome = await governance.handle(
            cmd.ChangeDeployments(name=name, changes=changes),
            event_meta(request),
            idempotency(request, data),
            expected_version=_if_match(request),
        )
        return Response(DeploymentsOut(deployments=_deployments(outcome.events)), status_code=201)

    @post("/{name:str}/rollbacks", operation_id="rollback", guards=[WRITERS])
    async def rollback(
        self,
        name: FromPath[str],
        data: JSONBody[RollbackCreate],
        request: Req,
        governance: NamedDependency[Governance],
    ) -> DeploymentOut:
        """Undo an environment's last move in one call (the emergency stop): while a challenger
        runs, end it (the champion takes all traffic); otherwise return to the previous good
        champion."""
        outcome = await governance.handle(
            cmd.Rollback(name=name, environment=data.environment, reason=data.reason),
            event_meta(request),
            idempotency(request, data),
        )
        return _deployments(outcome.events)[0]

    @post("/{name:str}/drift-alerts", operation_id="raiseDriftAlert", guards=[WRITERS])
    async def drift_alert(
        self,
        name: FromPath[str],
        data: JSONBody[DriftAlertCreate],
        request: Req,
        writing: NamedDependency[Writing],
    ) -> DriftAlertOut:
        """Record drift on the version that served; policy may act on it."""
        fields = {f: getattr(data, f) for f in data.__struct_fields__}
        command = cmd.RaiseDriftAlert(name=name, **fields)
        outcome = await writing.governance.raise_drift_alert(
            command, event_meta(request), idempotency(request, data)
        )
        alert = outcome.events[0]
        return DriftAlertOut(
            **fields,
            position=alert.position,
            actions=_deployments(await writing.registry.caused_by(name, alert)),
        )

    @get(
        "/{name:str}/history",
        operation_id="modelHistory",
        guards=[requires("auditor", "admin")],
    )
    async def history(
        self,
        name: FromPath[str],
        registry: NamedDependency[Registry],
        as_of: Annotated[
            str | None, QueryParameter(description="position or RFC 3339 time")
        ] = None,
        event_type: Annotated[str | None, QueryParameter(name="type")] = None,
    ) -> HistoryOut:
        """A model's events in order, as stored, up to an instant."""
        position, events = await registry.history(name, as_of, event_type)
        # the events come as the JSON array of their items, passed through unparsed
        return HistoryOut(model=name, as_of_position=position, events=msgspec.Raw(events))  # type: ignore[arg-type]


async def _plan(
    governance: Governance, name: str, changes: list[cmd.DeploymentChange]
) -> PromotionPlan:
    gates = await governance.plan(name, changes)
    if not gates:
        raise NotFound(f"no model named {name!r}")
    return PromotionPlan(
        allowed=all(g.passed for g in gates),
        gates=[GateOut(name=g.name, passed=g.passed, detail=g.detail) for g in gates],
    )
