"""The experiment job's p99 latency from 1%-wide log buckets: never below the exact value
(numpy's), at most 1% above it."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from workers.jobs.experiment import quantile_of_buckets


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_histogram_p99_is_within_one_percent_above_the_exact_one(seed: int) -> None:
    latencies = np.random.default_rng(seed).lognormal(4.0, 0.8, 20_000)
    # the job's bucket of each latency, as its query computes it
    buckets = Counter(math.floor(math.log(max(v, 1.0)) * 100) for v in latencies)
    exact = float(np.percentile(latencies, 99, method="inverted_cdf"))
    found = quantile_of_buckets(buckets, 0.99)
    assert found is not None
    assert exact <= found <= exact * math.exp(0.01)


def test_no_latencies_is_none_and_one_bucket_is_its_upper_edge() -> None:
    assert quantile_of_buckets({}, 0.99) is None
    assert quantile_of_buckets({460: 7}, 0.99) == pytest.approx(math.exp(4.61))
