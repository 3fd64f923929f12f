"""The job process pool's children die with their parent, even when it is killed (SIGKILL)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.procs import in_group, kill_group, survivors

pytestmark = pytest.mark.processes

# a parent whose pool has run one call (so its child and the resource tracker exist); it
# waits to be killed: until then its stdin stays open (and ends with the test's process)
PARENT = """
import asyncio, os, sys
from workers.pool import ProcessPool

async def main():
    pool = ProcessPool(1)
    print(await pool.run(60, os.getpid), flush=True)
    sys.stdin.read()

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_a_killed_parent_leaves_neither_pool_child_nor_resource_tracker() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: everything it started is in it
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        group = in_group(parent.pid)
        assert child in {p.pid for p in group}
        # what the report found orphaned: the pool's child and multiprocessing's tracker
        assert any("resource_tracker" in p.cmdline for p in group), group
        parent.kill()
        parent.wait()
        assert survivors(parent.pid) == []
    finally:
        kill_group(parent.pid)
        for pipe in (parent.stdin, parent.stdout):
            if pipe is not None:
                pipe.close()
