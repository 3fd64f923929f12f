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
from app.http.problems import status_of
from app.services.audit import AuditLog
from app.services.authenticator import Authenticator, TokensStale, hash_token
from app.services.dossier import dossier_markdown, dossier_tables
from app.services.governance import Governance
from app.services.registry import Registry, diff, keyed
from app.services.views import ApprovalView, ModelView, render_model, render_version
from app.ui.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_PATH,
    UI_PATH,
    checked_form,
    cookie,
    form_fields,
    new_csrf_token,
    page,
    safe_next,
    same_token,
    sessions_of,
)
from domain import commands as cmd
from domain.errors import DomainError, InvalidInput, NotFound

Req = Request[Any, Any, Any]
EVERYONE = requires("admin", "ci", "approver", "auditor", "scorer")
AUDITORS = requires("auditor", "admin")
APPROVERS = requires("approver")
# the roles of the API's promotion routes, whose dry run the plan page shows
PROMOTERS = requires("admin", "ci")
# event fields shown in a timeline row (the rest are on the API's history)
_HASH_LENGTH = 64
_SHORT_HASH = 12
# fields a timeline row already says (the event's tag, the model)
_SAID = frozenset({"type", "name"})


class SignInController(Controller):
    """Signing in with a token (pasted once) and out again."""

    path = SIGN_IN_PATH
    include_in_schema = False

    @get(operation_id="uiSignInForm")
    async def form(
        self, request: Req, next_: Annotated[str | None, QueryParameter(name="next")] = None
    ) -> Template:
        """The sign-in form, with a fresh double-submit CSRF token."""
        token = new_csrf_token()
        response = page(
            request, "sign_in.html", sign_in_token=token, next=safe_next(next_), error=None
        )
        response.cookies.append(cookie(request, SIGN_IN_COOKIE, token))
        return response

    @post(operation_id="uiSignIn", status_code=303)
    async def sign_in(
        self, request: Req, authenticator: NamedDependency[Authenticator]
    ) -> Response[Any]:
        """Verify the token and open a session; the token itself is not kept."""
        fields = await form_fields(request)
        target = safe_next(fields.get("next"))
        if not same_token(fields.get(CSRF_FIELD), request.cookies.get(SIGN_IN_COOKIE)):
            return _sign_in_again(request, target, 403, "The form expired: sign in again.")
        token = fields.get("token", "").strip()
        try:
            principal = await authenticator.authenticate(token) if token else None
        except TokensStale:
            return _sign_in_again(request, target, 503, "Tokens cannot be checked right now.")
        if principal is None:
            return _sign_in_again(request, target, 401, "That token is not valid (or revoked).")
        sessions = sessions_of(request)
        if old := request.cookies.get(SESSION_COOKIE):
            sessions.close(old)
        session_id, _ = sessions.open(principal, hash_token(token))
        response: Response[Any] = Redirect(target, status_code=303)
        response.cookies.append(cookie(request, SESSION_COOKIE, session_id))
        response.delete_cookie(SIGN_IN_COOKIE, path=UI_PATH)
        return response


def _sign_in_again(request: Req, target: str, status: int, message: str) -> Template:
    token = new_csrf_token()
    response = page(
        request,
        "sign_in.html",
        status_code=status,
        sign_in_token=token,
        next=target,
        error=message,
    )
    response.cookies.append(cookie(request, SIGN_IN_COOKIE, token))
    return response


@post(
    "/ui/sign-out",
    operation_id="uiSignOut",
    guards=[EVERYONE],
    status_code=303,
    include_in_schema=False,
)
async def sign_out(request: Req) -> Response[Any]:
    """End the session."""
    await checked_form(request)
    sessions_of(request).close(request.cookies.get(SESSION_COOKIE, ""))
    response: Response[Any] = Redirect(SIGN_IN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=UI_PATH)
    return response


class ConsoleController(Controller):
    """Models, a model's timeline and versions, the registry as of an instant, verification."""

    path = UI_PATH
    include_in_schema = False

    @get(operation_id="uiModels", guards=[EVERYONE])
    async def models(
        self,
        request: Req,
        registry: NamedDependency[Registry],
        q: Annotated[str, QueryParameter(max_length=200)] = "",
    ) -> Template:
        """Every model: risk tier, what serves where, open drift alerts, last change."""
        view = await registry.view(None)
        wanted = q.strip().lower()
        models = [m for m in view.models if not wanted or _matches(m, wanted)]
        environments = sorted({env for m in models for env in m.deployments})
        return page(
            request,
            "models.html",
            models=models,
            environments=environments,
            q=q,
            last_change={m.name: _last_change(m) for m in models},
            total=len(view.models),
        )

    @get("/models/{name:str}", operation_id="uiModel", guards=[EVERYONE])
    async def model(
        self,
        request: Req,
        name: FromPath[str],
        registry: NamedDependency[Registry],
        now: NamedDependency[datetime],
    ) -> Template:
        """One model: deployments per environment and its versions."""
        state, policies = await registry.model_state(name)
        view = render_model(state, policies, now)
        return page(request, "model.html", model=view, can_audit=_may(request, AUDITORS))

    @get("/models/{name:str}/timeline", operation_id="uiTimeline", guards=[AUDITORS])
    async def timeline(
        self,
        request: Req,
        name: FromPath[str],
        registry: NamedDependency[Registry],
        event_type: Annotated[str, QueryParameter(name="type", max_length=100)] = "",
    ) -> Template:
        """The model's events: who, in what role, when, what, and what caused it."""
        _, raw = await registry.history(name, None, None)
        events: list[dict[str, Any]] = msgspec.json.decode(raw)
        by_id = {e["event_id"]: e for e in events}
        types = sorted({e["type"] for e in events})
        rows = [
            _timeline_row(e, by_id) for e in events if not event_type or e["type"] == event_type
        ]
        return page(
            request,
            "timeline.html",
            name=name,
            rows=list(reversed(rows)),
            types=types,
            event_type=event_type,
            total=len(events),
        )

    @get("/models/{name:str}/versions/{version:int}", operation_id="uiVersion", guards=[EVERYONE])
    async def version(
        self,
        request: Req,
        name: FromPath[str],
        version: FromPath[int],
        *,
        registry: NamedDependency[Registry],
        now: NamedDependency[datetime],
        recorded: Annotated[int | None, QueryParameter(ge=0)] = None,
    ) -> Template:
        """One version: state, evidence, gates, approvals; approvers decide here."""
        notice = None if recorded is None else f"Your decision was recorded at position {recorded}."
        return await _version_page(request, registry, name, version, now, notice=notice)

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
                name,
                version,
                now,
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
            (title, header.split(","), [[_dossier_cell(v) for v in row] for row in rows])
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
    ) -> Template:
        """The whole registry as it was at an instant (a position or an RFC 3339 time)."""
        view = await registry.view(as_of.strip() or None)
        head = await registry.instant(None)
        return page(
            request,
            "registry.html",
            view=view,
            as_of=as_of,
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
            changes = [_shown_change(c) for c in diff(keyed(before), keyed(after))]
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


def _dossier_cell(value: object) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def _may(request: Req, guard: Any) -> bool:
    return bool(request.user.role in guard.roles)


def _matches(model: ModelView, wanted: str) -> bool:
    return wanted in model.name.lower() or any(wanted in tag.lower() for tag in model.tags)


def _last_change(model: ModelView) -> datetime:
    moments = [model.registered_at]
    moments += [v.registered_at for v in model.versions]
    moments += [v.retired_at for v in model.versions if v.retired_at]
    moments += [d.updated_at for d in model.deployments.values() if d.updated_at]
    return max(moments)


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) == _HASH_LENGTH:
        return value[:_SHORT_HASH] + "…"
    return value


def _timeline_row(event: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> dict[str, Any]:
    meta = event["meta"]
    data = event["data"]
    cause = by_id.get(meta.get("causation_id") or "")
    return {
        "position": event["position"],
        "version": event["version"],
        "type": event["type"],
        "recorded_at": event["recorded_at"],
        "actor": meta.get("actor", ""),
        "role": meta.get("role", ""),
        "what": [
            (key, _short(value))
            for key, value in data.items()
            if isinstance(value, (str, int, float, bool)) and value != "" and key not in _SAID
        ],
        "cause": None if cause is None else {"type": cause["type"], "position": cause["position"]},
        "causation_id": meta.get("causation_id"),
    }


def _shown_change(change: dict[str, Any]) -> dict[str, Any]:
    def text(value: Any) -> str:
        return value if isinstance(value, str) else msgspec.json.encode(value).decode()

    return {
        "path": change["path"],
        "change": change["change"],
        "before": text(change["before"]) if "before" in change else "",
        "after": text(change["after"]) if "after" in change else "",
    }


def _why_not_counted(approval: ApprovalView, now: datetime) -> str:
    if approval.counts:
        return ""
    if approval.decision != "approve":
        return "a rejection"
    if approval.revoked:
        return "revoked by its approver"
    if approval.expires_at is not None and approval.expires_at <= now:
        return f"expired at {approval.expires_at:%Y-%m-%d %H:%M} UTC"
    return "the evidence changed since (artifact, compiled library or reports)"


async def _version_page(
    request: Req,
    registry: Registry,
    name: str,
    number: int,
    now: datetime,
    *,
    notice: str | None = None,
    refusal: str | None = None,
    status_code: int = 200,
    comment: str = "",
) -> Template:
    model, found, policies = await registry.version(name, number)
    view = render_version(model, found, policies, now, gates=True)
    policy, policy_version = policies.of(model.risk_tier)
    return page(
        request,
        "version.html",
        status_code=status_code,
        name=name,
        risk_tier=model.risk_tier,
        version=view,
        policy=policy,
        lineage=[(k, v) for k, v in msgspec.structs.asdict(view.lineage).items() if v],
        policy_version=policy_version,
        why_not={a.position: _why_not_counted(a, now) for a in view.approvals},
        counted=sum(1 for a in view.approvals if a.counts),
        can_decide=_may(request, APPROVERS),
        can_audit=_may(request, AUDITORS),
        can_plan=_may(request, PROMOTERS),
        notice=notice,
        refusal=refusal,
        comment=comment,
    )
