"""Thompson sampling over a bandit experiment's arms: the draw each scored request makes.

Pure: the random source is an input. Arms start from a Beta(1, 1) prior.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def thompson_choice(arms: Sequence[tuple[int, float, float]], rng: random.Random) -> int:
    """The version to serve one request: (version, successes, failures) arms, one draw each."""
    beta = rng.betavariate
    chosen, top = arms[0][0], -1.0
    for version, wins, losses in arms:
        draw = beta(wins + 1.0, losses + 1.0)
        if draw > top:
            chosen, top = version, draw
    return chosen
