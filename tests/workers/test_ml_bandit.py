"""Bandit posteriors: a clearly better arm wins, equal arms do not conclude, shares sum to one."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from domain.bandit import thompson_choice
from workers.ml.bandit import two_proportion_p_value, update


def test_a_clearly_better_challenger_concludes_as_the_winner() -> None:
    decision = update({1: (50, 950), 2: (90, 910)}, champion=1, seed=1)
    assert decision.concluded
    assert decision.winner == 2
    assert decision.best_challenger == 2
    assert decision.probability_to_beat > 0.99
    assert decision.p_value is not None
    assert decision.p_value < 0.01
    arms = {arm.version: arm for arm in decision.arms}
    assert arms[2].allocation > 0.99
    assert arms[2].mean == pytest.approx(91 / 1002)


def test_a_clearly_better_champion_concludes_for_the_champion() -> None:
    decision = update({1: (90, 910), 2: (50, 950), 3: (55, 945)}, champion=1, seed=1)
    assert decision.concluded
    assert decision.winner == 1
    assert decision.best_challenger == 3


def test_equal_arms_do_not_conclude() -> None:
    decision = update({1: (100, 900), 2: (100, 900)}, champion=1, seed=2)
    assert not decision.concluded
    assert decision.winner is None
    assert 0.3 < decision.probability_to_beat < 0.7
    assert decision.p_value == pytest.approx(1.0)
    shares = [arm.allocation for arm in decision.arms]
    assert shares == pytest.approx([0.5, 0.5], abs=0.02)


def test_nothing_concludes_before_every_arm_has_its_minimum_of_rewards() -> None:
    decision = update({1: (0, 60), 2: (40, 20)}, champion=1, seed=3, min_rewards_per_arm=100)
    assert decision.probability_to_beat > 0.999
    assert not decision.concluded
    assert "minimum" in decision.reason
    assert update({1: (0, 60), 2: (40, 20)}, 1, seed=3, min_rewards_per_arm=50).concluded


@pytest.mark.parametrize("floor", [0.0, 0.05])
def test_allocations_sum_to_one_and_respect_the_floor(floor: float) -> None:
    counts = {1: (30, 70), 2: (35, 65), 3: (10, 90), 4: (0, 0)}
    decision = update(counts, champion=1, seed=4, min_allocation=floor)
    shares = [arm.allocation for arm in decision.arms]
    assert sum(shares) == pytest.approx(1.0)
    assert sum(arm.probability_best for arm in decision.arms) == pytest.approx(1.0)
    assert min(shares) >= floor
    assert [arm.version for arm in decision.arms] == [1, 2, 3, 4]


def test_the_same_seed_gives_the_same_decision() -> None:
    counts = {1: (30, 70), 2: (35, 65)}
    assert update(counts, 1, seed=5) == update(counts, 1, seed=5)
    assert update(counts, 1, seed=5).arms != update(counts, 1, seed=6).arms


def test_the_probability_to_beat_matches_the_closed_form() -> None:
    # P(B > A) for Beta posteriors, by numerical integration of the densities
    a, b = (1 + 40, 1 + 60), (1 + 50, 1 + 50)
    grid = np.linspace(0, 1, 20_001)
    cdf_a = stats.beta.cdf(grid, *a)
    exact = np.trapezoid(cdf_a * stats.beta.pdf(grid, *b), grid)
    decision = update({1: (40, 60), 2: (50, 50)}, 1, seed=7, draws=200_000)
    assert decision.probability_to_beat == pytest.approx(exact, abs=0.005)


def test_the_p_value_is_the_pearson_chi_square_of_the_two_by_two_table() -> None:
    chi2 = stats.chi2_contingency([[40, 60], [55, 45]], correction=False)
    assert two_proportion_p_value((40, 100), (55, 100)) == pytest.approx(chi2.pvalue)
    assert two_proportion_p_value((0, 0), (5, 10)) is None
    assert two_proportion_p_value((0, 10), (0, 10)) is None


def test_bad_arms_are_refused() -> None:
    with pytest.raises(ValueError, match="champion"):
        update({1: (1, 1)}, champion=1, seed=0)
    with pytest.raises(ValueError, match="champion"):
        update({1: (1, 1), 2: (1, 1)}, champion=3, seed=0)
    with pytest.raises(ValueError, match="negative"):
        update({1: (1, -1), 2: (1, 1)}, champion=1, seed=0)


def test_thompson_choice_serves_each_arm_about_as_often_as_it_is_best() -> None:
    arms = [(1, 30.0, 70.0), (2, 36.0, 64.0), (3, 10.0, 90.0)]
    rng = random.Random(8)
    served = [thompson_choice(arms, rng) for _ in range(20_000)]
    decision = update({v: (s, f) for v, s, f in arms}, champion=1, seed=8)
    for arm in decision.arms:
        assert served.count(arm.version) / 20_000 == pytest.approx(arm.probability_best, abs=0.02)
