"""Wiring the scorer into a process: its services from settings, and its background tasks."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.scoring.announce import Announcer, safe_instance
from app.scoring.ids import IdPool
from app.scoring.predlog import LogSettings, PredictionLog, retention_cutoff
from app.scoring.scorer import Scorer, ScorerConfig
from app.settings import Settings
from app.store.artifacts import ArtifactStore
from app.store.events import EventStore
from app.store.projector import Projector
from app.store.watch import Subscription
from domain.policy import PolicyBook

_log = logging.getLogger("model_ledger.scoring")


@dataclass(frozen=True)
class Scoring:
    """The scorer and its prediction log, as one process runs them."""

    scorer: Scorer
    predictions: PredictionLog
    settings: Settings
    clock: Callable[[], datetime]

    def tasks(self, subscription: Subscription) -> list[asyncio.Task[None]]:
        """Start following deployments, writing the log and purging old predictions."""
        return [
            asyncio.create_task(self.scorer.follow(subscription)),
            asyncio.create_task(self.predictions.run()),
            asyncio.create_task(self._purge_forever()),
        ]

    async def purge(self) -> int:
        """Delete logged predictions past the retention period; how many."""
        cutoff = retention_cutoff(self.clock(), self.settings.prediction_retention_days)
        return await self.predictions.purge(cutoff)

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.prediction_retention_interval_seconds)
            try:
                deleted = await self.purge()
            except Exception:
                _log.exception("prediction log retention failed")
            else:
                _log.info("prediction log retention: %d rows deleted", deleted)


def instance_name(settings: Settings) -> str:
    """This process's scorer instance name."""
    return safe_instance(settings.scorer_instance or f"{socket.gethostname()}-{os.getpid()}")


def build_scoring(
    settings: Settings,
    *,
    pool: asyncpg.Pool,
    store: EventStore,
    projector: Projector,
    policies: Callable[[], Awaitable[PolicyBook]],
    artifacts: ArtifactStore,
    clock: Callable[[], datetime],
) -> Scoring:
    """The scorer and prediction log configured by `settings` (nothing starts yet)."""
    ids = IdPool()
    predictions = PredictionLog(
        pool,
        LogSettings(
            sample_rate=settings.prediction_sample_rate,
            max_pending_rows=settings.prediction_log_max_pending_rows,
            batch_rows=settings.prediction_log_batch_rows,
            flush_seconds=settings.prediction_log_flush_seconds,
        ),
        ids,
    )
    instance = instance_name(settings)
    scorer = Scorer(
        pool=pool,
        projector=projector,
        policies=policies,
        artifacts=artifacts,
        log=predictions,
        announcer=Announcer(store, instance, settings.scorer_loaded_interval_seconds),
        config=ScorerConfig(instance=instance, max_rows=settings.score_max_rows),
        ids=ids,
    )
    return Scoring(scorer=scorer, predictions=predictions, settings=settings, clock=clock)
