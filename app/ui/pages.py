"""The console's pages: each asks the same services as the API's routes, under the same roles."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, Template

from app.http.auth import event_meta, requires
from app.http.experiments import render as render_experiment
from app.http.problems import status_of
from app.services.audit import AuditLog
from app.services.dossier import dossier_markdown, dossier_tables
from app.services.governance import Governance
from app.services.monitoring import (
    SCORE_DAYS,
    SCORE_ROWS,
    Monitoring,
    compliance_rates,
    serving,
)
from app.services.registry import Registry, diff, keyed
from app.services.reports import Reports
from app.services.views import render_model, render_version
from app.ui.auth import UI_PATH, checked_form, page
from app.ui.rendering import (
    champion_to_compare,
    dossier_cell,
    evidence_changes,
    last_change,
    matches,
    shown_change,
    timeline_row,
    why_not_counted,
)
from domain import commands as cmd
from domain.errors import DomainError, InvalidInput, NotFound

Req = Request[Any, Any, Any]
EVERYONE = requires("admin", "ci", "approver", "auditor", "scorer")
AUDITORS = requires("auditor", "admin")
APPROVERS = requires("approver")
# the roles of the API's promotion routes, whose dry run the plan page shows
PROMOTERS = requires("admin", "ci")
# the roles of GET …/reports/{sha256}, whose compliance report the rates per group come from
REPORT_READERS = requires("admin", "ci", "approver", "auditor")
# events per timeline page (newest first; older ones a link away)
TIMELINE_PAGE = 500


class ConsoleController(Controller):
    """Models, a model's timeline and versions, the registry as of an instant, verification."""

    path = UI_PATH
    include_in_schema = False

    @get(operation_id="uiModels", guards=[EVERYONE])
    async def models(
        self,
        request: Req,
        registry: NamedDependency[Registry],
        monitoring: NamedDependency[Monitoring],
        q: Annotated[str, QueryParameter(max_length=200)] = "",
    ) -> Template:
        """Every model: risk tier, what serves where, open drift, performance and data-quality
        alerts, last change."""
        view = await registry.view(None)
        wanted = q.strip().lower()
        models = [m for m in view.models if not wanted or matches(m, wanted)]
        environments = sorted({env for m in models for env in m.deployments})
        by_name = {m.name: m for m in models}
        alerts = dict.fromkeys(by_name, 0)
        asked = [triple for m in models for triple in serving(m.name, m.deployments)]
        for model_name, _ in await monitoring.open_alerts(asked):
            alerts[model_name] += 1
        return page(
            request,
            "models.html",
            models=models,
            alerts=alerts,
            environments=environments,
            q=q,
            last_change={m.name: last_change(m) for m in models},
            total=len(view.models),
        )

    @get("/models/{name:str}", operation_id="uiModel", guards=[EVERYONE])
    async def model(
        self,
        request: Req,
        name: FromPath[str],
        registry: NamedDependency[Registry],
        monitoring: NamedDependency[Monitoring],
        now: NamedDependency[datetime],
    ) -> Template:
        """One model: deployments per environment, versions, open alerts, experiments and
        their looks, PSI per feature over time (score distributions: the scores page)."""
        state, policies = await registry.model_state(name)
        view = render_model(state, policies, now)
        policy, _ = policies.of(state.risk_tier)
        experiments = sorted(state.experiments.values(), key=lambda e: -e.position)
        return page(
            request,
            "model.html",
            model=view,
            can_audit=_may(request, AUDITORS),
            signals=await monitoring.signals(state),
            experiments=[render_experiment(e) for e in experiments],
            psi_warning=policy.drift.psi_warning,
            psi_critical=policy.drift.psi_critical,
        )

    @get("/models/{name:str}/scores", operation_id="uiScores", guards=[EVERYONE])
    async def scores(
        self,
        request: Req,
        name: FromPath[str],
        registry: NamedDependency[Registry],
        monitoring: NamedDependency[Monitoring],
        now: NamedDependency[datetime],
    ) -> Template:
        """Each environment's champion and challenger score distribution, from the newest
        predictions of the log (the model page loads it after itself, with htmx)."""
        state, _ = await registry.model_state(name)
        histograms = []
        for environment in sorted(state.deployments):
            found = await monitoring.scores(state, environment, now)
            if found is not None:
                histograms.append(found)
        return page(
            request,
            "scores.html",
            name=name,
            histograms=histograms,
            score_rows=SCORE_ROWS,
            score_days=SCORE_DAYS,
        )

    @get("/models/{name:str}/timeline", operation_id="uiTimeline", guards=[AUDITORS])
    async def timeline(
        self,
        request: Req,
        name: FromPath[str],
        registry: NamedDependency[Registry],
        event_type: Annotated[str, QueryParameter(name="type", max_length=100)] = "",
        as_of: Annotated[int | None, QueryParameter(ge=0)] = None,
    ) -> Template:
        """The model's events, newest first, a page at a time up to a position: who, in what
        role, when, what, and what caused it."""
        _, raw = await registry.history(name, None, None)
        events: list[dict[str, Any]] = msgspec.json.decode(raw)
        by_id = {e["event_id"]: e for e in events}
        matching = [
            e
            for e in events
            if (not event_type or e["type"] == event_type)
            and (as_of is None or e["position"] <= as_of)
        ]
        shown = matching[-TIMELINE_PAGE:][::-1]
        here = {e["position"] for e in shown}
        return page(
            request,
            "timeline.html",
            name=name,
            rows=[timeline_row(e, by_id, here) for e in shown],
            types=sorted({e["type"] for e in events}),
            event_type=event_type,
            total=len(events),
            matching=len(matching),
            as_of=as_of,
            older=shown[-1]["position"] - 1 if len(matching) > len(shown) else None,
        )

    @get("/models/{name:str}/versions/{version:int}", operation_id="uiVersion", guards=[EVERYONE])
    async def version(
        self,
        request: Req,
        name: FromPath[str],
        version: FromPath[int],
        *,
        registry: NamedDependency[Registry],
        reports: NamedDependency[Reports],
        now: NamedDependency[datetime],
        recorded: Annotated[int | None, QueryParameter(ge=0)] = None,
    ) -> Template:
        """One version: state, evidence (with the compliance report's rates per group),
        gates, approvals; approvers decide here."""
        notice = None if recorded is None else f"Your decision was recorded at position {recorded}."
        return await _version_page(
            request, registry, reports, name, version, now=now, notice=notice
        )

    @post(
        "/models/{name:str}/versions/{version:int}/approvals",
        operation_id="uiDecide",
        guards=[APPROVERS],
        status_code=303,
    )
    async def decide(
        self,
        request: Req,
        name: FromPath[str],
        version: FromPath[int],
        *,
        governance: NamedDependency[Governance],
        registry: NamedDependency[Registry],
        reports: NamedDependency[Reports],
        now: NamedDependency[datetime],
    ) -> Response[Any]:
        """Approve or reject, through the same command as the API; refusals shown on the page."""
        fields = await checked_form(request)
        decision = fields.get("decision", "")
        meta = event_meta(request)
        try:
            if decision not in ("approve", "reject"):
                raise InvalidInput("choose approve or reject", field="decision")
            command = cmd.DecideVersion(
                name=name,
                version=version,
                approver=meta.actor,
                decision=decision,
                comment=fields.get("comment", ""),
            )
            outcome = await governance.handle(command, meta)
        except DomainError as error:
            return await _version_page(
                request,
                registry,
                reports,
                name,
                version,
                now=now,
                refusal=error.detail,
                status_code=status_of(error),
                comment=fields.get("comment", ""),
            )
        return Redirect(
            f"{UI_PATH}/models/{name}/versions/{version}?recorded={outcome.position}",
            status_code=303,
        )

    @get(
        "/models/{name:str}/versions/{version:int}/plan",
        operation_id="uiPlan",
        guards=[PROMOTERS],
    )
    async def plan(
        self,
        request: Req,
        name: FromPath[str],
        version: FromPath[int],
        governance: NamedDependency[Governance],
        environment: Annotated[str, QueryParameter(min_length=1, max_length=100)] = "production",
    ) -> Template:
        """A promotion's dry run: the gates it would meet now; nothing is recorded."""
        change = cmd.Promote(version=version, environment=environment)
        gates = await governance.plan(name, [change])
        if not gates:
            raise NotFound(f"no model named {name!r}")
        return page(
            request,
            "plan.html",
            name=name,
            version=version,
            environment=environment,
            gates=gates,
            passes=all(g.passed for g in gates),
        )

    @get(
        "/models/{name:str}/versions/{version:int}/dossier",
        operation_id="uiDossier",
        guards=[AUDITORS],
    )
    async def dossier(
        self,
        request: Req,
        name: FromPath[str],
        version: FromPath[int],
        registry: NamedDependency[Registry],
        now: NamedDependency[datetime],
    ) -> Template:
        """The model card of a version, as tables; printable, and downloadable as Markdown."""
        card = await registry.dossier(name, version, now)
        tables = [
            (title, header.split(","), [[dossier_cell(v) for v in row] for row in rows])
            for title, header, rows in dossier_tables(card)
        ]
        return page(request, "dossier.html", card=card, tables=tables)

    @get(
        "/models/{name:str}/versions/{version:int}/dossier.md",
        operation_id="uiDossierMarkdown",
        guards=[AUDITORS],
    )
    async def dossier_download(
        self,
        name: FromPath[str],
        version: FromPath[int],
        registry: NamedDependency[Registry],
        now: NamedDependency[datetime],
    ) -> Response[str]:
        """The model card as a Markdown file."""
        card = await registry.dossier(name, version, now)
        return Response(
            dossier_markdown(card),
            media_type="text/markdown; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}-v{version}-dossier.md"'},
        )

    @get("/registry", operation_id="uiRegistry", guards=[EVERYONE])
    async def registry_as_of(
        self,
        request: Req,
        registry: NamedDependency[Registry],
        as_of: Annotated[str, QueryParameter(max_length=100)] = "",
        model: Annotated[str, QueryParameter(max_length=100)] = "",
    ) -> Template:
        """The whole registry, or one model, as it was at an instant (a position or an
        RFC 3339 time)."""
        view = await registry.view(as_of.strip() or None, [model] if model else None)
        head = await registry.instant(None)
        return page(
            request,
            "registry.html",
            view=view,
            as_of=as_of,
            model=model,
            head=head.position,
        )

    @get("/registry/diff", operation_id="uiRegistryDiff", guards=[EVERYONE])
    async def registry_diff(
        self,
        request: Req,
        registry: NamedDependency[Registry],
        from_: Annotated[str, QueryParameter(name="from", max_length=100)] = "",
        to: Annotated[str, QueryParameter(max_length=100)] = "",
    ) -> Template:
        """What changed between two instants, leaf by leaf."""
        changes = None
        before = after = None
        if from_.strip():
            before = await registry.view(from_.strip())
            after = await registry.view(to.strip() or None)
            changes = [shown_change(c) for c in diff(keyed(before), keyed(after))]
        return page(
            request,
            "diff.html",
            from_=from_,
            to=to,
            changes=changes,
            before=None if before is None else before.as_of,
            after=None if after is None else after.as_of,
        )

    @get("/verify", operation_id="uiVerify", guards=[AUDITORS])
    async def verify(
        self,
        request: Req,
        audit: NamedDependency[AuditLog],
        run: Annotated[bool, QueryParameter()] = False,
    ) -> Template:
        """The chain's head, newest signed checkpoint, witness; verify now on request."""
        status = await audit.status()
        report = await audit.verify(None) if run else None
        return page(request, "verify.html", status=status, report=report)


def _may(request: Req, guard: Any) -> bool:
    return bool(request.user.role in guard.roles)


async def _version_page(
    request: Req,
    registry: Registry,
    reports: Reports,
    name: str,
    number: int,
    *,
    now: datetime,
    notice: str | None = None,
    refusal: str | None = None,
    status_code: int = 200,
    comment: str = "",
) -> Template:
    model, found, policies = await registry.version(name, number)
    view = render_version(model, found, policies, now, gates=True)
    policy, policy_version = policies.of(model.risk_tier)
    against = champion_to_compare(model, number)
    changes = None
    if against is not None:
        champion = model.versions[against[1]]
        champion_view = render_version(model, champion, policies, now, gates=False)
        changes = evidence_changes(champion_view, view)
    rates, rates_missing = None, None
    if view.compliance is not None and not _may(request, REPORT_READERS):
        rates_missing = "Rates per group are shown to the roles that may read reports."
    elif view.compliance is not None:
        try:
            report = await reports.get(name, number, view.compliance.report_sha256)
            rates = compliance_rates(report.content)
        except NotFound as missing:
            rates_missing = f"Rates per group cannot be shown: {missing.detail}."
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            rates_missing = "Rates per group cannot be shown: the report is not a fairness report."
    return page(
        request,
        "version.html",
        rates=rates,
        rates_missing=rates_missing,
        against=against,
        changes=changes,
        status_code=status_code,
        name=name,
        risk_tier=model.risk_tier,
        version=view,
        policy=policy,
        lineage=[(k, v) for k, v in msgspec.structs.asdict(view.lineage).items() if v],
        policy_version=policy_version,
        why_not={a.position: why_not_counted(a, now) for a in view.approvals},
        counted=sum(1 for a in view.approvals if a.counts),
        can_decide=_may(request, APPROVERS),
        can_audit=_may(request, AUDITORS),
        can_plan=_may(request, PROMOTERS),
        notice=notice,
        refusal=refusal,
        comment=comment,
    )
