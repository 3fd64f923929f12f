"""Bandit experiments: Beta posteriors per arm, Thompson allocation, and when to conclude.

Rewards are Bernoulli (a prediction's outcome was good or not); each arm's posterior is
Beta(1 + successes, 1 + failures). The allocation is each arm's probability of being the best,
estimated from seeded posterior draws, which is what Thompson sampling routes on average.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

PRIOR = (1.0, 1.0)
DEFAULT_DRAWS = 20_000


@dataclass(frozen=True, kw_only=True)
class ArmPosterior:
    """One arm's rewards, posterior and share of traffic."""

    version: int
    successes: float
    failures: float
    mean: float
    probability_best: float
    allocation: float
    # probability this arm beats the champion (0.5 for the champion itself)
    probability_beats_champion: float


@dataclass(frozen=True, kw_only=True)
class BanditDecision:
    """The posteriors, the new allocation and whether the experiment is over."""

    champion: int
    arms: list[ArmPosterior]
    # the challenger most likely to beat the champion, and that probability
    best_challenger: int | None
    probability_to_beat: float
    # two-sided two-proportion z-test, champion vs best challenger (None when undefined)
    p_value: float | None
    concluded: bool
    winner: int | None
    reason: str


def update(
    counts: Mapping[int, tuple[float, float]],
    champion: int,
    *,
    seed: int,
    probability_to_beat: float = 0.95,
    min_rewards_per_arm: int = 100,
    draws: int = DEFAULT_DRAWS,
    min_allocation: float = 0.0,
) -> BanditDecision:
    """Posteriors of `counts` (version -> (successes, failures)) and the decision they support.

    The experiment concludes once every arm has `min_rewards_per_arm` rewards and the best
    challenger beats the champion with probability >= `probability_to_beat` (winner: that
    challenger) or <= 1 - `probability_to_beat` (winner: the champion).
    """
    versions = sorted(counts)
    if champion not in counts or len(versions) < 2:
        raise ValueError("a bandit needs the champion and at least one challenger among the arms")
    if not 0.0 <= min_allocation * len(versions) <= 1.0:
        raise ValueError("min_allocation times the number of arms must be within [0, 1]")
    wins = np.array([counts[v][0] for v in versions], dtype=np.float64)
    losses = np.array([counts[v][1] for v in versions], dtype=np.float64)
    if (wins < 0).any() or (losses < 0).any():
        raise ValueError("successes and failures cannot be negative")
    rng = np.random.default_rng(seed)
    samples = rng.beta(PRIOR[0] + wins, PRIOR[1] + losses, size=(draws, len(versions)))
    best = np.bincount(samples.argmax(axis=1), minlength=len(versions)) / draws
    champ = versions.index(champion)
    beats = (samples > samples[:, [champ]]).mean(axis=0)
    beats[champ] = 0.5
    allocation = min_allocation + (1 - min_allocation * len(versions)) * best
    challengers = [i for i in range(len(versions)) if i != champ]
    top = max(challengers, key=lambda i: (beats[i], -i))
    arms = [
        ArmPosterior(
            version=v,
            successes=float(wins[i]),
            failures=float(losses[i]),
            mean=float((PRIOR[0] + wins[i]) / (sum(PRIOR) + wins[i] + losses[i])),
            probability_best=float(best[i]),
            allocation=float(allocation[i]),
            probability_beats_champion=float(beats[i]),
        )
        for i, v in enumerate(versions)
    ]
    enough = bool(((wins + losses) >= min_rewards_per_arm).all())
    concluded, winner, reason = _conclude(
        enough, float(beats[top]), probability_to_beat, champion, versions[top]
    )
    return BanditDecision(
        champion=champion,
        arms=arms,
        best_challenger=versions[top],
        probability_to_beat=float(beats[top]),
        p_value=two_proportion_p_value(
            (wins[champ], wins[champ] + losses[champ]), (wins[top], wins[top] + losses[top])
        ),
        concluded=concluded,
        winner=winner,
        reason=reason,
    )


def _conclude(
    enough: bool, beats: float, threshold: float, champion: int, challenger: int
) -> tuple[bool, int | None, str]:
    if not enough:
        return False, None, "not every arm has the minimum number of rewards yet"
    if beats >= threshold:
        return True, challenger, f"version {challenger} beats the champion with p={beats:.4f}"
    if beats <= 1 - threshold:
        return True, champion, f"the champion beats every challenger with p>={1 - beats:.4f}"
    return False, None, f"no arm is ahead with the required probability (best {beats:.4f})"


def two_proportion_p_value(a: tuple[float, float], b: tuple[float, float]) -> float | None:
    """Two-sided p-value that two success rates (successes, trials) are equal (pooled z-test)."""
    from scipy.stats import norm  # noqa: PLC0415 - slow import

    (wins_a, n_a), (wins_b, n_b) = a, b
    if n_a <= 0 or n_b <= 0:
        return None
    pooled = (wins_a + wins_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return None
    z = (wins_b / n_b - wins_a / n_a) / spread
    return float(2 * norm.sf(abs(z)))
