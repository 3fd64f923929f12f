"""The prediction log: every scored row, written in batches off the request path.

A request only appends one entry to an in-memory queue; a background writer turns entries
into rows (scoring the shadow version on the way) and writes them with COPY. The queue is
bounded in rows: under overload, new rows are dropped and counted
(`model_ledger_prediction_log_dropped_rows_total{reason="overload"}`) rather than slowing
scoring, so a prediction id may then be unknown to `POST /v1/feedback`. A failed write drops
its batch the same way (`reason="write_failed"`). The input row is kept for a sample of
predictions only (`prediction_sample_rate`): the drift job's window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import numpy as np
import numpy.typing as npt

from app.scoring.features import FeatureValue
from app.scoring.ids import IdPool, prediction_ids
from app.scoring.metrics import scorer_metrics
from app.scoring.routing import SHADOW, Route, Served

_log = logging.getLogger("model_ledger.scoring")
_COLUMNS = (
    "prediction_id",
    "name",
    "environment",
    "version",
    "library_sha256",
    "arm",
    "score",
    "features",
    "created_at",
)
# rows turned into records between two yields to the loop: a 10,000-row entry must not
# hold requests up for its whole conversion
_CHUNK_ROWS = 2_000
# shadow batches at least this big are scored in a thread (the library releases the GIL)
_THREAD_ROWS = 2_000
_PURGE_BATCH = 10_000
_PURGE_SQL = (
    "DELETE FROM predictions WHERE prediction_id IN (SELECT prediction_id FROM predictions "
    "WHERE created_at < $1 LIMIT $2)"
)
_json = msgspec.json.Encoder()

Inputs = list[float | None] | list[float] | npt.NDArray[np.float64]


@dataclass(slots=True)
class _Entry:
    seq: int
    name: str
    environment: str
    served: Served
    arm: str
    ids: list[str]
    scores: list[Any]
    # one row (a list) or an (n, features) matrix: what the library scored
    inputs: Inputs
    # the request's features by name, so the shadow reads them with its own schema
    features: Mapping[str, FeatureValue] | None
    shadow: Served | None
    at: float


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    """How the log samples, batches and bounds its queue."""

    sample_rate: float = 0.1
    max_pending_rows: int = 100_000
    batch_rows: int = 5_000
    flush_seconds: float = 0.2


class PredictionLog:
    """Queues scored rows and writes them in batches; see the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: LogSettings,
        ids: IdPool | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._ids = ids
        self.settings = settings
        self.rng = rng or random.Random()  # noqa: S311 - sampling, not secrets
        self._pending: deque[_Entry] = deque()
        self._pending_rows = 0
        self._enqueued = 0  # sequence number of the latest entry queued
        self._written = 0  # ... and of the latest one written (or given up on)
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._running = False
        # the timeout of the writer's current wait for a batch; None while it writes
        self._waiting: float | None = None
        self._metrics = scorer_metrics()

    def record(
        self,
        route: Route,
        served: Served,
        arm: str,
        ids: list[str],
        scores: list[Any],
        *,
        inputs: Inputs,
        features: Mapping[str, FeatureValue] | None,
    ) -> bool:
        """Queue a request's rows (never waits); False when dropped for overload."""
        count = len(ids)
        if self._pending_rows + count > self.settings.max_pending_rows:
            self._metrics.dropped_rows.labels("overload").inc(count)
            return False
        self._enqueued += 1
        self._pending.append(
            _Entry(
                self._enqueued,
                route.name,
                route.environment,
                served,
                arm,
                ids,
                scores,
                inputs,
                features,
                route.shadow,
                time.time(),
            )
        )
        self._pending_rows += count
        if self._pending_rows >= self.settings.batch_rows:
            self._wake.set()
        return True

    @property
    def pending_rows(self) -> int:
        """Rows queued and not yet taken by the writer."""
        return self._pending_rows

    @property
    def waiting_seconds(self) -> float | None:
        """How long the writer's current wait for a batch may last; None while it writes or
        is about to (woken)."""
        return None if self._wake.is_set() else self._waiting

    @property
    def settled(self) -> bool:
        """True when every entry queued so far is written (or was given up on)."""
        return self._written >= self._enqueued

    async def run(self) -> None:
        """The writer: batches every `flush_seconds`, or sooner when a batch is full."""
        self._running = True
        try:
            while True:
                self._waiting = self.settings.flush_seconds
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._waiting):
                        await self._wake.wait()
                self._waiting = None
                self._wake.clear()
                await self._write_pending()
                if self._ids is not None:
                    self._ids.top_up()
        finally:
            self._running = False
            # what is still queued at shutdown is written, not lost
            with contextlib.suppress(Exception):
                await asyncio.shield(self._write_pending())

    async def flush(self) -> None:
        """Return once every row queued before the call is written (or given up on)."""
        target = self._enqueued
        if not self._running:
            await self._write_pending()
            return
        async with self._progress:
            self._wake.set()
            await self._progress.wait_for(lambda: self._written >= target)

    async def purge(self, older_than: datetime) -> int:
        """Delete rows created before `older_than`, a batch per statement; the count."""
        deleted = 0
        while True:
            status: str = await self._pool.execute(_PURGE_SQL, older_than, _PURGE_BATCH)
            count = int(status.rsplit(" ", 1)[-1])
            deleted += count
            if count < _PURGE_BATCH:
                return deleted

    async def _write_pending(self) -> None:
        if not self._pending:
            return
        entries = list(self._pending)
        self._pending.clear()
        self._pending_rows = 0
        try:
            records = await self._records(entries)
            await self._pool.copy_records_to_table("predictions", records=records, columns=_COLUMNS)
            for arm, count in _count_arms(records).items():
                self._metrics.logged_rows.labels(arm).inc(count)
        except Exception:
            rows = sum(len(e.ids) for e in entries)
            self._metrics.dropped_rows.labels("write_failed").inc(rows)
            _log.exception("prediction log: %d rows could not be written", rows)
        async with self._progress:
            self._written = entries[-1].seq
            self._progress.notify_all()

    async def _records(self, entries: list[_Entry]) -> list[tuple[Any, ...]]:
        records: list[tuple[Any, ...]] = []
        converted = 0
        for entry in entries:
            records += self._rows(entry, entry.served, entry.arm, entry.ids, entry.scores)
            converted += len(entry.ids)
            if entry.shadow is not None:
                shadow = await _score_shadow(entry, entry.shadow)
                if shadow is not None:
                    ids = prediction_ids(len(shadow))
                    records += self._rows(entry, entry.shadow, SHADOW, ids, shadow)
                    converted += len(ids)
            if converted >= _CHUNK_ROWS:
                converted = 0
                await asyncio.sleep(0)
        return records

    def _rows(
        self,
        entry: _Entry,
        served: Served,
        arm: str,
        ids: Sequence[str],
        scores: Sequence[Any],
    ) -> list[tuple[Any, ...]]:
        records: list[tuple[Any, ...]] = []
        created = datetime.fromtimestamp(entry.at, UTC)
        head = (entry.name, entry.environment, served.version, served.library_sha256, arm)
        rate, draw = self.settings.sample_rate, self.rng.random
        inputs, encode = entry.inputs, _json.encode
        single = isinstance(inputs, list)
        for index, (prediction, score) in enumerate(zip(ids, scores, strict=True)):
            features = None
            if rate > 0 and draw() < rate:
                row = inputs if single else inputs[index].tolist()  # type: ignore[union-attr]
                features = encode(row).decode()  # NaN (missing) becomes null
            records.append((prediction, *head, encode(score).decode(), features, created))
        return records


async def _score_shadow(entry: _Entry, shadow: Served) -> list[Any] | None:
    """The shadow version's scores of the entry's inputs; None when it cannot read them."""
    try:
        if entry.features is not None:
            return [_plain(shadow.library.predict_one(shadow.schema.row(entry.features)))]
        if isinstance(entry.inputs, list):
            return [_plain(shadow.library.predict_one(entry.inputs))]  # type: ignore[arg-type]
        matrix = entry.inputs
        if len(matrix) >= _THREAD_ROWS:
            scores = await asyncio.to_thread(shadow.library.predict_batch, matrix)
        else:
            scores = shadow.library.predict_batch(matrix)
    except Exception as error:  # a schema or width the shadow does not share
        scorer_metrics().shadow_skipped.inc()
        _log.debug("shadow version %d skipped: %s", shadow.version, error)
        return None
    listed: list[Any] = scores.tolist()
    return listed


def _plain(score: float | npt.NDArray[np.float64]) -> Any:
    return score if isinstance(score, float) else score.tolist()


def _count_arms(records: list[tuple[Any, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record[5]] = counts.get(record[5], 0) + 1
    return counts


def retention_cutoff(now: datetime, days: float) -> datetime:
    """The creation time before which logged predictions are deleted."""
    return now - timedelta(days=days)
