"""The prediction log: every scored row, written in batches off the request path.

A request only appends one entry to an in-memory queue; a background writer turns entries
into rows (scoring the shadow version on the way) and writes them with COPY. The rows held
in memory are bounded (`max_pending_rows`): past the bound, new rows are dropped and counted
(`model_ledger_prediction_log_dropped_rows_total`, `reason="overload"`, or
`reason="database_unavailable"` while writes wait for the database) rather than slowing
scoring, so a prediction id may then be unknown to `POST /v1/feedback`.

While the database is away, rows are kept and the write is retried (every
`flush_seconds`, backing off to `_MAX_RETRY_SECONDS`) until it returns: no row within the
bound is lost. A write the database refuses (not an outage) drops its batch
(`reason="write_failed"`), as does stopping the process while the database is still away.
The input row is kept for a sample of predictions only (`prediction_sample_rate`): the drift
job's window.
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

from app.outages import is_outage
from app.scoring.features import FeatureValue
from app.scoring.ids import IdPool, prediction_ids
from app.scoring.metrics import score_meter, scorer_metrics
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
    "unit_id",
    "experiment_id",
    "latency_us",
)
# rows turned into records between two yields to the loop: a 10,000-row entry must not
# hold requests up for its whole conversion
_CHUNK_ROWS = 2_000
# shadow batches at least this big are scored in a thread (the library releases the GIL)
_THREAD_ROWS = 2_000
_PURGE_BATCH = 10_000
# while the database is away, writes are retried at most this far apart
_MAX_RETRY_SECONDS = 1.0
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
    unit_id: str | None = None
    # the experiment whose unit hash chose the arm (None: chance did)
    experiment: str | None = None
    latency_us: float | None = None


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
        self._attempted = 0  # ... and of the latest one a write was tried with
        self._taken = 0  # ... and of the latest one the writer took from the queue
        # rows of taken entries not written yet (their write waits for the database)
        self._held: list[tuple[Any, ...]] = []
        self._retry_at = 0.0
        self._failures = 0
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
        unit_id: str | None = None,
        latency_us: float | None = None,
    ) -> bool:
        """Queue a request's rows (never waits); False when dropped for overload."""
        count = len(ids)
        if self._pending_rows + len(self._held) + count > self.settings.max_pending_rows:
            reason = "database_unavailable" if self._held else "overload"
            self._metrics.dropped_rows.labels(reason).inc(count)
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
                unit_id,
                route.experiment if unit_id is not None else None,
                latency_us,
            )
        )
        self._pending_rows += count
        if self._pending_rows >= self.settings.batch_rows:
            self._wake.set()
        return True

    @property
    def pending_rows(self) -> int:
        """Rows in memory, not written yet (queued, or held while the database is away)."""
        return self._pending_rows + len(self._held)

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
                self._metrics.pending_rows.set(self.pending_rows)
                if self._ids is not None:
                    self._ids.top_up()
        finally:
            self._running = False
            # what is still queued at shutdown is written, not lost (unless the database
            # is away: then it is dropped, and counted)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._write_pending(final=True))

    async def flush(self) -> None:
        """Return once a write was tried with every row queued before the call (written,
        given up on, or held because the database is away)."""
        target = self._enqueued
        if not self._running:
            await self._write_pending()
            return
        async with self._progress:
            self._wake.set()
            self._retry_at = 0.0
            await self._progress.wait_for(lambda: self._attempted >= target)

    async def purge(self, older_than: datetime) -> int:
        """Delete rows created before `older_than`, a batch per statement; the count."""
        deleted = 0
        while True:
            status: str = await self._pool.execute(_PURGE_SQL, older_than, _PURGE_BATCH)
            count = int(status.rsplit(" ", 1)[-1])
            deleted += count
            if count < _PURGE_BATCH:
                return deleted

    async def _write_pending(self, *, final: bool = False) -> None:
        entries = list(self._pending)
        self._pending.clear()
        self._pending_rows = 0
        if entries:
            try:
                self._held += await self._records(entries)
            except Exception as error:  # a bug: the writer must survive it
                rows = sum(len(e.ids) for e in entries)
                self._metrics.dropped_rows.labels("write_failed").inc(rows)
                _log.exception("prediction log: %d rows could not be converted: %s", rows, error)
            self._taken = entries[-1].seq
        if not self._held:
            if entries:
                await self._progressed(written=True)
            return
        if time.monotonic() < self._retry_at and not final:
            return
        records, self._held = self._held, []
        try:
            await self._pool.copy_records_to_table("predictions", records=records, columns=_COLUMNS)
        except Exception as error:
            if final or not is_outage(error):
                self._drop(records, error)
            else:
                self._hold(records, error)
                await self._progressed(written=False)
                return
        else:
            for arm, count in _count_arms(records).items():
                self._metrics.logged_rows.labels(arm).inc(count)
            if self._failures:
                _log.warning("prediction log: the database is back, %d rows written", len(records))
        self._failures, self._retry_at = 0, 0.0
        await self._progressed(written=True)

    def _hold(self, records: list[tuple[Any, ...]], error: BaseException) -> None:
        """Keep rows whose write failed because the database is away, to write them later."""
        self._held = records + self._held
        if not self._failures:
            _log.warning("prediction log: database away (%s); holding the rows", error)
        self._failures += 1
        backoff = self.settings.flush_seconds * 2 ** min(self._failures, 10)
        self._retry_at = time.monotonic() + min(backoff, _MAX_RETRY_SECONDS)

    def _drop(self, records: list[tuple[Any, ...]], error: BaseException) -> None:
        self._metrics.dropped_rows.labels("write_failed").inc(len(records))
        _log.error("prediction log: %d rows could not be written: %s", len(records), error)

    async def _progressed(self, *, written: bool) -> None:
        """A write was tried with every entry taken so far: it landed (or was given up on),
        or its rows are held for the database to return."""
        async with self._progress:
            self._attempted = self._taken
            if written:
                self._written = self._taken
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
                    meter = score_meter(entry.name, entry.shadow.version, entry.environment, SHADOW)
                    meter.rows.inc(len(shadow))
                    ids = prediction_ids(len(shadow))
                    records += self._rows(entry, entry.shadow, SHADOW, ids, shadow, tail=False)
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
        *,
        tail: bool = True,
    ) -> list[tuple[Any, ...]]:
        records: list[tuple[Any, ...]] = []
        created = datetime.fromtimestamp(entry.at, UTC)
        # the shadow's rows carry no assignment: no unit was routed to it
        end = (entry.unit_id, entry.experiment, entry.latency_us) if tail else (None, None, None)
        head = (entry.name, entry.environment, served.version, served.library_sha256, arm)
        rate, draw = self.settings.sample_rate, self.rng.random
        inputs, encode = entry.inputs, _json.encode
        single = isinstance(inputs, list)
        for index, (prediction, score) in enumerate(zip(ids, scores, strict=True)):
            features = None
            if rate > 0 and draw() < rate:
                row = inputs if single else inputs[index].tolist()  # type: ignore[union-attr]
                features = encode(row).decode()  # NaN (missing) becomes null
            records.append((prediction, *head, encode(score).decode(), features, created, *end))
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
