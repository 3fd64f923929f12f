"""Signed checkpoints witnessed outside the database.

Each new checkpoint is appended to a file under the data folder (`witness.jsonl`: opened
O_APPEND, one JSON line per checkpoint, fsync'd) and, when a URL is configured, POSTed to
it. Someone who can rewrite the database but not this file, nor the witness service behind
the URL, cannot delete the newest events together with their checkpoints unnoticed.
Posting is best effort: retried a few times in the background, failures logged and
counted (`model_ledger_witness_writes_total{target, outcome}`), never waited on by signers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from pathlib import Path

import httpx
from prometheus_client import Counter

_log = logging.getLogger("model_ledger.witness")

_POST_ATTEMPTS = 4
_POST_TIMEOUT_SECONDS = 5.0
_POST_BACKOFF_SECONDS = 0.25


@functools.cache
def witness_writes() -> Counter:
    """Witness writes by target (file, url) and outcome (ok, retried, failed)."""
    return Counter(
        "model_ledger_witness_writes",
        "Checkpoints written to a witness: file or url; ok, retried (an attempt failed), "
        "failed (gave up)",
        ["target", "outcome"],
    )


@functools.cache
def checkpoints_signed() -> Counter:
    """Signing attempts by outcome: signed, refused (the log no longer extends the newest
    checkpoint: deleted or rewritten, see the logs)."""
    return Counter(
        "model_ledger_checkpoints",
        "Checkpoints signed, or refused because the log no longer extends the newest one",
        ["outcome"],
    )


class Witness:
    """Where this process witnesses the checkpoints it signs."""

    def __init__(self, path: Path | None, url: str | None = None) -> None:
        self.path = path
        self.url = url or None
        self._posting: set[asyncio.Task[None]] = set()

    def write_file(self, line: bytes) -> None:
        """Append one line to the witness file and fsync it (blocking: run in a thread).

        A failure is logged and counted, not raised: the checkpoint is already committed.
        """
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                # a line cut short by a crash keeps its own line: the next starts afresh
                size = os.fstat(fd).st_size
                torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
                # one write of one line: appends of processes sharing the file never interleave
                os.write(fd, (b"\n" if torn else b"") + line + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            witness_writes().labels("file", "failed").inc()
            _log.exception("could not append a checkpoint to the witness file %s", self.path)
            return
        witness_writes().labels("file", "ok").inc()

    def post(self, line: bytes) -> None:
        """POST the line to the witness URL in the background (no-op without a URL)."""
        if self.url is None:
            return
        task = asyncio.create_task(self._deliver(self.url, line))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def drain(self, grace_seconds: float = _POST_TIMEOUT_SECONDS) -> None:
        """Give posts in flight up to `grace_seconds`, then cancel them (shutdown)."""
        if not self._posting:
            return
        _, pending = await asyncio.wait(set(self._posting), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver(self, url: str, line: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        async with httpx.AsyncClient(timeout=_POST_TIMEOUT_SECONDS) as client:
            for attempt in range(1, _POST_ATTEMPTS + 1):
                try:
                    response = await client.post(url, content=line, headers=headers)
                    response.raise_for_status()
                except httpx.HTTPError as error:
                    if attempt == _POST_ATTEMPTS:
                        witness_writes().labels("url", "failed").inc()
                        _log.error(
                            "gave up witnessing a checkpoint at %s after %d attempts: %s",
                            url,
                            attempt,
                            error,
                        )
                        return
                    witness_writes().labels("url", "retried").inc()
                    await asyncio.sleep(_POST_BACKOFF_SECONDS * 2 ** (attempt - 1))
                else:
                    witness_writes().labels("url", "ok").inc()
                    return


def read_witness_lines(path: Path) -> tuple[list[tuple[int, bytes]], bool]:
    """The witness file's lines with their numbers (from 1), blank ones left out, and
    whether the last line lacks its newline: a write cut short (a crash mid-append),
    left out."""
    pieces = path.read_bytes().split(b"\n")
    lines = [(number, line) for number, line in enumerate(pieces[:-1], 1) if line.strip()]
    return lines, bool(pieces[-1].strip())
