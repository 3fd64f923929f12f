"""The LightGBM sandbox's child process: loads LightGBM's library once, then reads model files.

Run as a script, `python -I lightgbm_child.py LIBRARY MEMORY_BYTES PARENT_PID`: it imports
nothing of ours (isolated mode does not put this folder on the path), only the standard
library and msgspec. It speaks in frames (a 4-byte big-endian length, then msgpack) on stdin
and stdout: `Ready` once, then a `Reply` to each `Request`, one file at a time. It exits when
stdin closes, and the kernel kills it when the thread of its parent that started it dies.
It reads LightGBM's C API directly: `import lightgbm` alone takes seconds (it imports
scikit-learn).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import struct
import sys
from typing import BinaryIO

import msgspec

_HEADER = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Ready(msgspec.Struct, frozen=True):
    """The first frame: the library is loaded, the limits are set."""


class Request(msgspec.Struct, frozen=True):
    """A model file to read."""

    path: str


class Reply(msgspec.Struct, frozen=True):
    """What LightGBM read in a file, or its reason for refusing it."""

    error: str | None = None
    trees: int = 0
    features: int = 0


def frame(message: msgspec.Struct) -> bytes:
    """`message` as one frame."""
    payload = msgspec.msgpack.encode(message)
    return _HEADER.pack(len(payload)) + payload


def _receive(stream: BinaryIO) -> Request | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:  # the parent closed our stdin, or died
        return None
    (size,) = _HEADER.unpack(header)
    return msgspec.msgpack.decode(stream.read(size), type=Request)


def _die_with(parent: int) -> None:
    # stdin's end of file already stops an idle child; this also stops one that LightGBM
    # keeps busy (spinning on a hostile file) when its parent is killed
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the signal was armed
        sys.exit(1)


def _read(lib: ctypes.CDLL, path: str) -> Reply:
    c_int = ctypes.c_int
    handle, iterations, trees, features = ctypes.c_void_p(), c_int(), c_int(), c_int()
    if lib.LGBM_BoosterCreateFromModelfile(
        path.encode(), ctypes.byref(iterations), ctypes.byref(handle)
    ):
        return Reply(error=lib.LGBM_GetLastError().decode("utf-8", "replace"))
    try:
        # what lightgbm.Booster(model_file=...) reads next
        size, buffer = ctypes.c_int64(), ctypes.create_string_buffer(1 << 16)
        lib.LGBM_BoosterGetLoadedParam(
            handle, ctypes.c_int64(len(buffer)), ctypes.byref(size), buffer
        )
        lib.LGBM_BoosterNumberOfTotalModel(handle, ctypes.byref(trees))
        lib.LGBM_BoosterGetNumFeature(handle, ctypes.byref(features))
        return Reply(trees=trees.value, features=features.value)
    finally:
        lib.LGBM_BoosterFree(handle)  # this process reads many files


def main() -> None:
    """Serve requests until stdin closes."""
    library, memory, parent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    _die_with(parent)
    # a Ctrl-C in the server's terminal reaches its whole process group; the server decides
    # when its sandbox stops, and may still finish a request after the signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # LightGBM prints to fd 1: the frames keep a private copy of it, fd 1 becomes stderr
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    lib = ctypes.CDLL(library)
    lib.LGBM_GetLastError.restype = ctypes.c_char_p
    # an abort on a hostile file must not leave a core dump of it behind
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    replies.write(frame(Ready()))
    replies.flush()
    while (request := _receive(sys.stdin.buffer)) is not None:
        replies.write(frame(_read(lib, request.path)))
        replies.flush()


if __name__ == "__main__":
    main()
