"""Governance reads at scale: a model's history, the registry as of the past, rebuilds.

Over one log of N governance events across M models (default 1,000,000 over 1,000), every
goal is a ratio to a baseline measured in the same run on the same log:

G1  model history p99: `GET /v1/models/{name}/history`, called in-process (the Litestar app
    through httpx.ASGITransport, an auditor's token) vs a plain indexed
    `SELECT ... FROM events WHERE stream = $1 ORDER BY version` of the same rows (asyncpg,
    same pool); the service-level ratio (`Registry.history`, what the handler calls: the
    database renders each item's JSON) is reported beside it, and the handler's parts and
    the former path (`EventStore.read_stored` + `event_out`) for context
G2  registry as of a past position, p50: `Registry.view(str(position))` at 25, 50, 75 and
    99% of the log vs the current registry read `Registry.view(None)`
G3  projections rebuild: events/s through `Projector.rebuild()` vs the catch-up read rate
    of bench.append's E3 (`read_all` pages of 5,000, decoded) over the same log

The log is what the governance commands would append, built in Python for speed. Per model
about 90 versions, each registered (with its compile job) by the model's CI pipeline,
compiled by the worker, promoted to staging, compliance-checked where the tier's policy
requires it (and sometimes where not), approved by one or two approvers (never the
registrar; sometimes rejected, sometimes revoked and re-approved), promoted to production
in full or as a canary (a critical drift alert on a canary demotes it, caused by the alert),
watched for drift, sometimes rolled back; old versions retire, descriptions change, and the
tiers' policies are set now and then. Each append carries its actor's metadata, as a request
would, so the fold records who did what. All models are generated at once, so their events
interleave in the log as a fleet's do; a model's appends for one version are pipelined, and
group commit gathers the fleet's appends into large batches. The streams of a sample of
models are then re-decided by the pure deciders (`domain.decide`), event by event, to show
the log is one the server could have written.

The whole registry of the full log is large (1,000 models x ~98 versions): peak RSS of the
process is reported per phase. Redis is named but never contacted (the job dispatcher is
off: the log's jobs are done). The generator runs with
the cyclic GC paused (its own bookkeeping would cost it a third of its time); every measured
phase runs with the GC as the server has it, and reports the seconds the GC took.

The full run takes about ten minutes on the 2-core VM (G1's time budget is four of them);
`--quick` about a minute. Progress goes to stderr.

    uv run python -m bench.audit [--quick] [--events N] [--models M] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from app.http.audit import event_out
from app.http.schemas import HistoryOut
from app.main import create_app
from app.resources import Resources, open_resources
from app.services import tokens
from app.settings import Settings
from app.store import codec
from app.store.codec import CHAIN_COLUMNS, RecordedEvent, context_of
from app.store.events import EventStore
from bench import common
from bench.append import RAW_SCAN, READ_LIMIT, scan
from domain import commands as cmd
from domain import decide, handle
from domain import events as ev
from domain.decide import model_stream, policy_stream
from domain.errors import DomainError
from domain.model import evolve
from domain.policy import GateResult, Policy, PolicyBook, Threshold
from domain.state import ModelState
from domain.tokens import IssueToken

TIERS = ("low", "medium", "high")
TIER_WEIGHTS = (5, 3, 2)
# kept as the built-in defaults, so a policy change never strands a version mid-flight
REQUIRED_APPROVALS = {"low": 1, "medium": 1, "high": 2}
COMPLIANCE_REQUIRED = {"low": False, "medium": True, "high": True}
EXPIRY_DAYS = {"low": 365, "medium": 180, "high": 90}
TEAMS = ("fraud", "credit", "churn", "pricing", "ranking", "risk", "ads", "search")
KINDS = ("scorer", "classifier", "ranker", "forecaster", "detector")
FEATURES = tuple(
    f"{a}_{b}"
    for a in ("amount", "age", "tenure", "merchant", "device", "region", "hour", "balance")
    for b in ("raw", "log", "7d", "30d", "ratio")
)
APPROVERS = tuple(f"{n}@bank.example" for n in ("ana", "bo", "chen", "dee", "eli", "fay", "gus"))
WORKER, MONITOR, ADMIN = "model-ledger:worker", "drift-monitor", "platform-admin"
HISTORY_LIMIT = 1_000_000  # what the history handler asks for
HISTORY_SELECT = f"SELECT {CHAIN_COLUMNS} FROM events WHERE stream = $1 ORDER BY version"
AS_OF_FRACTIONS = (0.25, 0.5, 0.75, 0.99)
GOALS = {
    "g1": ("history http/select p99", "<=", 2.0),
    "g2": ("as_of/current p50", "<=", 10.0),
    "g3": ("rebuild/catch-up read", ">=", 0.5),
}


@dataclass(frozen=True)
class Sizes:
    events: int
    models: int
    history_models: int  # the sample of models whose history is read
    history_iterations: int  # per op, after warm-up, unless the budget runs out first
    history_block: int
    history_budget_seconds: float
    registry_rounds: int  # each: the current view, then one as-of view per position
    read_rounds: int  # catch-up read scans (the rebuild runs once)
    checked_models: int  # streams re-decided by the deciders


FULL = Sizes(1_000_000, 1_000, 64, 300, 10, 240.0, 3, 3, 20)
QUICK = Sizes(50_000, 100, 32, 120, 10, 60.0, 3, 3, 100)


# --- the log -----------------------------------------------------------------------------

Append = tuple[ev.EventMeta, list[ev.Event], list[uuid.UUID] | None]


@dataclass
class Slot:
    """What the fold's Deployment tracks of one environment, to choose valid changes."""

    champion: int | None = None
    challenger: int | None = None
    history: list[int] = field(default_factory=list)
    rolled_back: list[int] = field(default_factory=list)

    def move(self, champion: int | None, challenger: int | None, rollback: bool = False) -> None:
        if rollback and self.champion is not None:
            self.rolled_back.append(self.champion)
        if champion is not None and champion != self.champion:
            self.history.append(champion)
        self.champion, self.challenger = champion, challenger


@dataclass
class VersionSim:
    artifact_sha256: str
    library_sha256: str
    max_abs_diff: float
    auc: float
    report_sha256: str | None = None
    compliance_passed: bool | None = None
    retired: bool = False


class Ledger:
    """What the model generators share: policy versions, progress, planned policy changes."""

    def __init__(self, store: EventStore, policy_events: int, model_events: int) -> None:
        self.store = store
        self.policy_versions = dict.fromkeys(TIERS, 0)
        self.appended = 0
        self.appends = 0
        spacing = model_events / (policy_events + 1)
        self.plan = [(round(spacing * (i + 1)), TIERS[i % 3]) for i in range(policy_events)]
        self.next_policy = 0

    def policy(self, tier: str, revision: int) -> Policy:
        return Policy(
            required_approvals=REQUIRED_APPROVALS[tier],
            compliance_required=COMPLIANCE_REQUIRED[tier],
            metric_thresholds={"auc": Threshold(min=0.70 + 0.005 * (revision % 5))},
            approval_expiry_days=EXPIRY_DAYS[tier],
        )

    async def set_policies(self, everything: bool = False) -> None:
        """Append the policy changes whose turn has come (all that are left, at the end)."""
        while self.next_policy < len(self.plan) and (
            everything or self.appended >= self.plan[self.next_policy][0]
        ):
            index, tier = self.next_policy, self.plan[self.next_policy][1]
            self.next_policy += 1  # before the await: other models must not take it too
            meta = ev.EventMeta(actor=ADMIN, role="admin", request_id=uuid.uuid4().hex[:16])
            event = ev.PolicySet(risk_tier=tier, policy=self.policy(tier, index))  # type: ignore[arg-type]
            result = await self.store.append(
                policy_stream(tier), [event], meta=meta, expected_version=None
            )
            self.policy_versions[tier] = max(self.policy_versions[tier], result.stream_version)


class ModelSim:
    """One model's governance story, one version at a time, as appends of its actors."""

    def __init__(self, index: int, seed: int, ledger: Ledger) -> None:
        rng = self.rng = random.Random(seed * 1_000_003 + index)
        team = TEAMS[index % len(TEAMS)]
        self.name = f"{team}-{rng.choice(KINDS)}-{index:04d}"
        self.tier = rng.choices(TIERS, TIER_WEIGHTS)[0]
        self.pipeline = f"ci-{team}"
        self.approvers = rng.sample(APPROVERS, 4)
        self.features = rng.sample(FEATURES, rng.randint(8, 24))
        self.ledger = ledger
        self.versions: dict[int, VersionSim] = {}
        self.slots = {"staging": Slot(), "production": Slot()}

    def _hex(self, bits: int = 256) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def _meta(self, actor: str, role: str, **extra: str) -> ev.EventMeta:
        if actor == WORKER:  # jobs carry their job id, not a request id
            return ev.EventMeta(actor=actor, role=role, **extra)
        return ev.EventMeta(actor=actor, role=role, request_id=self._hex(64), **extra)

    def registration(self) -> list[Append]:
        event = ev.ModelRegistered(
            name=self.name,
            risk_tier=self.tier,  # type: ignore[arg-type]
            description=f"{self.name.replace('-', ' ')} for the {self.pipeline[3:]} team",
            owner=f"{self.pipeline[3:]}-ml@bank.example",
            tags=[self.pipeline[3:], "tabular", "batch" if self.rng.random() < 0.5 else "online"],
            sensitive_features=[f for f in self.features if f.startswith(("age", "region"))],
        )
        return [(self._meta(self.pipeline, "ci"), [event], None)]

    def lifecycle(self, number: int) -> list[Append]:
        """Version `number`: registered, built, checked, decided, deployed, watched."""
        rng, name, tier = self.rng, self.name, self.tier
        policy_version = self.ledger.policy_versions[tier]
        out: list[Append] = []
        version = self.versions[number] = VersionSim(
            artifact_sha256=self._hex(),
            library_sha256=self._hex(),
            max_abs_diff=rng.choice((0.0, 0.0, 1e-12, 4e-11)),
            auc=round(rng.uniform(0.76, 0.95), 4),
        )
        job = str(self._uuid())
        registered = ev.VersionRegistered(
            name=name,
            version=number,
            artifact_sha256=version.artifact_sha256,
            artifact_size=rng.randint(40_000, 4_000_000),
            format=rng.choice(("lightgbm", "lightgbm", "lightgbm", "sklearn-skops")),
            feature_names=self.features,
            metrics={
                "auc": version.auc,
                "logloss": round(rng.uniform(0.2, 0.5), 4),
                "precision_at_0_5": round(rng.uniform(0.6, 0.9), 4),
                "recall_at_0_5": round(rng.uniform(0.5, 0.85), 4),
            },
            params={
                "num_leaves": rng.choice((15, 31, 63)),
                "learning_rate": rng.choice((0.02, 0.05, 0.1)),
                "n_estimators": rng.choice((100, 200, 400)),
                "seed": number,
            },
            lineage=ev.Lineage(
                git_commit=self._hex(160),
                ci_run_url=f"https://ci.bank.example/{self.pipeline}/runs/{rng.randint(1, 10**6)}",
                dataset_sha256=self._hex(),
                training_job=f"train-{name}-{number}",
            ),
            num_trees=rng.choice((100, 200, 400)),
        )
        requested = ev.JobRequested(job_id=job, kind="compile", name=name, version=number)
        out.append((self._meta(self.pipeline, "ci"), [registered, requested], None))
        compiled = ev.VersionCompiled(
            name=name,
            version=number,
            library_sha256=version.library_sha256,
            max_abs_diff=version.max_abs_diff,
            rows_checked=10_000,
            compiler="tl2cgen 1.0.0 / gcc 12.2.0",
            flags=["-O2", "-fPIC"],
            compile_seconds=round(rng.uniform(2.0, 40.0), 2),
            job_id=job,
        )
        out.append((self._meta(WORKER, "ci", correlation_id=job), [compiled], None))
        out.append((self._meta(self.pipeline, "ci"), [self._promote("staging", number)], None))
        if COMPLIANCE_REQUIRED[tier] or rng.random() < 0.3:
            job = str(self._uuid())
            version.report_sha256 = self._hex()
            version.compliance_passed = rng.random() > 0.05
            requested = ev.JobRequested(job_id=job, kind="compliance", name=name, version=number)
            out.append((self._meta(self.pipeline, "ci"), [requested], None))
            checked = ev.ComplianceChecked(
                name=name,
                version=number,
                passed=version.compliance_passed,
                report_sha256=version.report_sha256,
                policy_version=policy_version,
                metrics={
                    "demographic_parity_difference": round(rng.uniform(0.0, 0.12), 4),
                    "equalized_odds_difference": round(rng.uniform(0.0, 0.12), 4),
                },
                job_id=job,
            )
            out.append((self._meta(WORKER, "ci", correlation_id=job), [checked], None))
            if not version.compliance_passed and COMPLIANCE_REQUIRED[tier]:
                return out + self._aftercare(number)
        approvers = rng.sample(self.approvers, REQUIRED_APPROVALS[tier] + 1)
        if rng.random() < 0.04:
            rejected = ev.VersionRejected(
                name=name,
                version=number,
                approver=approvers[0],
                comment="holdout AUC drop on the newest cohort",
                policy_version=policy_version,
            )
            out.append((self._meta(approvers[0], "approver"), [rejected], None))
            return out + self._aftercare(number)
        out.extend(
            (self._meta(approver, "approver"), [self._approval(number, approver)], None)
            for approver in approvers[:-1]
        )
        if rng.random() < 0.02:  # an approver withdraws; the spare one approves instead
            revoked = ev.ApprovalRevoked(
                name=name, version=number, approver=approvers[0], reason="approved the wrong run"
            )
            spare = approvers[-1]
            out.append((self._meta(approvers[0], "approver"), [revoked], None))
            out.append((self._meta(spare, "approver"), [self._approval(number, spare)], None))
        production = self.slots["production"]
        if production.champion is not None and rng.random() < 0.35:
            traffic = float(rng.choice((5, 10, 25)))
            canary = self._promote("production", number, "canary", traffic)
            out.append((self._meta(self.pipeline, "ci"), [canary], None))
            critical = rng.random() < 0.12
            alert_id = self._uuid()
            alert = ev.DriftDetected(
                name=name,
                version=number,
                statistic="psi",
                value=round(rng.uniform(0.3, 0.6) if critical else rng.uniform(0.05, 0.2), 4),
                threshold=0.25,
                severity="critical" if critical else "info",
                feature=rng.choice(self.features),
                environment="production",
            )
            alert_meta = self._meta(MONITOR, "ci")
            out.append((alert_meta, [alert], [alert_id]))
            if critical:  # what the drift policy does, caused by the alert
                demotion = ev.DeploymentChanged(
                    name=name,
                    environment="production",
                    action="demotion",
                    version=number,
                    champion=production.champion,
                    reason=f"critical drift: psi = {alert.value:g} > 0.25",
                )
                production.move(production.champion, None)
                cause = str(alert_id)
                action_meta = msgspec.structs.replace(
                    alert_meta, causation_id=cause, correlation_id=cause
                )
                out.append((action_meta, [demotion], None))
                return out + self._aftercare(number)
        out.append((self._meta(self.pipeline, "ci"), [self._promote("production", number)], None))
        if rng.random() < 0.04:
            bad = {*production.rolled_back, production.champion}
            earlier = [
                v
                for v in reversed(production.history)
                if v not in bad and not self.versions[v].retired
            ]
            if earlier:
                rollback = ev.DeploymentChanged(
                    name=name,
                    environment="production",
                    action="rollback",
                    version=earlier[0],
                    champion=earlier[0],
                    reason="error rate above the SLO after the release",
                )
                production.move(earlier[0], None, rollback=True)
                out.append((self._meta(self.pipeline, "ci"), [rollback], None))
        return out + self._aftercare(number)

    def _approval(self, number: int, approver: str) -> ev.VersionApproved:
        version = self.versions[number]
        return ev.VersionApproved(
            name=self.name,
            version=number,
            approver=approver,
            comment=self.rng.choice(
                ("", "LGTM", "reviewed the model card and the fairness report")
            ),
            policy_version=self.ledger.policy_versions[self.tier],
            artifact_sha256=version.artifact_sha256,
            library_sha256=version.library_sha256,
            report_sha256s=[version.report_sha256] if version.report_sha256 else [],
            expires_at=datetime.now(UTC) + timedelta(days=EXPIRY_DAYS[self.tier]),
        )

    def _promote(
        self, environment: str, number: int, strategy: str = "full", traffic: float | None = None
    ) -> ev.DeploymentChanged:
        slot, full = self.slots[environment], strategy == "full"
        event = ev.DeploymentChanged(
            name=self.name,
            environment=environment,
            action="promotion",
            version=number,
            champion=number if full else slot.champion,
            challenger=None if full else number,
            strategy=strategy,  # type: ignore[arg-type]
            traffic_percent=traffic,
            policy_version=self.ledger.policy_versions[self.tier],
            gates=self._gates(environment, number),
        )
        slot.move(event.champion, event.challenger)
        return event

    def _gates(self, environment: str, number: int) -> list[GateResult]:
        version, tier = self.versions[number], self.tier
        gates = [
            GateResult(name="not_retired", passed=True, detail="version is active"),
            GateResult(
                name="compiled",
                passed=True,
                detail=f"parity max abs diff {version.max_abs_diff:g} over 10000 rows "
                "(limit 1e-09)",
            ),
        ]
        if environment != "production":
            return gates
        gates.append(
            GateResult(name="metric:auc", passed=True, detail=f"auc = {version.auc:g} (>= 0.7)")
        )
        if COMPLIANCE_REQUIRED[tier]:
            detail = f"passed (report {(version.report_sha256 or '')[:12]})"
            gates.append(GateResult(name="compliance", passed=True, detail=detail))
        need = REQUIRED_APPROVALS[tier]
        detail = f"{need} of {need} required approvals ({tier} risk)"
        return [*gates, GateResult(name="approvals", passed=True, detail=detail)]

    def _aftercare(self, number: int) -> list[Append]:
        """Drift watch on what serves, retirement of old versions, the odd description edit."""
        rng, name = self.rng, self.name
        out: list[Append] = []
        serving = self.slots["production"].champion or self.slots["staging"].champion or number
        environment = "production" if self.slots["production"].champion else "staging"
        if rng.random() < 0.3:
            job = ev.JobRequested(
                job_id=str(self._uuid()), kind="drift", name=name, version=serving
            )
            out.append((self._meta(MONITOR, "ci"), [job], None))
        for _ in range(1 + (rng.random() < 0.3)):
            value = rng.uniform(0.02, 0.35)
            severity = "info" if value < 0.1 else "warning" if value < 0.25 else "critical"
            alert = ev.DriftDetected(
                name=name,
                version=serving,
                statistic=rng.choice(("psi", "ks", "js_divergence")),
                value=round(value, 4),
                threshold=0.25,
                severity=severity,  # type: ignore[arg-type]
                feature=rng.choice(self.features),
                environment=environment,
            )
            out.append((self._meta(MONITOR, "ci"), [alert], None))
        old = self.versions.get(number - 8)
        if old is not None and not old.retired and rng.random() < 0.7:
            live = {s for slot in self.slots.values() for s in (slot.champion, slot.challenger)}
            if number - 8 not in live:
                old.retired = True
                retired = ev.VersionRetired(name=name, version=number - 8, reason="superseded")
                out.append((self._meta(self.pipeline, "ci"), [retired], None))
        if rng.random() < 0.01:
            updated = ev.ModelUpdated(
                name=name, description=f"{name} (retrained monthly, v{number} and later)"
            )
            out.append((self._meta(ADMIN, "admin"), [updated], None))
        return out


def _trim(appends: list[Append], budget: int) -> tuple[list[Append], int]:
    """The appends cut to at most `budget` events (the model's quota ends mid-story)."""
    kept, count = [], 0
    for meta, events, ids in appends:
        if count >= budget:
            break
        take = events[: budget - count]
        kept.append((meta, take, ids[: len(take)] if ids is not None else None))
        count += len(take)
    return kept, count


async def generate(store: EventStore, sizes: Sizes, seed: int) -> dict[str, Any]:
    """Append `sizes.events` events over `sizes.models` models, every model at once."""
    policy_events = max(3, sizes.events // 25_000)
    model_events = sizes.events - policy_events
    if model_events < 2 * sizes.models:
        raise SystemExit("--events must be at least twice --models (plus a few policy events)")
    ledger = Ledger(store, policy_events, model_events)
    quotas = [
        model_events // sizes.models + (i < model_events % sizes.models)
        for i in range(sizes.models)
    ]
    sims = [ModelSim(i, seed, ledger) for i in range(sizes.models)]
    versions = [0] * sizes.models

    async def run(index: int) -> None:
        sim, remaining, number = sims[index], quotas[index], 0
        stream = model_stream(sim.name)
        while remaining > 0:
            story = sim.registration() if number == 0 else sim.lifecycle(number)
            appends, count = _trim(story, remaining)
            versions[index], remaining, number = number, remaining - count, number + 1
            await asyncio.gather(
                *(
                    store.append(stream, events, meta=meta, expected_version=None, event_ids=ids)
                    for meta, events, ids in appends
                )
            )
            ledger.appended += count
            ledger.appends += len(appends)
            await ledger.set_policies()

    # The generator's own bookkeeping (every model's versions and slots) would make each
    # full collection walk ~100,000 objects; it makes no cycles worth collecting meanwhile.
    gc.collect()
    gc.disable()
    with common.GcClock().active() as gc_clock:
        start = time.perf_counter()
        reporter = asyncio.create_task(_progress(ledger, sizes.events, start))
        try:
            await asyncio.gather(*(run(i) for i in range(sizes.models)))
            await ledger.set_policies(everything=True)
        finally:
            reporter.cancel()
            gc.enable()
        elapsed = time.perf_counter() - start
    total = ledger.appended + len(ledger.plan)
    if total != sizes.events:
        raise RuntimeError(f"generated {total} events, meant {sizes.events}")
    return {
        "events": total,
        "seconds": round(elapsed, 1),
        "events_per_s": round(total / elapsed),
        "appends": ledger.appends + len(ledger.plan),
        "events_per_append": round(total / (ledger.appends + len(ledger.plan)), 2),
        "policy_events": len(ledger.plan),
        "versions": sum(versions),
        "versions_per_model": round(sum(versions) / sizes.models, 1),
        "gc_seconds": round(gc_clock.seconds, 2),
        "names": [s.name for s in sims],
    }


async def timed_projection(res: Resources, run: Callable[[], Awaitable[int]]) -> dict[str, Any]:
    """Events/s of a projector run (catch-up or rebuild), logging its progress meanwhile."""

    async def progress() -> None:
        while True:
            await asyncio.sleep(30)
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                # committed checkpoints: a projection's run may be one long transaction
                rows = await res.pool.fetch(
                    "SELECT name, position FROM projection_checkpoints ORDER BY name"
                )
                log("  checkpoints " + ", ".join(f"{r[0]} {r[1]:,}" for r in rows))

    with common.GcClock().active() as gc_clock:
        reporter = asyncio.create_task(progress())
        start = time.perf_counter()
        try:
            reached = await run()
        finally:
            reporter.cancel()
        elapsed = time.perf_counter() - start
    return {
        "events": reached,
        "seconds": round(elapsed, 1),
        "events_per_s": round(reached / elapsed),
        "gc_seconds": round(gc_clock.seconds, 2),
    }


async def _progress(ledger: Ledger, total: int, start: float) -> None:
    while True:
        await asyncio.sleep(15)
        done = ledger.appended
        rate = done / (time.perf_counter() - start)
        log(f"  generated {done:,}/{total:,} ({rate:,.0f} ev/s)")


# --- the log, re-decided -----------------------------------------------------------------


def _redecided(
    state: ModelState | None,
    recorded: RecordedEvent,
    policies: PolicyBook,
    alerts: dict[str, ev.DriftDetected],
) -> None:
    """Raise unless the deciders, given the state before it, would emit this event."""
    event, meta, at = recorded.event, recorded.meta, recorded.recorded_at
    tier = state.risk_tier if state is not None else "low"
    policy, policy_version = policies.of(tier)
    facts = cmd.Facts(now=at, policy=policy, policy_version=policy_version)
    command: cmd.Command | None = None
    match event:
        case ev.ModelRegistered():
            command = cmd.RegisterModel(**_fields(event))
        case ev.ModelUpdated():
            command = cmd.UpdateModel(**_fields(event))
        case ev.VersionRegistered():
            command = cmd.RegisterVersion(
                name=event.name,
                compile_job_id="-",
                artifact_sha256=event.artifact_sha256,
                artifact_size=event.artifact_size,
                format=event.format,
                model_feature_names=event.feature_names,
                metrics=event.metrics,
                params=event.params,
                lineage=event.lineage,
                num_trees=event.num_trees,
            )
        case ev.JobRequested() | ev.VersionCompiled() | ev.ComplianceChecked():
            # jobs and their results: only a version that exists can have them
            decide.require_version(decide.require_model(event.name, state), event.version or 0)
        case ev.VersionApproved() | ev.VersionRejected():
            if event.approver != meta.actor:
                raise DomainError(f"{meta.actor} recorded a decision of {event.approver}")
            command = cmd.DecideVersion(
                name=event.name,
                version=event.version,
                approver=meta.actor,
                decision="approve" if isinstance(event, ev.VersionApproved) else "reject",
                comment=event.comment,
            )
        case ev.ApprovalRevoked():
            command = cmd.RevokeDecision(
                name=event.name, version=event.version, approver=meta.actor, reason=event.reason
            )
        case ev.DeploymentChanged(action="promotion"):
            change = cmd.Promote(
                version=event.version,
                environment=event.environment,
                strategy=event.strategy,
                traffic_percent=event.traffic_percent,
            )
            command = cmd.ChangeDeployments(name=event.name, changes=[change])
        case ev.DeploymentChanged(action="rollback"):
            command = cmd.Rollback(
                name=event.name, environment=event.environment, reason=event.reason
            )
        case ev.DeploymentChanged(action="demotion"):
            command = cmd.RespondToDrift(name=event.name, alert=alerts[meta.causation_id or ""])
        case ev.VersionRetired():
            command = cmd.RetireVersion(name=event.name, version=event.version, reason=event.reason)
        case ev.DriftDetected():
            # the command's fields only: the event also records the job that measured it
            fields = {k: getattr(event, k) for k in cmd.RaiseDriftAlert.__struct_fields__}
            command = cmd.RaiseDriftAlert(**fields)
            alerts[str(recorded.event_id)] = event
        case _:
            raise DomainError(f"unexpected {ev.event_type(event)} in a model stream")
    if command is not None:
        expected = handle.decide(command, state, facts)
        if isinstance(command, cmd.RegisterVersion):
            expected = expected[:1]  # the compile request is checked as a job event
        keys = ("version", "champion", "challenger", "strategy", "environment", "action")
        if len(expected) != 1 or any(
            getattr(expected[0], k, None) != getattr(event, k, None) for k in keys
        ):
            raise DomainError(f"the deciders would append {expected}, the log has {event}")


def _fields(struct: Any) -> dict[str, Any]:
    return {name: getattr(struct, name) for name in struct.__struct_fields__}


async def check_with_deciders(store: EventStore, names: list[str]) -> dict[str, Any]:
    """Replay sampled model streams through the deciders; count what they would refuse."""
    policy_events = sorted(
        [e for tier in TIERS for e in await store.read_stream(policy_stream(tier))],
        key=lambda e: e.position,
    )
    checked, refused = 0, []
    for name in names:
        state: ModelState | None = None
        policies, applied = PolicyBook(), 0
        alerts: dict[str, ev.DriftDetected] = {}
        for recorded in await store.read_stream(model_stream(name)):
            while (
                applied < len(policy_events) and policy_events[applied].position < recorded.position
            ):
                policy = policy_events[applied]
                assert isinstance(policy.event, ev.PolicySet)
                policies.set(policy.event.risk_tier, policy.event.policy, policy.version)
                applied += 1
            checked += 1
            try:
                _redecided(state, recorded, policies, alerts)
            except DomainError as error:
                refused.append(f"{name}@{recorded.version}: {error}"[:300])
            state = evolve(state, recorded.event, context_of(recorded))
    return {"models": len(names), "events": checked, "refused": len(refused), "first": refused[:5]}


# --- G1: a model's history ---------------------------------------------------------------


async def g1_history(
    res: Resources, settings: Settings, names: list[str], sizes: Sizes
) -> dict[str, Any]:
    store, pool = res.store, res.pool
    issued = await tokens.issue(
        store,
        res.projector,
        res.minter,
        IssueToken(subject="bench-auditor", role="auditor"),
        meta=ev.EventMeta(actor="bench-setup", role="admin"),
    )
    headers = {"Authorization": f"Bearer {issued.token}"}
    head, _ = await store.head()
    sample = random.Random(7).sample(names, min(sizes.history_models, len(names)))
    app = create_app(settings, resources=res)
    async with (
        common.app_lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
            base_url="http://ledger.bench",
        ) as client,
    ):
        # the same rows on every path, or the comparison means nothing
        probe = await client.get(f"/v1/models/{sample[0]}/history", headers=headers)
        probe.raise_for_status()
        rows = await pool.fetch(HISTORY_SELECT, model_stream(sample[0]))
        body = probe.json()
        if [e["position"] for e in body["events"]] != [r["position"] for r in rows]:
            raise RuntimeError("the history endpoint and the SELECT disagree")
        sizes_kib = len(probe.content) / 1024

        def cycling(read: Callable[[str], Awaitable[object]]) -> Callable[[], Awaitable[object]]:
            models = itertools.cycle(sample)
            return lambda: read(next(models))

        async def http(name: str) -> None:
            response = await client.get(f"/v1/models/{name}/history", headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"history of {name}: HTTP {response.status_code}")

        async def service(name: str) -> object:
            return await res.registry.history(name, None, None)

        async def select(name: str) -> object:
            return await pool.fetch(HISTORY_SELECT, model_stream(name))

        ops = {"http": cycling(http), "service": cycling(service), "select": cycling(select)}
        samples = await common.budgeted_latencies(
            ops,
            sizes.history_iterations,
            sizes.history_block,
            warmup=min(len(sample), 10),
            budget_seconds=sizes.history_budget_seconds,
            min_iterations=3 * sizes.history_block,
        )
    figures: dict[str, Any] = {
        "models_sampled": len(sample),
        "events_per_history": round(len(rows)),
        "response_kib": round(sizes_kib),
        "iterations": len(samples["http"]),
    }
    for name, values in samples.items():
        figures |= {f"{name}_p{q}_us": round(common.percentile(values, q)) for q in (50, 99)}
    figures["parts_ms"] = await _history_parts(res, sample, head)
    p99 = {name: common.percentile(values, 99) for name, values in samples.items()}
    p50 = {name: common.percentile(values, 50) for name, values in samples.items()}
    figures["service_ratio"] = round(p99["service"] / p99["select"], 2)
    figures["http_p50_ratio"] = round(p50["http"] / p50["select"], 2)
    return figures | {"ratio": round(p99["http"] / p99["select"], 2)}


# The handler's former path, for context (not a goal): the model's state decoded to check it
# exists, the instant, `EventStore.read_stored` (whose prepared statement, once PostgreSQL
# switches it to a generic plan, walks the primary key over the whole log), every row made an
# `EventOut`; and the same rows read by the (stream, version) index, decoded by asyncpg.
HISTORY_BY_VERSION = (
    f"SELECT {CHAIN_COLUMNS} FROM events WHERE stream = $1 AND position <= $2 ORDER BY version"
)


async def _history_parts(res: Resources, sample: list[str], head: int) -> dict[str, float]:
    """Median ms of each step the history handler takes, outside HTTP, and of alternatives."""
    timings: dict[str, list[float]] = {
        "history": [],
        "render": [],
        "alt_model_state": [],
        "alt_instant": [],
        "alt_read_stored": [],
        "alt_render_decoded": [],
        "alt_read_by_version": [],
    }

    def lap(part: str, since: float) -> float:
        now = time.perf_counter()
        timings[part].append(now - since)
        return now

    for name in sample[:10]:
        start = time.perf_counter()
        position, events = await res.registry.history(name, None, None)
        start = lap("history", start)
        msgspec.json.encode(
            HistoryOut(model=name, as_of_position=position, events=msgspec.Raw(events))  # type: ignore[arg-type]
        )
        start = lap("render", start)
        await res.registry.model_state(name)
        start = lap("alt_model_state", start)
        await res.registry.instant(None)
        start = lap("alt_instant", start)
        rows = await res.store.read_stored(0, HISTORY_LIMIT, stream=model_stream(name), until=head)
        start = lap("alt_read_stored", start)
        msgspec.json.encode(
            HistoryOut(model=name, as_of_position=head, events=[event_out(r) for r in rows])
        )
        start = lap("alt_render_decoded", start)
        by_version = await res.pool.fetch(HISTORY_BY_VERSION, model_stream(name), head)
        [codec.stored_from_row(r) for r in by_version]
        lap("alt_read_by_version", start)
    return {k: round(common.median(v) * 1000, 2) for k, v in timings.items()}


# --- G2: the registry as of the past -----------------------------------------------------


async def g2_registry(res: Resources, sizes: Sizes) -> dict[str, Any]:
    registry = res.registry
    head, _ = await res.store.head()
    positions = [max(1, int(head * f)) for f in AS_OF_FRACTIONS]
    current: list[float] = []
    past: dict[int, list[float]] = {p: [] for p in positions}
    await registry.view(None)  # warm-up: plans, buffers
    with common.GcClock().active() as gc_clock:
        for _ in range(sizes.registry_rounds):
            start = time.perf_counter()
            view = await registry.view(None)
            current.append(time.perf_counter() - start)
            for position in positions:
                start = time.perf_counter()
                await registry.view(str(position))
                past[position].append(time.perf_counter() - start)
                log(f"  as_of {position}: {past[position][-1]:.2f} s")
    # where the time goes (context): state vs rendering, the view's size as JSON
    start = time.perf_counter()
    await registry.current_state()
    current_state_s = time.perf_counter() - start
    middle = positions[1]
    start = time.perf_counter()
    await registry.state_at(middle)
    state_at_s = time.perf_counter() - start
    start = time.perf_counter()
    body = msgspec.json.encode(view)
    encode_s = time.perf_counter() - start
    # the auditor's usual question: one model as of an instant (`?model=`)
    names = [m.name for m in view.models]
    sample = names[:: max(1, len(names) // 20)]
    one: list[float] = []
    for name in sample:
        for position in positions:
            start = time.perf_counter()
            await registry.view(str(position), [name])
            one.append(time.perf_counter() - start)
    pooled = [s for values in past.values() for s in values]
    current_p50, past_p50 = common.median(current), common.median(pooled)
    return {
        "positions": positions,
        "current_p50_ms": round(current_p50 * 1000),
        "as_of_p50_ms": round(past_p50 * 1000),
        "as_of_p50_ms_by_position": {
            str(p): round(common.median(v) * 1000) for p, v in past.items()
        },
        "ratio_by_position": {
            str(p): round(common.median(v) / current_p50, 2) for p, v in past.items()
        },
        "current_state_ms": round(current_state_s * 1000),
        "state_at_middle_ms": round(state_at_s * 1000),
        "one_model_as_of_p50_ms": round(common.median(one) * 1000, 1),
        "one_model_as_of_p99_ms": round(sorted(one)[int(len(one) * 0.99)] * 1000, 1),
        "versions_in_view": sum(len(m.versions) for m in view.models),
        "view_json_mib": round(len(body) / 2**20, 1),
        "view_json_encode_ms": round(encode_s * 1000),
        "gc_seconds": round(gc_clock.seconds, 2),
        "gc_collections": gc_clock.collections,
        "ratio": round(past_p50 / current_p50, 2),
    }


# --- G3: rebuild vs the catch-up read ----------------------------------------------------


async def fingerprint(pool: asyncpg.Pool, tables: list[str]) -> dict[str, str]:
    """A digest of every projection table's rows: a rebuild must reproduce them exactly.

    Each row is digested by its columns' text (bytea columns by their md5, snapshots being
    gigabytes), and the row digests in sorted order digested again.
    """
    digests = {}
    for table in tables:
        columns = await pool.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = $1 ORDER BY ordinal_position",
            table,
        )
        parts = ", ".join(
            f"md5({c['column_name']})" if c["data_type"] == "bytea" else f"{c['column_name']}::text"
            for c in columns
        )
        digests[table] = await pool.fetchval(
            f"SELECT count(*) || ':' || coalesce(md5(string_agg(d, ',' ORDER BY d)), '') "
            f"FROM (SELECT md5(concat_ws('|', {parts})) AS d FROM {table}) rows"
        )
    return digests


async def g3_rebuild(res: Resources, sizes: Sizes) -> dict[str, Any]:
    store, pool, projector = res.store, res.pool, res.projector
    head, _ = await store.head()
    tables = [t for p in projector.projections for t in p.tables]

    async def decoded(position: int) -> list[Any]:
        return await store.read_all(position, limit=READ_LIMIT)

    async def raw(position: int) -> list[Any]:
        rows: list[Any] = await pool.fetch(RAW_SCAN, position, READ_LIMIT)
        return rows

    await scan(raw, 0, head)  # warm-up
    reads = [await scan(decoded, 0, head) for _ in range(sizes.read_rounds)]
    raw_rate = await scan(raw, 0, head)
    log(f"  catch-up read {common.median(reads):,.0f} ev/s decoded; rebuilding")
    before = await fingerprint(pool, tables)
    rebuild = await timed_projection(res, projector.rebuild)
    after = await fingerprint(pool, tables)
    read_rate = common.median(reads)
    return {
        "events": head,
        "read_decoded_eps": round(read_rate),
        "read_rounds_eps": [round(r) for r in reads],
        "raw_scan_eps": round(raw_rate),
        "rebuild_seconds": rebuild["seconds"],
        "rebuild_eps": rebuild["events_per_s"],
        "rebuild_gc_seconds": rebuild["gc_seconds"],
        "views_identical_after_rebuild": before == after,
        "ratio": round(rebuild["events_per_s"] / read_rate, 3),
    }


# --- the run -----------------------------------------------------------------------------

_T0 = time.perf_counter()


def log(message: str) -> None:
    memory = common.rss_mib()
    print(
        f"[{time.perf_counter() - _T0:7.1f}s rss {memory.get('rss', 0):>6} MiB] {message}",
        file=sys.stderr,
        flush=True,
    )


async def main(sizes: Sizes, seed: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"sizes": asdict(sizes), "seed": seed, "memory_mib": {}}

    def memory(phase: str) -> None:
        figures["memory_mib"][phase] = common.rss_mib()

    async with (
        common.bench_server() as (server_url, source),
        common.fresh_database(server_url, prefix="ml_audit") as url,
    ):
        with tempfile.TemporaryDirectory(prefix="ml-audit-") as home:
            settings = Settings(
                home=Path(home),
                database_url=url,
                redis_url=os.environ.get("MODEL_LEDGER_BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
                checkpoint_interval_seconds=3600,
                # the generated log's jobs are done; relaying its requests would fill Redis
                dispatch_jobs=False,
            )
            async with open_resources(settings) as res:
                figures["notes"] = await common.machine_notes(res.pool, source)
                log(f"generating {sizes.events:,} events over {sizes.models:,} models")
                generated = await generate(res.store, sizes, seed)
                names = generated.pop("names")
                figures["generate"] = generated
                log(f"generated: {generated}")
                memory("generate")
                await res.pool.execute("VACUUM ANALYZE events")  # what autovacuum keeps up
                figures["catch_up"] = await timed_projection(res, res.projector.catch_up)
                log(f"catch-up: {figures['catch_up']}")
                memory("catch_up")
                await res.pool.execute("VACUUM ANALYZE")
                checked = names[:: max(1, len(names) // sizes.checked_models)]
                figures["decided"] = await check_with_deciders(res.store, checked)
                log(f"re-decided: {figures['decided']}")
                figures["database"] = {
                    "size_mib": round(
                        await res.pool.fetchval("SELECT pg_database_size(current_database())")
                        / 2**20
                    ),
                    "events_mib": round(
                        await res.pool.fetchval("SELECT pg_total_relation_size('events')") / 2**20
                    ),
                    **{
                        f"{table}_mib": round(
                            await res.pool.fetchval("SELECT pg_total_relation_size($1)", table)
                            / 2**20
                        )
                        for table in ("model_states", "model_snapshots")
                    },
                }
                figures["g1"] = await g1_history(res, settings, names, sizes)
                log(f"G1: {figures['g1']}")
                memory("g1_history")
                figures["g2"] = await g2_registry(res, sizes)
                log(f"G2: {figures['g2']}")
                memory("g2_registry")
                figures["g3"] = await g3_rebuild(res, sizes)
                log(f"G3: {figures['g3']}")
                memory("g3_rebuild")
    return figures | {"verdicts": verdicts(figures)}


def verdicts(figures: dict[str, Any]) -> dict[str, tuple[float, str]]:
    values = {key: figures[key]["ratio"] for key in GOALS}
    passed = {
        k: v <= GOALS[k][2] if GOALS[k][1] == "<=" else v >= GOALS[k][2] for k, v in values.items()
    }
    return {k: (v, "PASS" if passed[k] else "MISS") for k, v in values.items()}


def report(figures: dict[str, Any]) -> str:
    gen, catch, g1, g2, g3 = (figures[k] for k in ("generate", "catch_up", "g1", "g2", "g3"))
    decided, db = figures["decided"], figures["database"]
    parts = ", ".join(f"{k} {v}" for k, v in g1["parts_ms"].items() if not k.startswith("alt_"))
    alternatives = ", ".join(
        f"{k[4:]} {v}" for k, v in g1["parts_ms"].items() if k.startswith("alt_")
    )
    lines = [
        f"LOG  {gen['events']:,} events over {figures['sizes']['models']:,} models "
        f"({gen['versions_per_model']} versions each, {gen['policy_events']} policy changes)",
        f"     generated in {gen['seconds']} s = {gen['events_per_s']:,} ev/s "
        f"({gen['appends']:,} appends, {gen['events_per_append']} events each, group commit)",
        f"     projector catch-up {catch['seconds']} s = {catch['events_per_s']:,} ev/s",
        f"     re-decided {decided['events']:,} events of {decided['models']} models: "
        f"{decided['refused']} refused",
        f"     database {db['size_mib']} MiB (events {db['events_mib']} MiB, model_states "
        f"{db['model_states_mib']} MiB, model_snapshots {db['model_snapshots_mib']} MiB)",
        "",
        f"G1   model history, {g1['iterations']} per op over {g1['models_sampled']} models "
        f"(~{g1['events_per_history']} events, {g1['response_kib']} KiB per response)",
        f"     {'':34}{'p50 ms':>10}{'p99 ms':>10}",
        *(
            f"     {label:34}{g1[f'{key}_p50_us'] / 1000:>10.2f}{g1[f'{key}_p99_us'] / 1000:>10.2f}"
            for key, label in (
                ("http", "GET history (in-process HTTP)"),
                ("service", "registry.history (the handler's)"),
                ("select", "plain SELECT by stream"),
            )
        ),
        f"     http/select p99 = {g1['ratio']}x (p50 {g1['http_p50_ratio']}x); "
        f"service/select p99 = {g1['service_ratio']}x",
        f"     handler parts, median ms: {parts}",
        f"     instead (context), median ms: {alternatives}",
        "",
        f"G2   registry view ({g2['versions_in_view']:,} versions, "
        f"{g2['view_json_mib']} MiB as JSON)",
        f"     current  p50 {g2['current_p50_ms']:>8} ms  "
        f"(model_states decode {g2['current_state_ms']} ms)",
        *(
            f"     as_of {p:>9} p50 {g2['as_of_p50_ms_by_position'][str(p)]:>8} ms  "
            f"{g2['ratio_by_position'][str(p)]:>6}x"
            for p in g2["positions"]
        ),
        f"     as_of pooled p50 {g2['as_of_p50_ms']} ms = {g2['ratio']}x current "
        f"(replay to the middle alone {g2['state_at_middle_ms']} ms; gc {g2['gc_seconds']} s)",
        f"     one model as of the same instants (?model=): p50 "
        f"{g2['one_model_as_of_p50_ms']} ms, p99 {g2['one_model_as_of_p99_ms']} ms",
        "",
        f"G3   rebuild of {g3['events']:,} events: {g3['rebuild_seconds']} s = "
        f"{g3['rebuild_eps']:,} ev/s (views identical after: "
        f"{g3['views_identical_after_rebuild']})",
        f"     catch-up read decoded {g3['read_decoded_eps']:,} ev/s "
        f"(raw keyset scan {g3['raw_scan_eps']:,} ev/s)",
        f"     rebuild/read = {g3['ratio']}x",
        "",
        "MEMORY  peak RSS after each phase (MiB): "
        + ", ".join(f"{k} {v['peak']}" for k, v in figures["memory_mib"].items()),
        "",
        "SUMMARY",
    ]
    for key, (value, verdict) in figures["verdicts"].items():
        label, op, goal = GOALS[key]
        lines.append(f"    {key.upper()} {label:<24}{value:>8}x  goal {op} {goal}x  {verdict}")
    notes = figures["notes"]
    return "\n".join([*lines, "    machine: " + ", ".join(f"{k}={v}" for k, v in notes.items())])


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 events over 100 models")
    parser.add_argument("--events", type=int, help="events in the log (default 1,000,000)")
    parser.add_argument("--models", type=int, help="models in the log (default 1,000)")
    parser.add_argument("--seed", type=int, default=1, help="the generated log's seed")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures as JSON")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    # the generated log's versions have no artifacts: the scorer warns of every deployment
    logging.getLogger("model_ledger.scoring").setLevel(logging.ERROR)
    sizes = QUICK if args.quick else FULL
    overrides = {k: v for k, v in (("events", args.events), ("models", args.models)) if v}
    sizes = Sizes(**(asdict(sizes) | overrides))
    figures = common.run(main(sizes, args.seed))
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    cli()
