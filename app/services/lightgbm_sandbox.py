"""A warm sandbox for LightGBM files: long-lived child processes read uploaded model files.

LightGBM's parser aborts, segfaults or spins on corrupted files (measured: truncations and
stray bytes do all three), and Treelite's is C++ reading the same hostile bytes, so neither
reads an upload in the server's process. Each file goes to two children at once: one that
reads it with LightGBM, one with Treelite (which compiling it needs); on two cores that took
a 50-tree check from 3.9 to 2.6 ms, against one child reading with both in turn. A fresh
interpreter per file cost ~30 ms of start-up for a ~1 ms read; these children start once,
load their library once, and read one file at a time under a memory limit and a deadline. A
child that crashes, overruns or refuses a file is stopped, and the next file gets a new one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import msgspec

from app.services import lightgbm_child
from app.services.lightgbm_child import Ready, Reply, Request, frame

_HEADER_SIZE = 4
# the first start imports msgspec and loads a 5 MB library on a possibly busy machine
_START_SECONDS = 60.0


# "[06:01:17] /project/src/model_loader/lightgbm.cc:282: " in front of Treelite's messages
_NATIVE_PREFIX = re.compile(r"^\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def native_reason(message: str) -> str:
    """A native library's error message as a reason to give: its first line, unprefixed
    ("" for none)."""
    lines = message.strip().splitlines()
    return _NATIVE_PREFIX.sub("", lines[0])[:300] if lines else ""


class SandboxClosed(RuntimeError):
    """The sandbox was closed (the server is stopping) before it could read the file."""


class Reading(msgspec.Struct, frozen=True):
    """What the two libraries read in a file; `treelite` None when LightGBM refused it."""

    lightgbm: Reply
    treelite: Reply | None = None

    @property
    def error(self) -> str | None:
        """Why the file is refused, LightGBM's reason first; None when both read it."""
        if self.lightgbm.error is not None or self.treelite is None:
            return self.lightgbm.error
        return self.treelite.error


# what a child reads with: its name in messages, the package and the library it ships
_LIBRARIES = {
    "lightgbm": ("LightGBM", "lightgbm", "lib_lightgbm"),
    "treelite": ("Treelite", "treelite", "libtreelite"),
}


class _Child:
    """One sandbox process, reading with one library, and its two pipes."""

    def __init__(self, kind: str, memory_bytes: int) -> None:
        self.library, package, name = _LIBRARIES[kind]
        self.memory_bytes = memory_bytes
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our script, our paths
            [
                sys.executable,
                "-I",
                lightgbm_child.__file__,
                kind,
                str(_library(package, name)),
                str(memory_bytes),
                str(os.getpid()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # the libraries' complaints about hostile files
            # one thread: address space per thread would make the memory limit depend on
            # the number of cores, and a check needs no parallelism
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            ready = self._receive(time.monotonic() + _START_SECONDS)
        except TimeoutError as error:
            self.stop()
            raise RuntimeError(
                f"the {self.library} sandbox did not start in {_START_SECONDS:.0f} s"
            ) from error
        if ready is None:
            how = self._exit()
            self.stop()
            raise RuntimeError(f"the {self.library} sandbox did not start ({how})")
        msgspec.msgpack.decode(ready, type=Ready)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, path: Path) -> bool:
        """Give it `path` to read; False when it is gone (its reply tells how)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(frame(Request(path=str(path.absolute()))))
            self.process.stdin.flush()
        except BrokenPipeError:
            return False
        return True

    def reply(self, deadline: float, seconds: float) -> Reply:
        """Its reading of the file sent, or its refusal in words to give (a crash, an overrun
        included: it is stopped then)."""
        library = self.library
        try:
            answer = self._receive(deadline)
        except TimeoutError:
            self.stop()
            return Reply(error=f"{library} did not finish reading it in {seconds:.0f} s")
        if answer is None:
            return self.crashed()
        reply = msgspec.msgpack.decode(answer, type=Reply)
        if reply.error == "std::bad_alloc":  # the address-space limit, as both say it
            limit = self.memory_bytes >> 20
            return Reply(error=f"reading it needs more memory than the {limit} MiB allowed")
        if reply.error is not None and library == "Treelite":  # LightGBM's words are plain
            return Reply(error=f"Treelite cannot import it: {native_reason(reply.error)}")
        return reply

    def crashed(self) -> Reply:
        """Its refusal when it died reading the file."""
        return Reply(
            error=f"{self.library} crashed reading it ({self._exit()}); truncated or corrupted"
        )

    def kill(self) -> None:
        """SIGKILL (it holds nothing worth a graceful end); safe from any thread."""
        self.process.kill()

    def stop(self) -> None:
        """Kill, reap, close the pipes: only by the thread that holds this child."""
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def _receive(self, deadline: float) -> bytes | None:
        """The next frame's payload; None when the child's stdout ends (it died)."""
        header = self._read_exactly(_HEADER_SIZE, deadline)
        if header is None:
            return None
        return self._read_exactly(int.from_bytes(header, "big"), deadline)

    def _read_exactly(self, size: int, deadline: float) -> bytes | None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        # poll, not select: a busy server's descriptors go past select's limit of 1024
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        data = bytearray()
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError
            chunk = os.read(fd, size - len(data))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def _exit(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # its stdout closed, yet it lives: end it
            self.stop()
            code = self.process.wait()
        return f"signal {-code}" if code < 0 else f"exit {code}"


def _library(package: str, name: str) -> Path:
    """The native library `name` that Python package `package` ships (without importing it)."""
    spec = importlib.util.find_spec(package)
    folders = [
        Path(folder) / "lib" for folder in ((spec and spec.submodule_search_locations) or [])
    ]
    libraries = [f for d in folders for f in d.glob(f"{name}.*") if f.suffix != ".a"]
    if not libraries:
        raise RuntimeError(f"{package}'s native library is not installed")
    return libraries[0]


class LightGBMSandbox:
    """Up to `processes` files read at once, each by a LightGBM child and a Treelite child,
    started on first need.

    Thread-safe and blocking: its callers are threads (uploads check models through
    `asyncio.to_thread`), and a caller waits for free children. A file may take `seconds`,
    and a second more per MiB; a child may use `memory_bytes` of address space.
    """

    def __init__(
        self, processes: int = 2, *, memory_bytes: int = 4 << 30, seconds: float = 30.0
    ) -> None:
        self._seconds = seconds
        self._lightgbm = _Pool("lightgbm", processes, memory_bytes)
        self._treelite = _Pool("treelite", processes, memory_bytes)

    def probe(self, path: Path) -> Reading:
        """What LightGBM and Treelite read in `path`, or why one cannot (crashes and overruns
        included)."""
        # a second per MiB is far more than it needs
        seconds = self._seconds + path.stat().st_size / (1 << 20)
        deadline = time.monotonic() + seconds
        # always LightGBM's first: a caller holding a Treelite child holds a LightGBM one
        lightgbm = self._lightgbm.take()
        try:
            treelite = self._treelite.take()
        except BaseException:
            self._lightgbm.give_back(lightgbm, keep=True)
            raise
        held = {lightgbm: False, treelite: False}  # keep each after its reply?
        try:
            sent = lightgbm.send(path), treelite.send(path)  # both read at once
            # the file is LightGBM's to refuse first
            read = lightgbm.reply(deadline, seconds) if sent[0] else lightgbm.crashed()
            held[lightgbm] = read.error is None
            if read.error is not None:  # Treelite's reading is not wanted: it is stopped
                reading = Reading(read)
            else:
                other = treelite.reply(deadline, seconds) if sent[1] else treelite.crashed()
                held[treelite] = other.error is None
                reading = Reading(read, other)
        finally:
            # a child that refused a file is not trusted with the next: the libraries' error
            # paths are where a leak or damaged state would hide
            self._lightgbm.give_back(lightgbm, keep=held[lightgbm])
            self._treelite.give_back(treelite, keep=held[treelite])
        if self._lightgbm.closed:  # a child may have been killed under it: no verdict
            raise SandboxClosed("the LightGBM sandbox is closed")
        return reading

    def pids(self, library: str | None = None) -> list[int]:
        """Process ids of the running children (`lightgbm` or `treelite`: of that library's)."""
        pools = {"lightgbm": self._lightgbm, "treelite": self._treelite}
        chosen = [pools[library]] if library else list(pools.values())
        return sorted(pid for pool in chosen for pid in pool.pids())

    def close(self) -> None:
        """Stop every child, idle or busy; later probes raise SandboxClosed."""
        self._lightgbm.close()
        self._treelite.close()

    def __enter__(self) -> LightGBMSandbox:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class _Pool:
    """Up to `processes` children reading with one library, started on first need."""

    def __init__(self, kind: str, processes: int, memory_bytes: int) -> None:
        self._kind, self._memory_bytes = kind, memory_bytes
        # each of the `processes` slots is unstarted, idle or held by a caller; idle children
        # are taken last in, first out, so a warm one is reused and a second starts only
        # when two files overlap
        self._changed = threading.Condition()
        self._unstarted = processes
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self.closed = False
        # PR_SET_PDEATHSIG fires when the thread that started a child ends, not the process:
        # children start on this one thread, which lives as long as the sandbox (the calling
        # threads are asyncio's, which come and go)
        self._starter = ThreadPoolExecutor(1, thread_name_prefix=f"{kind}-sandbox")

    def pids(self) -> list[int]:
        with self._changed:
            return [child.pid for child in self._children]

    def close(self) -> None:
        with self._changed:
            self.closed = True
            children, idle, self._idle = list(self._children), self._idle, []
            self._changed.notify_all()
        for child in children:
            child.kill()  # a busy child's caller reaps it, seeing no answer come
        for child in idle:
            self._forget(child)
        self._starter.shutdown(wait=False)  # a child starting now is stopped by its caller

    def take(self) -> _Child:
        with self._changed:
            while not (self.closed or self._idle or self._unstarted):
                self._changed.wait()
            if self.closed:
                raise SandboxClosed("the LightGBM sandbox is closed")
            child = self._idle.pop() if self._idle else None
            if child is None:
                self._unstarted -= 1
        if child is not None and child.alive():
            return child
        if child is not None:  # killed while idle (from outside): not this file's doing
            self._forget(child)
        try:
            return self._start()
        except BaseException:
            self._release()
            raise

    def give_back(self, child: _Child, *, keep: bool) -> None:
        with self._changed:
            if keep and not self.closed:
                self._idle.append(child)
                self._changed.notify()
                return
        self._forget(child)
        self._release()

    def _start(self) -> _Child:
        child = self._starter.submit(_Child, self._kind, self._memory_bytes).result()
        with self._changed:
            if not self.closed:
                self._children.add(child)
                return child
        child.stop()
        raise SandboxClosed("the LightGBM sandbox is closed")

    def _release(self) -> None:
        with self._changed:
            self._unstarted += 1
            self._changed.notify()

    def _forget(self, child: _Child) -> None:
        with self._changed:
            self._children.discard(child)
        child.stop()
