"""The mSPRT statistics: closed forms checked by hand, and peeking simulated.

500 A/A experiments read after every 10 outcomes must reject no more often than alpha allows
(Ville's inequality), where a fixed-horizon test read the same way would; an A/B with a true
effect must reach significance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from domain.sequential import Moments, ever_rejects, half_width, log_mixture_ratio, look

ALPHA = 0.05
EXPERIMENTS = 500
OUTCOMES = 2_000
LOOKS = np.arange(20, OUTCOMES + 1, 10)


def moments(values: list[float]) -> Moments:
    return Moments(n=len(values), total=sum(values), total_sq=sum(v * v for v in values))


def test_one_look_matches_the_closed_form_worked_by_hand() -> None:
    # given: champion 0,1,0,1 (mean 1/2, variance 1/3); challenger 1,1,1,0 (3/4, 1/4)
    champion, challenger = moments([0, 1, 0, 1]), moments([1, 1, 1, 0])
    assert (champion.mean, champion.variance) == (0.5, pytest.approx(1 / 3))
    # when: a look with tau^2 = 0.01 at alpha 0.05
    estimate = look(champion, challenger, tau2=0.01, alpha=0.05)
    # then: V = (1/3)/4 + (1/4)/4 = 7/48; Lambda and the interval by hand
    v, tau2, theta = 7 / 48, 0.01, 0.25
    ratio = math.sqrt(v / (v + tau2)) * math.exp(tau2 * theta**2 / (2 * v * (v + tau2)))
    half = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(20) + math.log((v + tau2) / v)))
    assert estimate.effect == pytest.approx(0.25)
    assert estimate.std_error == pytest.approx(math.sqrt(v))
    assert estimate.log_likelihood_ratio == pytest.approx(math.log(ratio))
    assert estimate.p_value == pytest.approx(min(1.0, 1 / ratio))
    assert (estimate.ci_low, estimate.ci_high) == (
        pytest.approx(theta - half),
        pytest.approx(theta + half),
    )


def test_the_interval_is_exactly_where_the_mixture_ratio_reaches_one_over_alpha() -> None:
    # the interval's ends are the effects theta0 with Lambda(theta_hat - theta0) = 1/alpha
    variance, tau2 = np.array(0.004), 0.0025
    half = half_width(variance, tau2, ALPHA)
    assert float(log_mixture_ratio(half, variance, tau2)) == pytest.approx(math.log(1 / ALPHA))


def test_the_p_value_never_rises_and_the_interval_never_widens_between_looks() -> None:
    # given: a first look with a clear effect
    first = look(
        moments([0.0] * 50 + [1.0] * 50), moments([1.0] * 80 + [0.0] * 20), tau2=0.01, alpha=ALPHA
    )
    # when: a later look with no effect at all
    later = look(
        moments([0.0] * 100 + [1.0] * 100),
        moments([0.0] * 100 + [1.0] * 100),
        tau2=0.01,
        alpha=ALPHA,
        previous=first,
    )
    # then: the running minimum and the running intersection hold
    assert later.p_value == first.p_value < ALPHA
    assert first.ci_low <= later.ci_low and later.ci_high <= first.ci_high
    assert later.effect == 0.0


def test_the_default_is_a_sure_nothing_below_two_outcomes_per_arm() -> None:
    estimate = look(moments([1.0]), moments([0.0, 1.0]), tau2=0.01, alpha=ALPHA)
    assert estimate.p_value == 1.0
    assert math.isinf(estimate.ci_high) and math.isinf(estimate.ci_low)


def _tolerance(alpha: float, trials: int) -> float:
    """alpha plus three binomial standard errors: a correct test fails this ~0.1% of runs."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_peeking_at_500_aa_experiments_keeps_false_positives_within_alpha(kind: str) -> None:
    # given: 500 experiments whose arms are the same distribution, read every 10 outcomes
    rng = np.random.default_rng(13)
    shape = (EXPERIMENTS, OUTCOMES)
    if kind == "binary":
        champion = (rng.random(shape) < 0.1).astype(np.float64)
        challenger = (rng.random(shape) < 0.1).astype(np.float64)
        tau2 = 0.02**2
    else:
        champion, challenger = rng.normal(10, 2, shape), rng.normal(10, 2, shape)
        tau2 = 0.2**2
    # when: every look tests "no difference" at alpha
    rejected = ever_rejects(champion, challenger, LOOKS, tau2=tau2, alpha=ALPHA)
    # then: the share of experiments ever declared different stays within alpha
    assert rejected.mean() <= _tolerance(ALPHA, EXPERIMENTS)
    # and a z-test read at the same looks (what peeking does to a fixed-horizon test) does not
    n = LOOKS.astype(np.float64)
    sums_a, sums_b = np.cumsum(champion, 1)[:, LOOKS - 1], np.cumsum(challenger, 1)[:, LOOKS - 1]
    sq_a = np.cumsum(champion**2, 1)[:, LOOKS - 1]
    sq_b = np.cumsum(challenger**2, 1)[:, LOOKS - 1]
    var = (sq_a - sums_a**2 / n) / (n - 1) / n + (sq_b - sums_b**2 / n) / (n - 1) / n
    with np.errstate(divide="ignore", invalid="ignore"):  # no variance yet: no rejection
        z = np.abs(sums_b / n - sums_a / n) / np.sqrt(var)
    naive = (np.nan_to_num(z) > stats.norm.ppf(1 - ALPHA / 2)).any(axis=1).mean()
    assert naive > 2 * _tolerance(ALPHA, EXPERIMENTS)


def test_an_ab_experiment_with_a_true_effect_reaches_significance() -> None:
    # given: conversion 10% against 13%, the MDE 0.03
    rng = np.random.default_rng(7)
    shape = (200, 5_000)
    champion = (rng.random(shape) < 0.10).astype(np.float64)
    challenger = (rng.random(shape) < 0.13).astype(np.float64)
    # when: read every 50 outcomes
    rejected = ever_rejects(
        champion, challenger, np.arange(50, 5_001, 50), tau2=0.03**2, alpha=ALPHA
    )
    # then: nearly every experiment finds it (fixed-horizon power at n=5,000 is ~99%)
    assert rejected.mean() >= 0.9


def test_a_look_agrees_with_the_vectorised_simulation() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, (1, 300)), rng.normal(0.3, 1, (1, 300))
    single = look(moments(a[0].tolist()), moments(b[0].tolist()), tau2=0.04, alpha=ALPHA)
    crossed = ever_rejects(a, b, np.array([300]), tau2=0.04, alpha=ALPHA)[0]
    assert crossed == (single.p_value <= ALPHA)
