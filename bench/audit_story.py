"""One model's governance story, one version at a time, as the appends of its actors.

The random draws happen in a fixed order (the seed makes the log): keep it when editing.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from bench.audit_fleet import (
    ADMIN,
    APPROVERS,
    COMPLIANCE_REQUIRED,
    EXPIRY_DAYS,
    FEATURES,
    KINDS,
    MONITOR,
    REQUIRED_APPROVALS,
    TEAMS,
    TIER_WEIGHTS,
    TIERS,
    WORKER,
    Append,
    Ledger,
    Slot,
    VersionSim,
)
from domain import events as ev
from domain.policy import GateResult


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

    def _by_pipeline(self, *events: ev.Event) -> Append:
        return self._meta(self.pipeline, "ci"), list(events), None

    def registration(self) -> list[Append]:
        event = ev.ModelRegistered(
            name=self.name,
            risk_tier=self.tier,  # type: ignore[arg-type]
            description=f"{self.name.replace('-', ' ')} for the {self.pipeline[3:]} team",
            owner=f"{self.pipeline[3:]}-ml@bank.example",
            tags=[self.pipeline[3:], "tabular", "batch" if self.rng.random() < 0.5 else "online"],
            sensitive_features=[f for f in self.features if f.startswith(("age", "region"))],
        )
        return [self._by_pipeline(event)]

    def lifecycle(self, number: int) -> list[Append]:
        """Version `number`: registered, built, checked, decided, deployed, watched."""
        policy_version = self.ledger.policy_versions[self.tier]
        out = self._built(number)
        out.append(self._by_pipeline(self._promote("staging", number)))
        out += self._compliance(number, policy_version)
        if self._blocked_by_compliance(number):
            return out + self._aftercare(number)
        decisions, approved = self._decisions(number, policy_version)
        out += decisions
        if approved:
            out += self._deployed(number)
        return out + self._aftercare(number)

    # --- built: registered with its compile request, compiled by the worker

    def _built(self, number: int) -> list[Append]:
        version = self.versions[number] = VersionSim(
            artifact_sha256=self._hex(),
            library_sha256=self._hex(),
            max_abs_diff=self.rng.choice((0.0, 0.0, 1e-12, 4e-11)),
            auc=round(self.rng.uniform(0.76, 0.95), 4),
        )
        job = str(self._uuid())
        registered = self._registered(number, version)
        requested = ev.JobRequested(job_id=job, kind="compile", name=self.name, version=number)
        first = self._by_pipeline(registered, requested)
        compiled = ev.VersionCompiled(
            name=self.name,
            version=number,
            library_sha256=version.library_sha256,
            max_abs_diff=version.max_abs_diff,
            rows_checked=10_000,
            compiler="tl2cgen 1.0.0 / gcc 12.2.0",
            flags=["-O2", "-fPIC"],
            compile_seconds=round(self.rng.uniform(2.0, 40.0), 2),
            job_id=job,
        )
        return [first, (self._meta(WORKER, "ci", correlation_id=job), [compiled], None)]

    def _registered(self, number: int, version: VersionSim) -> ev.VersionRegistered:
        rng = self.rng
        return ev.VersionRegistered(
            name=self.name,
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
                training_job=f"train-{self.name}-{number}",
            ),
            num_trees=rng.choice((100, 200, 400)),
        )

    # --- checked: compliance where the tier requires it (and sometimes where not)

    def _compliance(self, number: int, policy_version: int) -> list[Append]:
        rng, version = self.rng, self.versions[number]
        if not (COMPLIANCE_REQUIRED[self.tier] or rng.random() < 0.3):
            return []
        job = str(self._uuid())
        version.report_sha256 = self._hex()
        version.compliance_passed = rng.random() > 0.05
        requested = ev.JobRequested(job_id=job, kind="compliance", name=self.name, version=number)
        request = self._by_pipeline(requested)
        checked = ev.ComplianceChecked(
            name=self.name,
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
        return [request, (self._meta(WORKER, "ci", correlation_id=job), [checked], None)]

    def _blocked_by_compliance(self, number: int) -> bool:
        # where the tier requires compliance, the check always ran: passed is a bool
        return COMPLIANCE_REQUIRED[self.tier] and not self.versions[number].compliance_passed

    # --- decided: approved by enough approvers (never the registrar), or rejected

    def _decisions(self, number: int, policy_version: int) -> tuple[list[Append], bool]:
        """The decisions' appends, and whether the version ends up approved."""
        approvers = self.rng.sample(self.approvers, REQUIRED_APPROVALS[self.tier] + 1)
        if self.rng.random() < 0.04:
            return [self._rejection(number, approvers[0], policy_version)], False
        out: list[Append] = [
            (self._meta(approver, "approver"), [self._approval(number, approver)], None)
            for approver in approvers[:-1]
        ]
        if self.rng.random() < 0.02:  # an approver withdraws; the spare one approves instead
            out += self._approval_replaced(number, approvers[0], approvers[-1])
        return out, True

    def _rejection(self, number: int, approver: str, policy_version: int) -> Append:
        rejected = ev.VersionRejected(
            name=self.name,
            version=number,
            approver=approver,
            comment="holdout AUC drop on the newest cohort",
            policy_version=policy_version,
        )
        return self._meta(approver, "approver"), [rejected], None

    def _approval_replaced(self, number: int, withdrawn: str, spare: str) -> list[Append]:
        revoked = ev.ApprovalRevoked(
            name=self.name, version=number, approver=withdrawn, reason="approved the wrong run"
        )
        return [
            (self._meta(withdrawn, "approver"), [revoked], None),
            (self._meta(spare, "approver"), [self._approval(number, spare)], None),
        ]

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

    # --- deployed: to production, maybe first as a canary, now and then rolled back

    def _deployed(self, number: int) -> list[Append]:
        out: list[Append] = []
        if self.slots["production"].champion is not None and self.rng.random() < 0.35:
            out, demoted = self._canary(number)
            if demoted:
                return out
        out.append(self._by_pipeline(self._promote("production", number)))
        return out + self._rollback()

    def _canary(self, number: int) -> tuple[list[Append], bool]:
        """A canary and the drift alert on it; a critical alert demotes it (True)."""
        rng = self.rng
        traffic = float(rng.choice((5, 10, 25)))
        out = [self._by_pipeline(self._promote("production", number, "canary", traffic))]
        critical = rng.random() < 0.12
        alert_id = self._uuid()
        alert = ev.DriftDetected(
            name=self.name,
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
        if critical:
            out.append(self._demotion(number, alert, alert_meta, alert_id))
        return out, critical

    def _demotion(
        self, number: int, alert: ev.DriftDetected, alert_meta: ev.EventMeta, alert_id: uuid.UUID
    ) -> Append:
        """What the drift policy does, caused by the alert."""
        production = self.slots["production"]
        demotion = ev.DeploymentChanged(
            name=self.name,
            environment="production",
            action="demotion",
            version=number,
            champion=production.champion,
            reason=f"critical drift: psi = {alert.value:g} > 0.25",
        )
        production.move(production.champion, None)
        cause = str(alert_id)
        action_meta = msgspec.structs.replace(alert_meta, causation_id=cause, correlation_id=cause)
        return action_meta, [demotion], None

    def _rollback(self) -> list[Append]:
        production = self.slots["production"]
        if self.rng.random() >= 0.04:
            return []
        bad = {*production.rolled_back, production.champion}
        earlier = [
            v for v in reversed(production.history) if v not in bad and not self.versions[v].retired
        ]
        if not earlier:
            return []
        rollback = ev.DeploymentChanged(
            name=self.name,
            environment="production",
            action="rollback",
            version=earlier[0],
            champion=earlier[0],
            reason="error rate above the SLO after the release",
        )
        production.move(earlier[0], None, rollback=True)
        return [self._by_pipeline(rollback)]

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
