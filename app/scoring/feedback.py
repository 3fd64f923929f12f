"""Feedback on predictions: a reward (what the bandit job folds into its arms) and an
observed outcome label (what the performance job compares with the score), each at most
once per prediction; a label may come days after its prediction, and after its reward."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
import msgspec

from app.scoring.predlog import PredictionLog
from domain.errors import Conflict, InvalidInput, NotFound

# one round trip each when the prediction is known and has no reward (label) yet; a reward
# off [0, 1] only for a prediction of an A/B experiment (a continuous metric: revenue, loss)
_REWARD = (
    "INSERT INTO feedback (prediction_id, name, environment, version, reward, recorded_at, "
    "experiment_id) "
    "SELECT prediction_id, name, environment, version, $2::float8, $3, experiment_id "
    "FROM predictions "
    "WHERE prediction_id = $1 AND ($2::float8 BETWEEN 0 AND 1 OR experiment_id IS NOT NULL) "
    "ON CONFLICT (prediction_id) DO NOTHING "
    "RETURNING name, environment, version"
)
_LABEL = (
    "INSERT INTO outcomes (prediction_id, name, environment, version, label, observed_at, "
    "recorded_at) SELECT prediction_id, name, environment, version, $2, $3, $4 "
    "FROM predictions WHERE prediction_id = $1 ON CONFLICT (prediction_id) DO NOTHING "
    "RETURNING name, environment, version"
)
_EXISTING_REWARD = "SELECT reward FROM feedback WHERE prediction_id = $1"
_EXISTING_LABEL = "SELECT label FROM outcomes WHERE prediction_id = $1"
_EXPERIMENT = "SELECT experiment_id FROM predictions WHERE prediction_id = $1"
# clocks of the systems reporting outcomes may run a little ahead of ours
_CLOCK_SKEW = timedelta(minutes=5)


class Feedback(msgspec.Struct, frozen=True, kw_only=True):
    """What was recorded, with the prediction it belongs to."""

    prediction_id: uuid.UUID
    name: str
    environment: str
    version: int
    reward: float | None
    label: float | None
    observed_at: datetime | None
    recorded_at: datetime


class Rewards:
    """Records feedback for predictions, for the feedback route."""

    def __init__(self, pool: asyncpg.Pool, log: PredictionLog, clock: Callable[[], datetime]):
        self._pool = pool
        self._log = log
        self._clock = clock

    async def record(
        self,
        prediction_id: uuid.UUID,
        reward: float | None,
        *,
        label: float | None = None,
        observed_at: datetime | None = None,
    ) -> Feedback:
        """Record a prediction's reward and/or label now (see `record_feedback`)."""
        return await record_feedback(
            self._pool,
            self._log,
            prediction_id,
            Given(reward=reward, label=label, observed_at=observed_at),
            self._clock(),
        )


class Given(msgspec.Struct, frozen=True, kw_only=True):
    """The feedback a client sent: a reward, a label (observed when), or both."""

    reward: float | None = None
    label: float | None = None
    observed_at: datetime | None = None


async def record_feedback(
    pool: asyncpg.Pool, log: PredictionLog, prediction_id: uuid.UUID, given: Given, now: datetime
) -> Feedback:
    """Record feedback, all of it or nothing: NotFound, Conflict if the prediction already
    has that reward or label, InvalidInput for a reward that is not a finite number (or is
    off [0, 1] for a prediction outside an A/B experiment: bandits and other Bernoulli
    readers need 0..1; an A/B experiment's continuous metric takes any value), a label that
    is not a finite number, or an observation in the future (while the database is away, its
    connection error: a 503 like every outage)."""
    observed_at = _check(given, now)
    row = await _insert(pool, prediction_id, given, observed_at, now)
    if row is None and not log.settled:
        # the prediction may still be queued in this process: write the queue, then retry
        await log.flush()
        row = await _insert(pool, prediction_id, given, observed_at, now)
    if row is None:
        await _refusal(pool, prediction_id, given)
    assert row is not None
    return Feedback(
        prediction_id=prediction_id,
        name=row["name"],
        environment=row["environment"],
        version=row["version"],
        reward=given.reward,
        label=given.label,
        observed_at=observed_at if given.label is not None else None,
        recorded_at=now,
    )


def _check(given: Given, now: datetime) -> datetime:
    reward, label = given.reward, given.label
    if reward is None and label is None:
        raise InvalidInput("send a reward, a label, or both", field="reward")
    if reward is not None and not math.isfinite(reward):
        raise InvalidInput("reward must be a finite number", field="reward")
    if label is not None and not math.isfinite(label):
        raise InvalidInput("label must be a finite number", field="label")
    observed_at = given.observed_at or now
    if observed_at.tzinfo is None:
        raise InvalidInput("observed_at needs a time zone (RFC 3339)", field="observed_at")
    if observed_at > now + _CLOCK_SKEW:
        raise InvalidInput("observed_at is in the future", field="observed_at")
    return observed_at


async def _insert(
    pool: asyncpg.Pool,
    prediction_id: uuid.UUID,
    given: Given,
    observed_at: datetime,
    now: datetime,
) -> asyncpg.Record | None:
    """Write every part in one transaction; None (nothing written) when one cannot be."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            row = await _write(conn, prediction_id, given, observed_at, now)
        except BaseException:
            await transaction.rollback()
            raise
        if row is None:
            await transaction.rollback()  # a reward goes with a label that could not
        else:
            await transaction.commit()
        return row


async def _write(
    conn: asyncpg.Connection,
    prediction_id: uuid.UUID,
    given: Given,
    observed_at: datetime,
    now: datetime,
) -> asyncpg.Record | None:
    row = None
    if given.reward is not None:
        row = await conn.fetchrow(_REWARD, prediction_id, given.reward, now)
        if row is None:
            return None
    if given.label is not None:
        row = await conn.fetchrow(_LABEL, prediction_id, given.label, observed_at, now)
    return row


async def _refusal(pool: asyncpg.Pool, prediction_id: uuid.UUID, given: Given) -> None:
    if given.reward is not None:
        existing = await pool.fetchrow(_EXISTING_REWARD, prediction_id)
        if existing is not None:
            raise Conflict(
                f"prediction {prediction_id} already has a reward ({existing['reward']:g})"
            )
        found = None
        if not 0.0 <= given.reward <= 1.0:
            found = await pool.fetchrow(_EXPERIMENT, prediction_id)
        if found is not None and found["experiment_id"] is None:
            raise InvalidInput(
                "reward must be within [0, 1] for a prediction outside an A/B experiment "
                "(any finite value is taken for an experiment's continuous metric)",
                field="reward",
            )
    if given.label is not None:
        existing = await pool.fetchrow(_EXISTING_LABEL, prediction_id)
        if existing is not None:
            raise Conflict(
                f"prediction {prediction_id} already has a label ({existing['label']:g})"
            )
    raise NotFound(f"no prediction {prediction_id}")
