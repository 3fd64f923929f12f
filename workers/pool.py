"""A process pool for the heavy part of jobs, so training or compiling never blocks the loop."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

_T = TypeVar("_T")


class ProcessPool:
    """Runs functions in child processes; a timed-out call kills the children it ran on."""

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: the worker has threads (asyncio, LightGBM's OpenMP) and a forked
        # child of a threaded process can deadlock on a lock held at fork time
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(max_workers=self._processes, mp_context=context)

    async def run(self, seconds: float, function: Callable[..., _T], *args: Any) -> _T:
        """`function(*args)` in a child process; TimeoutError after `seconds`."""
        future = asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        try:
            async with asyncio.timeout(seconds):
                return await future
        except TimeoutError:
            self.restart()
            raise

    def restart(self) -> None:
        """Kill the children (a runaway computation ignores cancellation) and start afresh."""
        # ProcessPoolExecutor has no public way to stop a running call before Python 3.14
        for process in list((self._executor._processes or {}).values()):
            process.kill()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._start()

    def close(self) -> None:
        """Stop the children."""
        self._executor.shutdown(wait=True, cancel_futures=True)
