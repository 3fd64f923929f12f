"""The dossier (model card) of one version: its history as JSON, and as Markdown for readers."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from app.store.codec import RecordedEvent
from domain.decide import require_version
from domain.events import (
    DataQualityAlert,
    DeploymentChanged,
    ExperimentEnded,
    ExperimentUpdated,
    Lineage,
    PerformanceAlert,
)
from domain.gates import evaluate_gates, lapse_reason, lifecycle_state
from domain.policy import GateResult, Policy, PolicyBook
from domain.state import Decision, Experiment, ModelState, VersionState

_S = TypeVar("_S", bound=msgspec.Struct)


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The model a version belongs to."""

    name: str
    risk_tier: str
    owner: str
    description: str
    tags: list[str]
    sensitive_features: list[str]


class VersionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The immutable facts of the version, and its lifecycle state now."""

    number: int
    state: str
    format: str
    artifact_sha256: str
    artifact_size: int
    feature_names: list[str]
    num_trees: int | None
    registered_at: datetime
    registered_by: str
    retired_at: datetime | None = None
    retired_reason: str | None = None


class CompiledInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The certified native build and its parity with the artifact."""

    library_sha256: str
    max_abs_diff: float
    rows_checked: int
    compiler: str
    flags: list[str]
    compile_seconds: float
    recorded_at: datetime
    max_scaled_diff: float | None = None
    # what computed the reference scores ("xgboost 3.2.0")
    reference: str = ""


class ComplianceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The latest fairness check."""

    passed: bool
    report_sha256: str
    policy_version: int
    metrics: dict[str, float]
    recorded_at: datetime


class PolicyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The policy of the model's risk tier now."""

    version: int
    policy: Policy


class ApprovalInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One approval or rejection, the digests it was bound to, and whether it counts now."""

    approver: str
    decision: str
    comment: str
    policy_version: int
    recorded_at: datetime
    position: int
    expires_at: datetime | None
    revoked: bool
    revoked_reason: str | None
    counts: bool
    reason: str | None  # why it does not count now
    artifact_sha256: str | None
    library_sha256: str | None
    report_sha256s: list[str]


class DeploymentEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A pointer change naming the version or removing it; `role_after`: its role after."""

    position: int
    recorded_at: datetime
    environment: str
    action: str
    strategy: str
    traffic_percent: float | None
    version: int
    champion: int | None
    challenger: int | None
    role_after: str | None
    actor: str
    reason: str
    policy_version: int
    gates_passed: bool | None


class Serving(msgspec.Struct, frozen=True, kw_only=True):
    """Where the version serves now, and the environment's strategy (of its challenger)."""

    environment: str
    role: str
    strategy: str
    traffic_percent: float | None


class DriftIncident(msgspec.Struct, frozen=True, kw_only=True):
    """A drift alert raised on the version."""

    statistic: str
    value: float
    threshold: float
    severity: str
    feature: str | None
    environment: str | None
    recorded_at: datetime
    position: int


class PerformanceIncident(msgspec.Struct, frozen=True, kw_only=True):
    """A `performance.alert` raised on the version: its live outcomes fell past a bound."""

    metric: str
    value: float
    baseline: float | None
    threshold: float
    severity: str
    rows: int
    environment: str
    reason: str
    recorded_at: datetime
    position: int


class DataQualityIncident(msgspec.Struct, frozen=True, kw_only=True):
    """A `data_quality.alert` raised on the inputs the version served."""

    check: str
    feature: str | None
    value: float
    baseline: float | None
    threshold: float
    severity: str
    rows: int
    environment: str
    reason: str
    recorded_at: datetime
    position: int


class ExperimentLook(msgspec.Struct, frozen=True, kw_only=True):
    """One look at an experiment (`experiment.updated`): outcomes per arm and the always-valid
    statistics of challenger - champion."""

    position: int
    recorded_at: datetime
    champion_outcomes: int
    challenger_outcomes: int
    champion_mean: float
    challenger_mean: float
    effect: float
    ci_low: float | None
    ci_high: float | None
    p_value: float
    # the guardrails crossed at this look ("p99_latency_ms 12 > 5")
    breached: list[str]


class ExperimentEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An A/B experiment the version took part in (as champion or challenger), its looks and
    its conclusion."""

    experiment_id: str
    environment: str
    role: str
    champion: int
    challenger: int
    traffic_percent: float
    metric: str
    metric_kind: str
    direction: str
    minimum_detectable_effect: float
    alpha: float
    started_at: datetime
    started_by: str
    position: int
    # running, winner, no_difference, guardrail_breach, stopped
    status: str
    winner: int | None
    conclusion: str | None
    ended_at: datetime | None
    looks: list[ExperimentLook]


class AsOf(msgspec.Struct, frozen=True, kw_only=True):
    """The instant the dossier describes."""

    position: int
    time: datetime


class Dossier(msgspec.Struct, frozen=True, kw_only=True):
    """The model card of one version, built from its history."""

    model: ModelInfo
    version: VersionInfo
    lineage: Lineage
    metrics: dict[str, float]
    params: dict[str, Any]
    compiled: CompiledInfo | None
    compliance: ComplianceInfo | None
    policy: PolicyInfo
    gates: list[GateResult]
    approvals: list[ApprovalInfo]
    deployments: list[DeploymentEntry]
    currently_serving: list[Serving]
    drift: list[DriftIncident]
    as_of: AsOf
    performance_alerts: list[PerformanceIncident] = msgspec.field(default_factory=list)
    data_quality_alerts: list[DataQualityIncident] = msgspec.field(default_factory=list)
    experiments: list[ExperimentEntry] = msgspec.field(default_factory=list)


def build_dossier(
    model: ModelState,
    number: int,
    policies: PolicyBook,
    events: Sequence[RecordedEvent],
    *,
    now: datetime,
    as_of_position: int,
) -> Dossier:
    """The dossier of version `number`; `events` is the model's history in log order."""
    v = require_version(model, number)
    policy, policy_version = policies.of(model.risk_tier)
    return Dossier(
        model=_copy(ModelInfo, model),
        version=_copy(VersionInfo, v, number=number, state=lifecycle_state(v, policy, now)),
        lineage=v.lineage,
        metrics=dict(v.metrics),
        params=dict(v.params),
        compiled=None if v.compiled is None else _copy(CompiledInfo, v.compiled),
        compliance=None if v.compliance is None else _copy(ComplianceInfo, v.compliance),
        policy=PolicyInfo(version=policy_version, policy=policy),
        gates=evaluate_gates(model, v, "production", policy, now),
        approvals=[_approval(d, v, now) for d in v.decisions],
        deployments=_history(model.name, number, events),
        currently_serving=[
            _copy(Serving, slot, environment=env, role=role)
            for env, slot in sorted(model.deployments.items())
            if (role := _role(number, slot.champion, slot.challenger))
        ],
        drift=[_copy(DriftIncident, a) for a in model.drift_alerts if a.version == number],
        as_of=AsOf(position=as_of_position, time=now),
        performance_alerts=[
            _copy(PerformanceIncident, r.event, r)
            for r in events
            if isinstance(r.event, PerformanceAlert) and r.event.version == number
        ],
        data_quality_alerts=[
            _copy(DataQualityIncident, r.event, r)
            for r in events
            if isinstance(r.event, DataQualityAlert) and r.event.version == number
        ],
        experiments=_experiments(model, number, events),
    )


def _experiments(
    model: ModelState, number: int, events: Sequence[RecordedEvent]
) -> list[ExperimentEntry]:
    taking_part = {
        eid: x
        for eid, x in model.experiments.items()
        if number in (x.started.champion, x.started.challenger)
    }
    looks: dict[str, list[ExperimentLook]] = {eid: [] for eid in taking_part}
    for rec in events:
        e = rec.event
        if isinstance(e, ExperimentUpdated) and e.experiment_id in looks:
            looks[e.experiment_id].append(
                ExperimentLook(
                    position=rec.position,
                    recorded_at=rec.recorded_at,
                    champion_outcomes=e.champion.outcomes,
                    challenger_outcomes=e.challenger.outcomes,
                    champion_mean=e.champion.mean,
                    challenger_mean=e.challenger.mean,
                    effect=e.effect,
                    ci_low=e.ci_low,
                    ci_high=e.ci_high,
                    p_value=e.p_value,
                    breached=[
                        f"{g.name} {g.value:g} > {g.limit:g}"
                        for g in e.guardrails
                        if not g.passed and g.value is not None
                    ],
                )
            )
    entries = [_experiment(x, number, looks[eid]) for eid, x in taking_part.items()]
    return sorted(entries, key=lambda entry: entry.position)


def _experiment(x: Experiment, number: int, looks: list[ExperimentLook]) -> ExperimentEntry:
    started, ended = x.started, x.ended
    conclusion = x.stopped_reason
    if isinstance(ended, ExperimentEnded):
        conclusion = ended.reason
    return ExperimentEntry(
        experiment_id=started.experiment_id,
        environment=started.environment,
        role="champion" if number == started.champion else "challenger",
        champion=started.champion,
        challenger=started.challenger,
        traffic_percent=started.traffic_percent,
        metric=started.metric.name,
        metric_kind=started.metric.kind,
        direction=started.metric.direction,
        minimum_detectable_effect=started.minimum_detectable_effect,
        alpha=started.alpha,
        started_at=x.started_at,
        started_by=x.started_by,
        position=x.position,
        status=x.status,
        winner=None if ended is None else ended.winner,
        conclusion=conclusion,
        ended_at=x.ended_at,
        looks=looks,
    )


def _approval(decision: Decision, version: VersionState, now: datetime) -> ApprovalInfo:
    reason = lapse_reason(decision, version, now)
    return _copy(ApprovalInfo, decision, counts=reason is None, reason=reason)


def _copy(cls: type[_S], *sources: object, **given: Any) -> _S:
    # fields not given come from the first source that has them (lists and dicts copied)
    for field in cls.__struct_fields__:
        if field not in given:
            value = next(getattr(s, field) for s in sources if hasattr(s, field))
            given[field] = copy.copy(value) if isinstance(value, list | dict) else value
    return cls(**given)


def _role(number: int, champion: int | None, challenger: int | None) -> str | None:
    return "champion" if number == champion else "challenger" if number == challenger else None


def _history(name: str, number: int, events: Sequence[RecordedEvent]) -> list[DeploymentEntry]:
    serving: dict[str, tuple[int | None, int | None]] = {}
    history = []
    for rec in events:
        e = rec.event
        if not isinstance(e, DeploymentChanged) or e.name != name:
            continue
        before = serving.get(e.environment, (None, None))
        serving[e.environment] = (e.champion, e.challenger)
        if number not in (e.version, e.champion, e.challenger, *before):
            continue
        history.append(
            _copy(
                DeploymentEntry,
                *(e, rec, rec.meta),  # version: the event's, not the stream's
                role_after=_role(number, e.champion, e.challenger),
                gates_passed=all(g.passed for g in e.gates) if e.gates else None,
            )
        )
    return history


def _cell(value: object) -> str:
    # pipes escaped, line breaks flattened, booleans as marks
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "✅" if value else "❌"
    text = value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value)
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


def _section(title: str, header: str, rows: Sequence[Sequence[object]]) -> list[str]:
    names = header.split(",")
    table = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    table += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return ["", f"## {title}", "", *(table if rows else ["none"])]


# a dossier as tables: (title, column names joined by commas, rows of values)
Table = tuple[str, str, list[Sequence[object]]]


def dossier_markdown(d: Dossier) -> str:
    """A Markdown model card for risk and compliance readers."""
    out = [f"# Model card: {_cell(d.model.name)} version {d.version.number}"]
    for title, header, rows in dossier_tables(d):
        out += _section(title, header, rows)
    return "\n".join(out) + "\n"


def dossier_tables(d: Dossier) -> list[Table]:
    """The model card's sections as tables (the Markdown card and the console show these)."""
    tables: list[Table] = []

    def add(title: str, header: str, rows: Sequence[Sequence[object]]) -> None:
        tables.append((title, header, list(rows)))

    m, v, c, k, p = d.model, d.version, d.compiled, d.compliance, d.policy
    limit = p.policy.parity_tolerance(v.format)
    state = f"{v.state}: {v.retired_reason}" if v.retired_reason else v.state
    serving = ", ".join(f"{s.environment} ({s.role})" for s in d.currently_serving) or "nowhere"
    add("Summary", "Field,Value", [
        ("As of", f"log position {d.as_of.position}, {_cell(d.as_of.time)}"),
        ("Model", m.name), ("Risk tier", m.risk_tier), ("Owner", m.owner),
        ("Description", m.description), ("Tags", ", ".join(m.tags)),
        ("Sensitive features", ", ".join(m.sensitive_features)),
        ("Version", v.number), ("State", state), ("Format", v.format), ("Trees", v.num_trees),
        ("Artifact", f"sha256 {v.artifact_sha256}, {v.artifact_size} bytes"),
        ("Features", f"{len(v.feature_names)}: {', '.join(v.feature_names)}"),
        ("Registered", f"{_cell(v.registered_at)} by {v.registered_by}"),
        ("Policy", f"{m.risk_tier} tier, version {p.version}"), ("Serving now", serving),
    ])  # fmt: skip
    lineage = msgspec.structs.asdict(d.lineage).items()
    add("Lineage", "Field,Value", [(f, x) for f, x in lineage if x])
    add("Metrics", "Metric,Value", sorted(d.metrics.items()))
    add("Native build and parity certificate", "Field,Value", [] if c is None else [
        ("Library sha256", c.library_sha256), ("Certified", c.recorded_at),
        ("Parity max abs diff", f"{c.max_abs_diff:g} over {c.rows_checked} rows"),
        ("Parity max scaled diff", "not measured" if c.max_scaled_diff is None
         else f"{c.max_scaled_diff:g} (limit {limit:g})"),
        ("Parity reference", c.reference or "not recorded"),
        ("Parity within limit",
         (c.max_abs_diff if c.max_scaled_diff is None else c.max_scaled_diff) <= limit),
        ("Compiler", " ".join([c.compiler, *c.flags])), ("Build time", f"{c.compile_seconds:g} s"),
    ])  # fmt: skip
    add("Compliance", "Field,Value", [] if k is None else [
        ("Passed", k.passed), ("Report sha256", k.report_sha256), ("Checked", k.recorded_at),
        ("Policy version", k.policy_version), *sorted(k.metrics.items()),
    ])  # fmt: skip
    add("Gates for production", "Gate,Passed,Detail",
        [(g.name, g.passed, g.detail) for g in d.gates])  # fmt: skip
    add("Approvals", "Approver,Decision,Counts,Policy,Time,Expires,Comment,Revoked", [
        (a.approver, a.decision, f"no: {a.reason}" if a.reason else "yes", a.policy_version,
         a.recorded_at, a.expires_at, a.comment,
         f"yes: {a.revoked_reason or ''}" if a.revoked else "no")
        for a in d.approvals
    ])  # fmt: skip
    heads = "#,Time,Environment,Action,Strategy,Champion,Challenger,Role after,By,Gates,Reason"
    add("Deployment history", heads, [
        (e.position, e.recorded_at, e.environment, e.action,
         e.strategy + (f" {e.traffic_percent:g}%" if e.traffic_percent is not None else ""),
         e.champion, e.challenger, e.role_after or "not serving", e.actor, e.gates_passed, e.reason)
        for e in d.deployments
    ])  # fmt: skip
    heads = "Time,Severity,Statistic,Feature,Value,Threshold,Environment"
    add("Drift incidents", heads, [
        (a.recorded_at, a.severity, a.statistic, a.feature, a.value, a.threshold, a.environment)
        for a in d.drift
    ])  # fmt: skip
    heads = "Time,Severity,Metric,Value,Baseline,Threshold,Rows,Environment,Reason"
    add("Performance alerts", heads, [
        (a.recorded_at, a.severity, a.metric, f"{a.value:.4g}", _number(a.baseline),
         f"{a.threshold:.4g}", a.rows, a.environment, a.reason)
        for a in d.performance_alerts
    ])  # fmt: skip
    heads = "Time,Severity,Check,Feature,Value,Baseline,Threshold,Rows,Environment,Reason"
    add("Data-quality alerts", heads, [
        (a.recorded_at, a.severity, a.check, a.feature, f"{a.value:.4g}", _number(a.baseline),
         f"{a.threshold:.4g}", a.rows, a.environment, a.reason)
        for a in d.data_quality_alerts
    ])  # fmt: skip
    heads = (
        "Experiment,Environment,Role,Champion,Challenger,Metric,MDE,Alpha,Started,Status,Conclusion"
    )
    add("Experiments", heads, [
        (x.experiment_id, x.environment, x.role, x.champion,
         f"{x.challenger} at {x.traffic_percent:g}%",
         f"{x.metric} ({x.metric_kind}, {x.direction})", f"{x.minimum_detectable_effect:g}",
         f"{x.alpha:g}", f"{_cell(x.started_at)} by {x.started_by}",
         x.status + (f": version {x.winner}" if x.winner is not None else ""), x.conclusion)
        for x in d.experiments
    ])  # fmt: skip
    heads = (
        "Experiment,#,Time,Outcomes (champion / challenger),Means,Effect,"
        "Always-valid interval,p,Guardrails crossed"
    )
    add("Experiment looks", heads, [
        (x.experiment_id, look.position, look.recorded_at,
         f"{look.champion_outcomes} / {look.challenger_outcomes}",
         f"{look.champion_mean:.4g} / {look.challenger_mean:.4g}", f"{look.effect:+.4g}",
         f"[{_number(look.ci_low, '-inf')}, {_number(look.ci_high, '+inf')}]",
         f"{look.p_value:.3g}", "; ".join(look.breached))
        for x in d.experiments for look in x.looks[-_LOOKS_SHOWN:]
    ])  # fmt: skip
    return tables


# the card shows each experiment's latest looks (the JSON dossier has every one)
_LOOKS_SHOWN = 20


def _number(value: float | None, missing: str = "—") -> str:
    return missing if value is None else f"{value:.4g}"
