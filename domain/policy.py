"""Governance policies: data, versioned as events, one per risk tier."""

from __future__ import annotations

from typing import Literal

import msgspec

Tier = Literal["low", "medium", "high"]


class Threshold(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Bounds a metric must respect (either or both)."""

    min: float | None = None
    max: float | None = None

    def admits(self, value: float) -> bool:
        """True when the value is within bounds."""
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        """Human-readable bounds, e.g. '>= 0.7'."""
        parts = [f">= {self.min:g}"] if self.min is not None else []
        parts += [f"<= {self.max:g}"] if self.max is not None else []
        return " and ".join(parts) or "any value"


class DriftThresholds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-feature drift statistics and the values at which they warn or are critical."""

    # PSI: < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant (the credit-scoring convention)
    psi_warning: float = 0.1
    psi_critical: float = 0.25
    # two-sample KS statistic (the p-value is meaningless at 100k rows: everything is significant)
    ks_warning: float = 0.1
    ks_critical: float = 0.2
    # chi-square on categorical frequencies, judged by the balanced Cramér's V (the reference
    # rescaled to the window's size, sqrt(1/2 sum (p-q)^2/(p+q))) so it does not move with the
    # ratio of the two sizes; reports carry the textbook V beside it
    cramers_v_warning: float = 0.1
    cramers_v_critical: float = 0.25


class PerformanceThresholds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How live performance (scores against observed outcome labels) is judged against the
    version's validation metrics: absolute drops and rises, and ratios of errors."""

    # a check judges nothing with fewer labelled predictions in its window
    min_labels: int = 200
    # the window: predictions made in the last this many days
    window_days: float = 7.0
    # a binary classifier's operating threshold when its version's params name none
    # (`decision_threshold`): precision and recall are taken there
    threshold: float = 0.5
    auc_drop_warning: float = 0.03
    auc_drop_critical: float = 0.08
    precision_drop_warning: float = 0.05
    precision_drop_critical: float = 0.15
    brier_rise_warning: float = 0.02
    brier_rise_critical: float = 0.05
    # regression: live RMSE (MAE) over the validation value
    error_ratio_warning: float = 1.2
    error_ratio_critical: float = 1.5


class DataQualityThresholds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How live inputs are judged against the training profile (shares of a window's rows)."""

    # a check judges nothing with fewer sampled inputs
    min_rows: int = 100
    # live null rate minus the training null rate
    null_rate_increase_warning: float = 0.05
    null_rate_increase_critical: float = 0.2
    # numeric values outside the training [min, max]
    out_of_range_warning: float = 0.01
    out_of_range_critical: float = 0.05
    # categorical codes the training data never had
    unseen_category_warning: float = 0.01
    unseen_category_critical: float = 0.05
    # a feature that varied in training holds one value throughout the window
    constant_feature: Literal["warning", "critical", "none"] = "warning"


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a version of a tier needs before it may serve in a gated environment."""

    required_approvals: int = 1
    metric_thresholds: dict[str, Threshold] = msgspec.field(default_factory=dict)
    compliance_required: bool = False
    max_demographic_parity_difference: float = 0.1
    max_equalized_odds_difference: float = 0.1
    approval_expiry_days: int = 180
    # the compiled library may differ from the artifact's own predictions by at most this
    # (max |compiled - reference| / max(1, max |reference|): absolute for probabilities),
    # for formats computed in float64 (LightGBM, scikit-learn: measured bit-exact)
    max_parity_abs_diff: float = 1e-9
    # formats whose own library computes in other arithmetic, and their limit instead: XGBoost
    # sums float32 leaf values over float32 features (float32's epsilon is 1.2e-7; a 300-tree
    # regression differed from xgboost by 1.0e-6 of its scale, probabilities by 2.4e-7)
    max_parity_diff_by_format: dict[str, float] = msgspec.field(
        default_factory=lambda: {"xgboost-json": 1e-5}
    )
    # environments where every gate applies; elsewhere only "compiled" and "not retired"
    gated_environments: list[str] = msgspec.field(default_factory=lambda: ["production"])
    # what a critical drift alert on a canary does
    critical_drift_on_canary: Literal["rollback", "none"] = "rollback"
    # the four-fifths rule: the lowest group's selection rate over the highest's
    min_demographic_parity_ratio: float = 0.8
    drift: DriftThresholds = msgspec.field(default_factory=DriftThresholds)
    # live performance against outcome labels, and what a critical alert on a canary does
    performance: PerformanceThresholds = msgspec.field(default_factory=PerformanceThresholds)
    critical_performance_on_canary: Literal["rollback", "none"] = "rollback"
    data_quality: DataQualityThresholds = msgspec.field(default_factory=DataQualityThresholds)
    # a bandit experiment concludes when an arm's probability to beat the champion passes this
    bandit_probability_to_beat: float = 0.95
    # ... and not before this many rewards per arm
    bandit_min_rewards_per_arm: int = 100

    def parity_tolerance(self, model_format: str) -> float:
        """The parity limit a compiled library of this model format must meet."""
        return self.max_parity_diff_by_format.get(model_format, self.max_parity_abs_diff)


class RetrainingPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A model's retraining policy: on a critical drift or performance alert, train on the
    latest version of a named dataset with the serving version's parameters. The version it
    produces is registered, compiled and checked like any other, and waits for approvals:
    the policy never deploys."""

    # the named dataset trained on; its latest version when an alert triggers
    dataset: str
    # the label column (default: the serving version's own target)
    target: str | None = None
    # which alerts trigger: critical drift.detected, critical performance.alert
    triggers: list[Literal["drift", "performance"]] = msgspec.field(
        default_factory=lambda: ["drift", "performance"]
    )
    # alerts of these environments trigger (an alert naming none counts everywhere)
    environments: list[str] = msgspec.field(default_factory=lambda: ["production"])
    # a named dataset (with the target and the sensitive features) the new version's fairness
    # is checked on, when the tier's policy requires compliance
    evaluation_dataset: str | None = None
    # no second retraining of the model within this long of the last one
    cooldown_hours: float = 24.0
    enabled: bool = True


class GateResult(msgspec.Struct, frozen=True, kw_only=True):
    """One gate of a promotion: whether it passed, and why."""

    name: str
    passed: bool
    detail: str


DEFAULT_POLICIES: dict[str, Policy] = {
    "low": Policy(required_approvals=1, compliance_required=False, approval_expiry_days=365),
    "medium": Policy(required_approvals=1, compliance_required=True, approval_expiry_days=180),
    "high": Policy(required_approvals=2, compliance_required=True, approval_expiry_days=90),
}


class PolicyBook(msgspec.Struct, kw_only=True):
    """The current policy of each tier and its version (0: the built-in default)."""

    policies: dict[str, Policy] = msgspec.field(default_factory=lambda: dict(DEFAULT_POLICIES))
    versions: dict[str, int] = msgspec.field(default_factory=dict)

    def of(self, tier: str) -> tuple[Policy, int]:
        """The policy of a tier and its version."""
        return self.policies[tier], self.versions.get(tier, 0)

    def set(self, tier: str, policy: Policy, version: int) -> None:
        """Record a new policy version for a tier."""
        self.policies[tier] = policy
        self.versions[tier] = version
