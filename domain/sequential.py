"""Always-valid inference for a difference of two means: the mixture SPRT (mSPRT).

Johari, Koomen, Pekelis and Walsh, "Always Valid Inference" (2017; Operations Research 2022).
With a normal mixing distribution N(0, tau^2) over the effect theta, and the difference of the
arms' means theta_hat whose variance is V = var_a / n_a + var_b / n_b, the mixture likelihood
ratio against theta = theta0 is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (theta_hat - theta0)^2 / (2 V (V + tau^2)))

Under the null it is a nonnegative martingale (exactly, for normal data with known variance;
with the plug-in variance used here, asymptotically), so by Ville's inequality P(ever
Lambda >= 1/alpha) <= alpha: the test may be read after every observation. The always-valid
p-value is the running minimum of 1/Lambda; the always-valid confidence interval is the set of
theta0 that Lambda has not rejected, i.e. theta_hat +- the half width below, intersected over
every look so far. Binary metrics are means of 0/1 outcomes: the same formulas, with the
Bernoulli variance as the plug-in.

Vectorised: each function takes arrays (one element per look, or per simulated experiment),
so the A/A simulation and the update job share one implementation.
"""

from __future__ import annotations

import math
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, localcontext

import msgspec
import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
# decimal arithmetic that never rounds (sums and products of exact sums)
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


class Moments(msgspec.Struct, frozen=True, kw_only=True):
    """Sufficient statistics of one arm's outcomes: count, sum and sum of squares."""

    n: int
    total: float
    total_sq: float
    # the unbiased variance computed from exact sums (`exact`); None: from the floats above
    exact_variance: float | None = None

    @classmethod
    def exact(cls, n: int, total: Decimal, total_sq: Decimal) -> Moments:
        """Moments of exact sums: the variance's n * sum(x^2) - sum(x)^2 is computed without
        rounding, so a continuous metric with a large mean and a small spread (revenue of
        1,000 +- 1) keeps every digit the floats' difference would cancel."""
        variance = None
        if n >= 2:
            with localcontext(_EXACT):
                spread = n * total_sq - total * total
            variance = max(float(spread), 0.0) / (n * (n - 1))
        return cls(n=n, total=float(total), total_sq=float(total_sq), exact_variance=variance)

    @property
    def mean(self) -> float:
        """The sample mean (0 with no outcomes)."""
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """The unbiased sample variance (0 below two outcomes)."""
        if self.n < 2:
            return 0.0
        if self.exact_variance is not None:
            return self.exact_variance
        return max(self.total_sq - self.n * self.mean**2, 0.0) / (self.n - 1)


class Estimate(msgspec.Struct, frozen=True, kw_only=True):
    """One look at the difference challenger - champion, valid whenever it is read."""

    effect: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    log_likelihood_ratio: float


def log_mixture_ratio(effect: Array, variance: Array, tau2: float) -> Array:
    """log Lambda against theta0 = 0, for each (effect, variance of the effect) pair."""
    total = variance + tau2
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 0.5 * np.log(variance / total) + tau2 * effect**2 / (2.0 * variance * total)
    return np.where(variance > 0, value, 0.0)


def half_width(variance: Array, tau2: float, alpha: float) -> Array:
    """Half width of the always-valid (1 - alpha) interval around the effect."""
    total = variance + tau2
    with np.errstate(divide="ignore", invalid="ignore"):
        squared = variance * total / tau2 * (2.0 * math.log(1.0 / alpha) + np.log(total / variance))
    return np.where(variance > 0, np.sqrt(squared), np.inf)


def look(
    champion: Moments,
    challenger: Moments,
    *,
    tau2: float,
    alpha: float,
    previous: Estimate | None = None,
) -> Estimate:
    """The estimate after one more look: p-value and interval carried from `previous`."""
    effect = challenger.mean - champion.mean
    variance = 0.0
    if champion.n >= 2 and challenger.n >= 2:
        variance = champion.variance / champion.n + challenger.variance / challenger.n
    log_ratio = float(log_mixture_ratio(np.array(effect), np.array(variance), tau2))
    half = float(half_width(np.array(variance), tau2, alpha))
    p_value = min(1.0, math.exp(-log_ratio)) if log_ratio > 0 else 1.0
    low, high = effect - half, effect + half
    if previous is not None:
        p_value = min(p_value, previous.p_value)
        low, high = max(low, previous.ci_low), min(high, previous.ci_high)
    return Estimate(
        effect=effect,
        std_error=math.sqrt(variance),
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        log_likelihood_ratio=log_ratio,
    )


def cumulative_looks(
    champion: Array, challenger: Array, looks: npt.NDArray[np.int64]
) -> tuple[Array, Array]:
    """(effect, variance of the effect) at each look, for outcome arrays of shape
    (experiments, n): the look at k uses each experiment's first k outcomes per arm."""
    results = []
    for arm in (champion, challenger):
        sums = np.cumsum(arm, axis=-1)[..., looks - 1]
        squares = np.cumsum(arm * arm, axis=-1)[..., looks - 1]
        n = looks.astype(np.float64)
        mean = sums / n
        variance = np.maximum(squares - n * mean**2, 0.0) / (n - 1)
        results.append((mean, variance / n))
    (mean_a, var_a), (mean_b, var_b) = results
    return mean_b - mean_a, var_a + var_b


def ever_rejects(
    champion: Array,
    challenger: Array,
    looks: npt.NDArray[np.int64],
    *,
    tau2: float,
    alpha: float,
) -> npt.NDArray[np.bool_]:
    """For each simulated experiment, whether any look rejects theta = 0 at `alpha`."""
    effect, variance = cumulative_looks(champion, challenger, looks)
    crossed = log_mixture_ratio(effect, variance, tau2) >= math.log(1.0 / alpha)
    return np.asarray(crossed.any(axis=-1), dtype=np.bool_)
