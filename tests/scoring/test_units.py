"""The scorer's pure parts: ids, feature schemas, which library may serve, arm choice."""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from app.scoring.explain import Explanations
from app.scoring.features import FeatureSchema
from app.scoring.ids import prediction_id, prediction_ids
from app.scoring.routing import Route, Served, refusal, unit_hasher, unit_share
from app.store.artifacts import ArtifactStore
from domain import events as ev
from domain.bandit import thompson_choice
from domain.errors import InvalidInput
from domain.policy import Policy
from domain.state import Compiled, Decision, VersionState

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def test_prediction_ids_are_distinct_time_ordered_uuid7() -> None:
    ids = [prediction_id(), *prediction_ids(3), *prediction_ids(500)]
    parsed = [uuid.UUID(i) for i in ids]
    assert all(p.version == 7 and p.variant == uuid.RFC_4122 for p in parsed)
    assert all(str(p) == i for p, i in zip(parsed, ids, strict=True))
    assert len(set(ids)) == len(ids)
    millis = [p.int >> 80 for p in parsed]
    assert millis == sorted(millis)
    assert abs(millis[-1] / 1000 - datetime.now(UTC).timestamp()) < 60


def test_a_feature_schema_reads_names_in_order_and_categories_as_codes() -> None:
    schema = FeatureSchema(["amount", "shop", "flag"], {"shop": ["a", "b", "3"], "flag": ["true"]})
    row = schema.row({"flag": True, "amount": 2, "shop": "b"})
    assert row == [2.0, 1.0, 0.0]
    assert schema.row({"amount": None, "shop": 3.0, "flag": False})[1] == 2.0  # spelt "3"
    assert math.isnan(schema.row({"amount": None, "shop": 3.0, "flag": False})[2])
    with pytest.raises(InvalidInput, match="unknown: x; missing: flag"):
        schema.row({"amount": 1.0, "shop": "a", "x": 1.0})
    with pytest.raises(InvalidInput, match="numeric"):
        schema.row({"amount": "1", "shop": "a", "flag": None})
    built = FeatureSchema.of_version(["a", "b"], {"categories": {"b": ["x"], "zz": ["q"]}})
    assert built.row({"a": 1.0, "b": "x"}) == [1.0, 0.0]


def _version(
    library: str | None, approved: list[tuple[str, bool]], diff: float = 0.0
) -> VersionState:
    compiled = None
    if library is not None:
        compiled = Compiled(
            library_sha256=library,
            max_abs_diff=diff,
            rows_checked=10,
            compiler="cc",
            flags=[],
            compile_seconds=1.0,
            recorded_at=NOW,
        )
    decisions = [
        Decision(
            approver="ann",
            decision="approve",
            comment="",
            policy_version=0,
            artifact_sha256="a",
            library_sha256=digest,
            report_sha256s=[],
            expires_at=None,
            recorded_at=NOW,
            position=1,
            revoked=revoked,
        )
        for digest, revoked in approved
    ]
    return VersionState(
        version=3,
        artifact_sha256="a",
        artifact_size=1,
        format="lightgbm",
        feature_names=[],
        metrics={},
        params={},
        lineage=ev.Lineage(),
        num_trees=None,
        registered_at=NOW,
        registered_by="ci",
        compiled=compiled,
        decisions=decisions,
    )


def test_only_a_certified_library_serves_and_in_gated_environments_only_the_approved_one() -> None:
    policy = Policy(max_parity_abs_diff=1e-9, gated_environments=["production"])
    assert "no certified library" in str(refusal(_version(None, []), "staging", policy))
    assert "parity" in str(refusal(_version("l1", [], diff=1e-3), "staging", policy))
    assert refusal(_version("l1", []), "staging", policy) is None
    assert "never approved" in str(refusal(_version("l1", []), "production", policy))
    assert "never approved" in str(refusal(_version("l2", [("l1", False)]), "production", policy))
    assert refusal(_version("l1", [("l1", False)]), "production", policy) is None
    # revoked after the promotion: rolling back is a recorded decision, not the scorer's
    assert refusal(_version("l1", [("l1", True)]), "production", policy) is None


def test_thompson_choice_follows_the_posteriors() -> None:
    rng = random.Random(1)
    picks = [thompson_choice([(1, 2.0, 50.0), (2, 50.0, 2.0)], rng) for _ in range(500)]
    assert picks.count(2) > 490
    fair = [thompson_choice([(1, 0.0, 0.0), (2, 0.0, 0.0)], rng) for _ in range(2000)]
    assert 850 < fair.count(2) < 1150


async def test_explanations_need_a_lightgbm_artifact(tmp_path: Path) -> None:
    served = Served(
        version=4,
        library=None,  # type: ignore[arg-type]
        library_sha256="l",
        schema=FeatureSchema([], {}),
        format="xgboost-json",
        artifact_sha256="a" * 64,
    )
    with pytest.raises(InvalidInput, match="lightgbm"):
        await Explanations(ArtifactStore(tmp_path)).explain(served, np.zeros((1, 2)))
    route = Route("m", "production", "shadow", served, served)
    assert route.pick(random.Random(0)) == (served, "champion")
    assert route.shadow is served


def _served(version: int) -> Served:
    return Served(
        version=version,
        library=None,  # type: ignore[arg-type]
        library_sha256=f"l{version}",
        schema=FeatureSchema([], {}),
        format="lightgbm",
        artifact_sha256="a" * 64,
    )


def test_a_unit_keeps_its_arm_the_split_holds_and_experiments_assign_independently() -> None:
    champion, challenger = _served(1), _served(2)

    def route(experiment: str, traffic: float) -> Route:
        return Route(
            "m",
            "production",
            "canary",
            champion,
            challenger,
            traffic=traffic,
            experiment=experiment,
            hasher=unit_hasher(experiment),
        )

    units = [f"customer-{i}" for i in range(4_000)]
    first, second = route("exp-a", 0.2), route("exp-b", 0.2)
    # the same unit, whatever the random source says, always gets the same arm
    arms = [first.pick(random.Random(i), unit)[1] for i, unit in enumerate(units)]
    assert arms == [first.pick(random.Random(-i), unit)[1] for i, unit in enumerate(units)]
    # the share is the split (20%, within 5 binomial standard errors)
    share = arms.count("challenger") / len(units)
    assert abs(share - 0.2) < 5 * math.sqrt(0.2 * 0.8 / len(units))
    # the hash is BLAKE2b-64 keyed by the experiment id, read as a fraction of 2^64
    digest = hashlib.blake2b(b"customer-7", digest_size=8, key=b"exp-a").digest()
    assert unit_share(unit_hasher("exp-a"), "customer-7") == int.from_bytes(digest) / 2**64
    # the next experiment assigns independently: its challengers are ~20% of the first's too
    both = sum(
        a == "challenger" and second.pick(random.Random(0), u)[1] == "challenger"
        for a, u in zip(arms, units, strict=True)
    )
    assert abs(both / arms.count("challenger") - 0.2) < 0.06
    # without a unit id, or without an experiment, chance decides as before
    rng = random.Random(5)
    chance = [first.pick(rng)[1] for _ in range(2_000)]
    assert 0.15 < chance.count("challenger") / 2_000 < 0.25
