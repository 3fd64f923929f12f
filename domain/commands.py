"""Commands: what callers ask for, in the imperative. Deciders turn them into events."""

from __future__ import annotations

from typing import Any

import msgspec

from domain.events import Lineage, ModelFormat, RiskTier, Severity, Strategy


class RegisterModel(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    risk_tier: RiskTier
    description: str = ""
    owner: str = ""
    tags: list[str] = msgspec.field(default_factory=list)
    sensitive_features: list[str] = msgspec.field(default_factory=list)


class UpdateModel(msgspec.Struct, frozen=True, kw_only=True):
    description: str | None = None
    owner: str | None = None
    tags: list[str] | None = None
    sensitive_features: list[str] | None = None


class RegisterVersion(msgspec.Struct, frozen=True, kw_only=True):
    artifact_sha256: str
    artifact_size: int
    format: ModelFormat
    model_feature_names: list[str]
    num_trees: int | None = None
    feature_names: list[str] | None = None
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    lineage: Lineage = msgspec.field(default_factory=Lineage)


class Decide(msgspec.Struct, frozen=True, kw_only=True):
    decision: str
    comment: str = ""


class Promote(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    environment: str
    strategy: Strategy = "full"
    traffic_percent: float | None = None


class Rollback(msgspec.Struct, frozen=True, kw_only=True):
    environment: str
    reason: str


class RaiseDriftAlert(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    statistic: str
    value: float
    threshold: float
    severity: Severity
    feature: str | None = None
    environment: str | None = None
