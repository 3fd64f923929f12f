"""A process pool for the heavy part of jobs, so training or compiling never blocks the loop."""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

_T = TypeVar("_T")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """Initializer of each child: the kernel kills it (SIGKILL) when its parent dies.

    A child outliving a killed worker (kill -9 leaves no time to stop it) would wait on its
    task queue forever and hold the resource tracker's pipe open, keeping that alive too.
    The signal is tied to the thread that spawned the child: the pool spawns on `run`, from
    the event loop's thread, which lives as long as the process. Linux only; elsewhere a
    child outlives a killed parent.
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


class ProcessPool:
    """Runs functions in child processes; a timed-out call kills the children it ran on."""

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: the worker has threads (asyncio, LightGBM's OpenMP) and a forked
        # child of a threaded process can deadlock on a lock held at fork time
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=context,
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )

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
