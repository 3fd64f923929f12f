"""Content-addressed artifact store: files named by the sha256 of their bytes.

Layout: `<root>/sha256/<first 2 hex>/<64 hex>`. Uploads are streamed to a temporary file in
`<root>/tmp` (the same file system, so the final `os.replace` is atomic) while they are hashed;
a reader therefore never sees a partial artifact under its digest. An upload may be checked
first (`put_checked`): a file its check refuses is never stored. Files are written once and
left read-only: the same bytes uploaded again are not rewritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

import msgspec

from domain.errors import InvalidInput, NotFound, PayloadTooLarge

# Chunks from the network are small (often 64 KiB); gathering them into larger writes keeps
# the per-thread-hop overhead low while the event loop never blocks on disk.
_WRITE_BYTES = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")
_T = TypeVar("_T")
# a checked upload is made durable here while its check reads it: a LightGBM file's check
# waits milliseconds on the sandbox, about what the fsync takes on a busy disk
_SYNCS = ThreadPoolExecutor(4, thread_name_prefix="artifact-fsync")


class StoredArtifact(msgspec.Struct, frozen=True, kw_only=True):
    """An artifact in the store: its digest, size in bytes and file."""

    sha256: str
    size: int
    path: Path


class _TempFile:
    """A temporary file written from worker threads and removable from the event loop.

    The lock makes removal wait for a write still running in a thread (say, after the
    upload was cancelled), so a descriptor is never closed under a write.
    """

    def __init__(self, folder: Path) -> None:
        fd, name = tempfile.mkstemp(dir=folder, prefix="upload-")
        self.path = Path(name)
        self._handle = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            # hashlib releases the GIL on large buffers, so hashing here costs the loop nothing
            self._hash.update(data)
            self._handle.write(data)

    def flush(self) -> None:
        """Make what was written readable through the file's path."""
        with self._lock:
            self._handle.flush()

    def finish(self) -> str:
        """Flush to disk and close; the hex digest of what was written."""
        with self._lock:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            return self._hash.hexdigest()

    def discard(self) -> None:
        with self._lock:
            self._handle.close()
            self.path.unlink(missing_ok=True)


class ArtifactStore:
    """Immutable files addressed by sha256 under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"

    async def put_stream(self, chunks: AsyncIterable[bytes], *, max_bytes: int) -> StoredArtifact:
        """Store a stream; PayloadTooLarge past `max_bytes`, leaving nothing behind."""
        stored, _ = await self.put_checked(chunks, max_bytes=max_bytes, check=_accept)
        return stored

    async def put_checked(
        self, chunks: AsyncIterable[bytes], *, max_bytes: int, check: Callable[[Path], _T]
    ) -> tuple[StoredArtifact, _T]:
        """Store a stream that `check` accepts, and what `check` returned.

        `check` reads the whole file by its (temporary) path, in a worker thread, while the
        file is made durable and before it is stored under its digest; whatever it raises is
        raised here, with nothing left behind. PayloadTooLarge past `max_bytes`.
        """
        # created here, not in a thread, so a cancellation cannot orphan the file
        try:
            temp = _TempFile(self._tmp)
        except FileNotFoundError:  # the first upload of this root
            await asyncio.to_thread(self._tmp.mkdir, parents=True, exist_ok=True)
            temp = _TempFile(self._tmp)
        try:
            size, rest = await _receive(chunks, temp, max_bytes)
            # the rest of the work in one thread: each hop costs about as much as a write
            return await asyncio.to_thread(self._complete, temp, rest, size, check)
        except BaseException:
            # synchronous on purpose: a cancelled upload must still clean up, and the lock
            # waits for at most one chunk's write
            temp.discard()
            raise

    def _complete(
        self, temp: _TempFile, rest: bytes, size: int, check: Callable[[Path], _T]
    ) -> tuple[StoredArtifact, _T]:
        temp.write(rest)
        temp.flush()
        syncing = _SYNCS.submit(temp.finish)
        try:
            checked = check(temp.path)
        except BaseException:
            # the caller's discard takes the file's lock on the event loop: not during an fsync
            wait([syncing])
            raise
        digest = syncing.result()
        path = self._commit(temp.path, digest, size)
        return StoredArtifact(sha256=digest, size=size, path=path), checked

    async def put_bytes(self, data: bytes) -> StoredArtifact:
        """Store bytes already in memory (generated reports)."""

        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.put_stream(one(), max_bytes=len(data))

    def path_of(self, sha256: str) -> Path:
        """The file of a stored artifact; NotFound when absent."""
        path = self._path(sha256)
        if not path.is_file():
            raise NotFound(f"no artifact with sha256 {sha256}", sha256=sha256)
        return path

    def exists(self, sha256: str) -> bool:
        """Whether an artifact with this digest is stored (False for a malformed digest)."""
        return _DIGEST.fullmatch(sha256) is not None and self._path(sha256).is_file()

    def _path(self, sha256: str) -> Path:
        # the digest becomes a file name: anything but 64 lowercase hex could escape the root
        if _DIGEST.fullmatch(sha256) is None:
            raise InvalidInput("not a sha256 digest (64 lowercase hex digits)", sha256=sha256)
        return self.root / "sha256" / sha256[:2] / sha256

    def _commit(self, temp: Path, digest: str, size: int) -> Path:
        final = self._path(digest)
        with contextlib.suppress(FileNotFoundError):
            if final.stat().st_size == size:
                # same digest and size: the same bytes are already there, keep that file
                temp.unlink()
                return final
        final.parent.mkdir(parents=True, exist_ok=True)
        temp.chmod(0o444)
        os.replace(temp, final)
        _fsync_dir(final.parent)
        return final


def _accept(path: Path) -> None:
    """The check of a stream stored as it comes."""


async def _receive(
    chunks: AsyncIterable[bytes], temp: _TempFile, max_bytes: int
) -> tuple[int, bytes]:
    """Write the stream to `temp` in large writes off the event loop; the byte count, and the
    last bytes (less than a large write), not yet written."""
    size = 0
    pending = bytearray()
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"upload is larger than the limit of {max_bytes} bytes", limit=max_bytes
            )
        pending += chunk
        if len(pending) >= _WRITE_BYTES:
            await asyncio.to_thread(temp.write, bytes(pending))
            pending.clear()
    return size, bytes(pending)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: the digest may be in the log before the next crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
