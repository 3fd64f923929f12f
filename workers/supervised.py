"""An arq Worker that rides out Redis outages instead of stopping.

arq 0.28's `Worker.main` polls Redis in a loop and lets any error out of an iteration: the
first command to meet a dead Redis ends the loop. Beside the API (`serve`) the worker's task
then ended silently (no job ran and no cron fired until the process was restarted); the
standalone worker exited. This worker keeps polling through an outage, backing off to at most
`_MAX_BACKOFF_SECONDS`, so it takes jobs again within about that long of Redis answering; its
client (`queue_connection`) replaces dead connections by itself. Two more arq habits are
corrected here: a claim transaction that met a dead connection kept its job slot forever (after
`max_jobs` of them the worker took nothing), and the cron schedule, frozen during the outage,
would replay every missed occurrence afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.exceptions import RedisError, ResponseError, WatchError

_log = logging.getLogger("model_ledger.worker")

# what a lost, refused or timed-out Redis connection raises
REDIS_AWAY = (RedisError, OSError)
_MAX_BACKOFF_SECONDS = 1.0


class SupervisedWorker(Worker):
    """arq's Worker, with a polling loop that no Redis outage ends."""

    _backoff = 0.25
    _away_since: float | None = None

    async def main(self) -> None:
        """Wait for Redis, start as arq does, then poll until stopped."""
        while not await self._answers():
            await self._wait()
        await super().main()

    async def _answers(self) -> bool:
        try:
            await self.pool.ping()
        except REDIS_AWAY as error:
            self._note_away(error)
            return False
        return True

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_AWAY as error:
            self._note_away(error)
            await self._wait()
            return
        except Exception:
            # a poll that fails for another reason must not end the worker either
            _log.exception("job worker poll failed; polling again")
            await self._wait()
            return
        if self._away_since is not None:
            self._back()

    def _note_away(self, error: BaseException) -> None:
        if self._away_since is None:
            self._away_since = self.loop.time()
            _log.warning("job worker waits for Redis: %s", error)

    def _back(self) -> None:
        assert self._away_since is not None
        _log.warning(
            "job worker polls again: Redis answers after %.1fs away",
            self.loop.time() - self._away_since,
        )
        self._away_since = None
        self._backoff = 0.25
        # the schedule stood still while Redis was away: resume it from now rather than
        # enqueue each missed occurrence (startup crons, like checkpoint signing, run now)
        for cron_job in self.cron_jobs:
            cron_job.next_run = None

    async def _wait(self) -> None:
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF_SECONDS)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs, except that a slot whose claim failed is given back."""
        for job_id in job_ids:
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            try:
                started = await self._claim(job_id.decode())
            except BaseException:
                self._release_sem_dec_counter_on_complete()
                raise
            if not started:
                self._release_sem_dec_counter_on_complete()

    async def _claim(self, job_id: str) -> bool:
        """Mark the job in progress and start it, unless another worker has it or it is not due."""
        in_progress_key = in_progress_key_prefix + job_id
        async with self.pool.pipeline(transaction=True) as pipe:
            await pipe.watch(in_progress_key)
            ongoing = await pipe.exists(in_progress_key)
            score = await pipe.zscore(self.queue_name, job_id)
            if ongoing or not score or score > timestamp_ms():
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.psetex(in_progress_key, int(self.in_progress_timeout_s * 1000), b"1")
            try:
                await pipe.execute()
            except (ResponseError, WatchError):  # WatchError also when the connection died
                return False
        task = self.loop.create_task(self.run_job(job_id, int(score)))
        task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
        self.tasks[job_id] = task
        return True

    async def close(self) -> None:
        """arq's close, except that Redis being away does not skip `on_shutdown`."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        with contextlib.suppress(*REDIS_AWAY):
            await self.pool.delete(self.health_check_key)
        try:
            if self.on_shutdown:
                await self.on_shutdown(self.ctx)
        finally:
            await self.pool.aclose(close_connection_pool=True)
            self._pool = None
