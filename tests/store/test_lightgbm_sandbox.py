"""The LightGBM sandbox: warm children that read each model file with LightGBM and Treelite at
once, replaced after a crash or overrun.

A FIFO stands in for a file that hangs LightGBM: opening it blocks until a writer comes, so the
child is stuck in the library as surely as on a file its parser spins on, and the test can tell
when it got there (its own open for writing returns). Treelite's crash and spin are real files:
one-field edits that LightGBM reads without complaint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightgbm
import numpy as np
import pytest

from app.services.artifacts import inspect_model
from app.services.lightgbm_sandbox import LightGBMSandbox, SandboxClosed
from domain.errors import InvalidInput
from tests.procs import alive, in_group, kill_group, survivors

TREES = (1, 2, 3, 5, 8)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Model files of a LightGBM classifier over three features, by number of trees."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] - x[:, 2] > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1}
    booster = lightgbm.train(params, lightgbm.Dataset(x, y), num_boost_round=max(TREES))
    folder = tmp_path_factory.mktemp("sandbox")
    for trees in TREES:
        booster.save_model(folder / f"{trees}.txt", num_iteration=trees)
    return {trees: folder / f"{trees}.txt" for trees in TREES}


@pytest.fixture
def damaged(models: dict[int, Path], tmp_path: Path) -> Path:
    """Printable damage that passes the cheap checks and makes LightGBM abort."""
    path = tmp_path / "damaged.txt"
    path.write_bytes(models[3].read_bytes().replace(b"Tree=1", b"Tree-1", 1))
    return path


@pytest.fixture
def segfaults_treelite(models: dict[int, Path], tmp_path: Path) -> Path:
    """A split marked categorical in a file with no categories: LightGBM reads it, Treelite
    segfaults (it did so in the server's process before it moved into the sandbox)."""
    path = tmp_path / "categorical.txt"
    text = models[3].read_bytes()
    path.write_bytes(re.sub(rb"decision_type=\d+", b"decision_type=1", text, count=1))
    return path


@pytest.fixture
def spins_treelite(models: dict[int, Path], tmp_path: Path) -> Path:
    """A first split whose right child is itself: LightGBM reads it, Treelite walks it forever."""
    path = tmp_path / "cycle.txt"
    text = models[3].read_bytes()
    path.write_bytes(re.sub(rb"right_child=-?\d+", b"right_child=0", text, count=1))
    return path


@pytest.fixture
def stuck(tmp_path: Path) -> Path:
    path = tmp_path / "stuck.txt"
    os.mkfifo(path)
    return path


@pytest.fixture
def sandbox() -> Iterator[LightGBMSandbox]:
    with LightGBMSandbox(2, seconds=60) as opened:
        yield opened


@contextlib.contextmanager
def writing(fifo: Path, seconds: float = 60.0) -> Iterator[None]:
    """Hold `fifo` open for writing, from when a reader (a child, in LightGBM) has opened it."""
    with ThreadPoolExecutor(1) as thread:
        opening = thread.submit(os.open, fifo, os.O_WRONLY)
        try:
            fd = opening.result(timeout=seconds)
        except TimeoutError:
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # lets the open return
            os.close(opening.result())
            raise
    try:
        yield
    finally:
        os.close(fd)


def read(sandbox: LightGBMSandbox, path: Path) -> tuple[int, int]:
    reading = sandbox.probe(path)
    assert reading.error is None, reading.error
    assert reading.treelite == reading.lightgbm  # Treelite reads the same trees and features
    return reading.lightgbm.trees, reading.lightgbm.features


def test_the_child_stays_warm_across_files(
    sandbox: LightGBMSandbox, models: dict[int, Path]
) -> None:
    assert sandbox.pids() == []  # nothing starts before the first file
    assert read(sandbox, models[2]) == (2, 3)
    first = sandbox.pids()
    assert read(sandbox, models[5]) == (5, 3)
    assert read(sandbox, models[2]) == (2, 3)
    # one child of each library, the same ones for every file
    assert len(sandbox.pids("lightgbm")) == len(sandbox.pids("treelite")) == 1
    assert sandbox.pids() == first


def test_a_crash_is_refused_and_the_next_file_gets_a_new_child(
    sandbox: LightGBMSandbox, models: dict[int, Path], damaged: Path
) -> None:
    read(sandbox, models[1])
    before = sandbox.pids()
    reply = sandbox.probe(damaged)
    assert reply.error is not None and "LightGBM crashed reading it" in reply.error
    # LightGBM's child died; Treelite's, reading the file LightGBM refused, was stopped
    assert sandbox.pids() == [] and not any(map(alive, before))
    assert read(sandbox, models[8]) == (8, 3)
    assert not set(sandbox.pids()) & set(before)
    # through the public check, the same refusal as before the sandbox
    with pytest.raises(InvalidInput, match="not a LightGBM text model: LightGBM crashed"):
        inspect_model(damaged, "lightgbm", sandbox)
    assert inspect_model(models[3], "lightgbm", sandbox).num_trees == 3


def test_treelite_reads_in_the_child_and_its_crash_is_told_as_its_own(
    sandbox: LightGBMSandbox, models: dict[int, Path], segfaults_treelite: Path
) -> None:
    read(sandbox, models[1])
    [lightgbm], [before] = sandbox.pids("lightgbm"), sandbox.pids("treelite")
    reading = sandbox.probe(segfaults_treelite)
    assert (reading.lightgbm.error, reading.lightgbm.trees) == (None, 3)
    assert reading.treelite is not None and reading.treelite.error is not None
    assert reading.error == reading.treelite.error
    assert reading.error.startswith("Treelite crashed reading it (signal ")
    assert reading.error.endswith("; truncated or corrupted")
    # only Treelite's child is gone: LightGBM's read the file and is kept
    assert sandbox.pids() == [lightgbm] and not alive(before)
    assert read(sandbox, models[5]) == (5, 3)
    with pytest.raises(InvalidInput, match="not a LightGBM text model: Treelite crashed"):
        inspect_model(segfaults_treelite, "lightgbm", sandbox)


def test_a_treelite_overrun_is_refused_and_its_child_replaced(
    models: dict[int, Path], spins_treelite: Path
) -> None:
    with LightGBMSandbox(1, seconds=1) as sandbox:
        read(sandbox, models[1])
        [spinning] = sandbox.pids("treelite")
        reading = sandbox.probe(spins_treelite)
        assert reading.lightgbm.error is None
        assert reading.error == "Treelite did not finish reading it in 1 s"
        assert not alive(spinning)
        assert read(sandbox, models[2]) == (2, 3)


# the check of an upload as the server makes it, in a process of its own: what it loaded after
CHECK = """
import json, sys
from pathlib import Path
from app.services.artifacts import inspect_model

info = inspect_model(Path(sys.argv[1]), "lightgbm")
maps = Path("/proc/self/maps").read_text()
print(json.dumps({
    "trees": info.num_trees,
    "modules": sorted({"lightgbm", "treelite", "sklearn"} & set(sys.modules)),
    "libraries": [name for name in ("lib_lightgbm", "libtreelite") if name in maps],
}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_checking_process_loads_neither_library(models: dict[int, Path]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(models[3])],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(done.stdout) == {"trees": 3, "modules": [], "libraries": []}


def test_an_overrun_is_refused_and_its_child_replaced(models: dict[int, Path], stuck: Path) -> None:
    with LightGBMSandbox(1, seconds=1) as sandbox:
        read(sandbox, models[1])
        hung = sandbox.pids()  # both children open the FIFO: both are stuck in it
        reply = sandbox.probe(stuck)
        assert reply.error == "LightGBM did not finish reading it in 1 s"
        assert not any(map(alive, hung))
        assert read(sandbox, models[2]) == (2, 3)
        assert not set(sandbox.pids()) & set(hung)


def test_the_memory_limit_holds(models: dict[int, Path]) -> None:
    # set below what the child already uses: Python carries on in the memory it has, while
    # LightGBM's first allocation for the file fails
    with LightGBMSandbox(1, memory_bytes=1 << 20) as sandbox:
        reply = sandbox.probe(models[1])
    assert reply.error == "reading it needs more memory than the 1 MiB allowed"


def test_concurrent_callers_all_get_their_own_answer(
    sandbox: LightGBMSandbox, models: dict[int, Path], damaged: Path
) -> None:
    files = [*models.values(), damaged] * 6
    with ThreadPoolExecutor(8) as threads:
        replies = list(threads.map(sandbox.probe, files))
    for path, reply in zip(files, replies, strict=True):
        if path == damaged:
            assert reply.error is not None and "crashed" in reply.error
        else:
            assert (reply.error, reply.lightgbm.trees) == (None, int(path.stem))
    # no more children of a library than the pool's size; the last answers may have been
    # crashes, whose children are gone until a probe starts new ones: one more probe, then
    # one at least of each
    for library in ("lightgbm", "treelite"):
        assert len(sandbox.pids(library)) <= 2
    assert sandbox.probe(models[1]).lightgbm.trees == 1
    for library in ("lightgbm", "treelite"):
        assert 1 <= len(sandbox.pids(library)) <= 2


def test_closing_stops_idle_and_busy_children(
    sandbox: LightGBMSandbox, models: dict[int, Path], stuck: Path
) -> None:
    with ThreadPoolExecutor(1) as thread:
        busy = thread.submit(sandbox.probe, stuck)
        with writing(stuck):  # a child has opened the file: it is busy
            # so a second child of each library started, now idle
            assert read(sandbox, models[2]) == (2, 3)
            children = sandbox.pids()
            sandbox.close()
            with pytest.raises(SandboxClosed):
                busy.result(timeout=60)
    assert len(children) == 4
    assert not any(alive(pid) for pid in children)
    assert sandbox.pids() == []
    with pytest.raises(SandboxClosed):
        sandbox.probe(models[1])


# a server that has a sandbox busy on a file that hangs it, then waits to be killed
SERVER = """
import sys
from pathlib import Path
from app.services.lightgbm_sandbox import LightGBMSandbox

sandbox = LightGBMSandbox(2)
sandbox.probe(Path(sys.argv[1]))
print(*sandbox.pids(), flush=True)
sandbox.probe(Path(sys.argv[2]))
"""


@pytest.mark.processes
def test_a_killed_server_leaves_no_sandbox_child(models: dict[int, Path], stuck: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(models[1]), str(stuck)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: everything it started is in it
    )
    try:
        assert server.stdout is not None
        children = set(map(int, server.stdout.readline().split()))
        # the children are inside their libraries: stdin's end would not stop them
        with writing(stuck):
            assert len(children) == 2 and children <= {p.pid for p in in_group(server.pid)}
            server.kill()
            server.wait()
            assert survivors(server.pid) == []
    finally:
        kill_group(server.pid)
        if server.stdout is not None:
            server.stdout.close()
