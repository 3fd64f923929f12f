"""What serves where: per (model, environment) a route naming the verified libraries, and
the per-request choice of the arm that scores (champion, canary, shadow or bandit)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from app.scoring.features import FeatureSchema
from app.scoring.library import CompiledLibrary
from app.scoring.metrics import ScoreMeter, score_meter
from domain.bandit import thompson_choice
from domain.policy import Policy
from domain.state import Deployment, ModelState, VersionState

CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"
# a bandit arm without rewards yet starts from the uniform prior Beta(1, 1)
_NO_REWARDS = (0.0, 0.0)
_UNIT_SPAN = float(2**64)


def unit_hasher(experiment_id: str) -> Any:
    """BLAKE2b keyed by the experiment id (at most 64 bytes of it), ready to `copy()`: keying
    costs more than hashing a short unit id, so a route keys once."""
    return hashlib.blake2b(digest_size=8, key=experiment_id.encode()[:64])


def unit_share(hasher: Any, unit_id: str) -> float:
    """Where a unit falls in [0, 1) for an experiment: the same unit always lands in the same
    arm of one experiment, and independently in the next experiment's."""
    hashed = hasher.copy()
    hashed.update(unit_id.encode())
    return int.from_bytes(hashed.digest(), "big") / _UNIT_SPAN


@dataclass(frozen=True, slots=True, eq=False)
class Served:
    """One version as this process serves it: its verified library and input schema."""

    version: int
    library: CompiledLibrary
    library_sha256: str
    schema: FeatureSchema
    format: str
    artifact_sha256: str


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """What one (model, environment) serves; replaced whole, never changed in place."""

    name: str
    environment: str
    strategy: str
    champion: Served
    # None when nothing runs beside the champion (or its library was refused)
    challenger: Served | None = None
    # canary: the share of requests the challenger scores
    traffic: float = 0.0
    # bandit: (version, successes, failures) of champion and challenger
    arms: tuple[tuple[int, float, float], ...] = ()
    # the A/B experiment running on this canary, and the unit hash it keys (`unit_hasher`)
    experiment: str | None = None
    hasher: Any = None
    # the series of each arm a request may pick, resolved once here (not per request)
    meters: dict[str, ScoreMeter] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        meters = {
            arm: score_meter(self.name, served.version, self.environment, arm)
            for arm, served in self.served()
            if arm != SHADOW
        }
        object.__setattr__(self, "meters", meters)

    def pick(self, rng: random.Random, unit_id: str | None = None) -> tuple[Served, str]:
        """The version that scores this request, and its arm: by the unit's hash while an
        experiment runs and the request names its unit, else by chance."""
        challenger = self.challenger
        if challenger is None or self.strategy in ("full", SHADOW):
            return self.champion, CHAMPION
        if self.strategy == "canary":
            if unit_id is not None and self.experiment is not None:
                draw = unit_share(self.hasher, unit_id)
            else:
                draw = rng.random()
            if draw < self.traffic:
                return challenger, CHALLENGER
            return self.champion, CHAMPION
        if thompson_choice(self.arms, rng) == challenger.version:
            return challenger, CHALLENGER
        return self.champion, CHAMPION

    @property
    def shadow(self) -> Served | None:
        """The version scored beside the champion, off the response path, and only logged."""
        return self.challenger if self.strategy == SHADOW else None

    def served(self) -> list[tuple[str, Served]]:
        """Every (arm, version) this route serves."""
        arms = [(CHAMPION, self.champion)]
        if self.challenger is not None:
            arms.append((SHADOW if self.strategy == SHADOW else CHALLENGER, self.challenger))
        return arms


@dataclass(frozen=True, slots=True)
class Plan:
    """The versions a deployment names and how traffic is split between them."""

    strategy: str
    champion: VersionState
    challenger: VersionState | None
    traffic: float
    arms: tuple[tuple[int, float, float], ...]
    experiment: str | None = None


def plan_route(model: ModelState, slot: Deployment) -> Plan | None:
    """What a deployment asks to serve; None when it names no champion."""
    if slot.champion is None or slot.champion not in model.versions:
        return None
    champion = model.versions[slot.champion]
    challenger = model.versions.get(slot.challenger) if slot.challenger is not None else None
    strategy = slot.strategy if challenger is not None else "full"
    arms: tuple[tuple[int, float, float], ...] = ()
    if strategy == "bandit" and challenger is not None:
        posteriors = {arm.version: (arm.successes, arm.failures) for arm in slot.arms}
        arms = tuple(
            (v, *posteriors.get(v, _NO_REWARDS)) for v in (champion.version, challenger.version)
        )
    traffic = (slot.traffic_percent or 0.0) / 100.0 if strategy == "canary" else 0.0
    experiment = slot.experiment if strategy == "canary" else None
    return Plan(strategy, champion, challenger, traffic, arms, experiment)


def refusal(version: VersionState, environment: str, policy: Policy) -> str | None:
    """Why this version's library may not serve in `environment` (None: it may).

    It must be compiled, certified within the policy's parity limit and, in a gated
    environment, be the very library an approver approved. An approval that expired or was
    revoked after the promotion does not stop a serving version: that is a decision to roll
    back, recorded in the log, not one the scorer takes on its own.
    """
    compiled = version.compiled
    if compiled is None:
        return f"version {version.version} has no certified library"
    limit = policy.parity_tolerance(version.format)
    if not compiled.parity() <= limit:
        return (
            f"version {version.version}'s parity ({compiled.parity():g}) is beyond the "
            f"policy's limit ({limit:g})"
        )
    if environment in policy.gated_environments and not any(
        d.decision == "approve" and d.library_sha256 == compiled.library_sha256
        for d in version.decisions
    ):
        return (
            f"library {compiled.library_sha256[:12]} of version {version.version} was never "
            f"approved for {environment}"
        )
    return None


def served_version(
    version: VersionState, library: CompiledLibrary, schema: FeatureSchema
) -> Served:
    """A version bound to its loaded library."""
    return Served(
        version=version.version,
        library=library,
        library_sha256=library.sha256,
        schema=schema,
        format=version.format,
        artifact_sha256=version.artifact_sha256,
    )
