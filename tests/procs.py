"""Processes as /proc shows them (Linux): which are alive, in which process group."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str
    cmdline: str


def _read(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # gone meanwhile
        return None
    # the command name (2nd field) may hold spaces and parentheses: split after the last ")"
    state, ppid, pgid = stat[stat.rindex(")") + 2 :].split()[:3]
    return Proc(int(pid), int(ppid), int(pgid), state, cmdline.strip())


def running() -> list[Proc]:
    """Every process alive now (zombies have exited: they only wait to be reaped)."""
    found = (_read(int(entry)) for entry in os.listdir("/proc") if entry.isdigit())
    return [p for p in found if p is not None and p.state != "Z"]


def in_group(pgid: int) -> list[Proc]:
    """The live processes of a process group."""
    return [p for p in running() if p.pgid == pgid]


def alive(pid: int) -> bool:
    found = _read(pid)
    return found is not None and found.state != "Z"


def survivors(pgid: int, seconds: float = 30.0) -> list[Proc]:
    """The group's processes still alive after up to `seconds` (the kernel delivers a
    parent-death signal and the dying exit in their own time); [] as soon as none is."""
    deadline = time.monotonic() + seconds
    while (left := in_group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill_group(pgid: int) -> None:
    """SIGKILL whatever is left of a group (a failed test must not leave processes behind)."""
    for proc in in_group(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
