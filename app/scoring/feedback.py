"""Rewards for predictions: one per prediction id, what the bandit job folds into its arms."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime

import asyncpg
import msgspec

from app.scoring.predlog import PredictionLog
from domain.errors import Conflict, InvalidInput, NotFound

# one round trip when the prediction is known and has no reward yet
_RECORD = (
    "INSERT INTO feedback (prediction_id, name, environment, version, reward, recorded_at) "
    "SELECT prediction_id, name, environment, version, $2, $3 FROM predictions "
    "WHERE prediction_id = $1 ON CONFLICT (prediction_id) DO NOTHING "
    "RETURNING name, environment, version"
)
_EXISTING = "SELECT reward FROM feedback WHERE prediction_id = $1"


class Feedback(msgspec.Struct, frozen=True, kw_only=True):
    """A reward as recorded, with the prediction it belongs to."""

    prediction_id: uuid.UUID
    name: str
    environment: str
    version: int
    reward: float
    recorded_at: datetime


class Rewards:
    """Records rewards for predictions, for the feedback route."""

    def __init__(self, pool: asyncpg.Pool, log: PredictionLog, clock: Callable[[], datetime]):
        self._pool = pool
        self._log = log
        self._clock = clock

    async def record(self, prediction_id: uuid.UUID, reward: float) -> Feedback:
        """Record a prediction's reward now (see `record_feedback`)."""
        return await record_feedback(self._pool, self._log, prediction_id, reward, self._clock())


async def record_feedback(
    pool: asyncpg.Pool,
    log: PredictionLog,
    prediction_id: uuid.UUID,
    reward: float,
    now: datetime,
) -> Feedback:
    """Record a prediction's reward: NotFound, Conflict if rewarded, InvalidInput off [0, 1]
    (while the database is away, its connection error: a 503 like every outage)."""
    if not (math.isfinite(reward) and 0.0 <= reward <= 1.0):
        raise InvalidInput("reward must be within [0, 1]", field="reward")
    return await _record(pool, log, prediction_id, reward, now)


async def _record(
    pool: asyncpg.Pool, log: PredictionLog, prediction_id: uuid.UUID, reward: float, now: datetime
) -> Feedback:
    row = await pool.fetchrow(_RECORD, prediction_id, reward, now)
    if row is None and not log.settled:
        # the prediction may still be queued in this process: write the queue, then retry
        await log.flush()
        row = await pool.fetchrow(_RECORD, prediction_id, reward, now)
    if row is not None:
        return Feedback(
            prediction_id=prediction_id,
            name=row["name"],
            environment=row["environment"],
            version=row["version"],
            reward=reward,
            recorded_at=now,
        )
    existing = await pool.fetchrow(_EXISTING, prediction_id)
    if existing is not None:
        raise Conflict(f"prediction {prediction_id} already has a reward ({existing['reward']:g})")
    raise NotFound(f"no prediction {prediction_id}")
