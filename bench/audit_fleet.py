"""The generated fleet's shape, and what its models' stories share: the tiers' policies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from app.store.events import EventStore
from domain import events as ev
from domain.decide import policy_stream
from domain.policy import Policy, Threshold

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
