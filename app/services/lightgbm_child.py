"""A sandbox child process: loads LightGBM's or Treelite's library once, then reads model files
with it.

Run as a script, `python -I lightgbm_child.py LIBRARY PATH MEMORY_BYTES PARENT_PID` (LIBRARY
`lightgbm` or `treelite`, PATH its shared library): it imports nothing of ours (isolated mode
does not put this folder on the path), only the standard library and msgspec. It speaks in
frames (a 4-byte big-endian length, then msgpack) on stdin and stdout: `Ready` once, then a
`Reply` for each `Request`, one file at a time. The sandbox gives each file to a LightGBM
child and a Treelite child at once, so a crash is its library's by construction. It exits
when stdin closes, and the kernel kills it when the thread of its parent that started it
dies. It reads the C APIs directly: `import lightgbm` or `import treelite` alone takes
seconds (they import scikit-learn).
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
    """What one library read in a file, or its reason (its own words) for refusing it."""

    error: str | None = None
    trees: int = 0
    features: int = 0


def frame(message: msgspec.Struct) -> bytes:
    """`message` as one frame."""
    payload = msgspec.msgpack.encode(message)
    return _HEADER.pack(len(payload)) + payload


def _receive(stream: BinaryIO, requests: msgspec.msgpack.Decoder[Request]) -> Request | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:  # the parent closed our stdin, or died
        return None
    (size,) = _HEADER.unpack(header)
    return requests.decode(stream.read(size))


def _die_with(parent: int) -> None:
    # stdin's end of file already stops an idle child; this also stops one that LightGBM
    # keeps busy (spinning on a hostile file) when its parent is killed
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the signal was armed
        sys.exit(1)


def _read_lightgbm(lib: ctypes.CDLL, path: str) -> Reply:
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


def _read_treelite(lib: ctypes.CDLL, path: str) -> Reply:
    # what treelite.frontend.load_lightgbm_model does; the compiler imports it the same way
    handle, trees, features = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_size_t()
    if lib.TreeliteLoadLightGBMModel(path.encode(), b"{}", ctypes.byref(handle)):
        return Reply(error=lib.TreeliteGetLastError().decode("utf-8", "replace"))
    try:
        if lib.TreeliteQueryNumTree(handle, ctypes.byref(trees)) or lib.TreeliteQueryNumFeature(
            handle, ctypes.byref(features)
        ):
            return Reply(error=lib.TreeliteGetLastError().decode("utf-8", "replace"))
        return Reply(trees=trees.value, features=features.value)
    finally:
        lib.TreeliteFreeModel(handle)


_READERS = {
    "lightgbm": (_read_lightgbm, "LGBM_GetLastError"),
    "treelite": (_read_treelite, "TreeliteGetLastError"),
}


def main() -> None:
    """Serve requests until stdin closes."""
    kind, library = sys.argv[1], sys.argv[2]
    memory, parent = int(sys.argv[3]), int(sys.argv[4])
    read, last_error = _READERS[kind]
    _die_with(parent)
    # a Ctrl-C in the server's terminal reaches its whole process group; the server decides
    # when its sandbox stops, and may still finish a request after the signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the libraries print to fd 1: the frames keep a private copy of it, fd 1 becomes stderr
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    lib = ctypes.CDLL(library)
    getattr(lib, last_error).restype = ctypes.c_char_p
    requests = msgspec.msgpack.Decoder(Request)  # built before the limit: it allocates
    # an abort on a hostile file must not leave a core dump of it behind
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    replies.write(frame(Ready()))
    replies.flush()
    while (request := _receive(sys.stdin.buffer, requests)) is not None:
        replies.write(frame(read(lib, request.path)))
        replies.flush()


if __name__ == "__main__":
    main()
