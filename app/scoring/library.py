"""A compiled model library, loaded only after its digest checks out: the scorer's hot path.

The library is one of two builds with the same entry points: for eligible LightGBM models our
branch-free evaluator over node tables (workers/ml/forest.c), otherwise TL2cgen's generated
`predict` plus workers/ml/batch.c. Either way `ml_predict_row` and `ml_predict_batch` take
float64 rows (NaN = missing), zero the result and postprocess, so the scores are what the
model's own library returns. A binary classifier scores P(class 1) whatever the library's
width: a forest (or a two-class softmax) computes both class probabilities, and only the
second is served, so every binary classifier answers one number per row.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import itertools
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

ABI_VERSION = 1  # ML_ABI_VERSION in workers/ml/batch.c

Row = npt.NDArray[np.float64] | Sequence[float]


class LibraryRefused(Exception):
    """A library that is not the one approved (digest), or not one the server built (ABI)."""


class _Buffers(threading.local):
    """One row buffer per thread, so concurrent callers never share one."""

    def __init__(self, num_feature: int, num_output: int) -> None:
        self.row = (ctypes.c_double * num_feature)()
        self.view: npt.NDArray[np.float64] = np.ctypeslib.as_array(self.row)
        self.out = (ctypes.c_double * num_output)()
        self.out_view: npt.NDArray[np.float64] = np.ctypeslib.as_array(self.out)


class CompiledLibrary:
    """Calls into one verified model library; safe to share between threads."""

    def __init__(self, dll: ctypes.CDLL, *, path: Path, sha256: str) -> None:
        self.path, self.sha256 = path, sha256
        if _int_function(dll, "ml_abi_version")() != ABI_VERSION:
            raise LibraryRefused(f"{path.name}: not built with entry points of ABI {ABI_VERSION}")
        self.num_feature: int = _int_function(dll, "get_num_feature")()
        self.num_target: int = _int_function(dll, "get_num_target")()
        classes = (ctypes.c_int32 * self.num_target)()
        dll.get_num_class(classes)
        self.num_class: tuple[int, ...] = tuple(classes)
        # a row's outputs: num_target * max(num_class), each target padded to the widest
        self.num_output: int = _int_function(dll, "ml_num_output")()
        # one target with two classes: P(class 1) is served, as for every binary classifier
        self.positive_class = self.num_target == 1 and self.num_output == 2
        # the scores of a row: 1, or one per class (multiclass) or target (multi-output)
        self.width = 1 if self.positive_class else self.num_output
        self._row = dll.ml_predict_row
        # no argtypes: checking them costs ~0.2 us a call, and the arguments are always our
        # own ctypes buffers (or None for NULL)
        self._row.restype = ctypes.c_double
        self._batch = dll.ml_predict_batch
        self._batch.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        self._batch.restype = None
        self._buffers = _Buffers(self.num_feature, self.num_output)
        self._dll = dll  # keeps the library mapped as long as this object lives

    @classmethod
    def open(cls, path: Path, expected_sha256: str) -> CompiledLibrary:
        """Load `path` if its sha256 is `expected_sha256`; LibraryRefused otherwise."""
        # never load a library the server did not build: loading runs its code
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(actual.encode(), expected_sha256.strip().lower().encode()):
            raise LibraryRefused(
                f"{path.name}: sha256 {actual} is not the approved {expected_sha256}; not loaded"
            )
        return cls(_load_bytes(data, path), path=path, sha256=actual)

    def predict_one(self, row: Row) -> float | npt.NDArray[np.float64]:
        """Scores of one row of `num_feature` values (NaN = missing): a float or `width`."""
        if len(row) != self.num_feature:
            raise ValueError(f"a row has {self.num_feature} values, not {len(row)}")
        buffers = self._buffers
        # copying into the thread's buffer is cheaper than taking an ndarray's address
        # (measured: 0.8 vs 1.4 us a call); lists work too, None in them becomes NaN
        buffers.view[:] = row
        if self.num_output == 1:
            return float(self._row(buffers.row, None))
        self._row(buffers.row, buffers.out)
        if self.positive_class:
            return float(buffers.out[1])
        return buffers.out_view.copy()

    def predict_batch(self, rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Scores of an (n, num_feature) matrix: shape (n,), or (n, width) if wider."""
        matrix = np.ascontiguousarray(rows, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.num_feature:
            raise ValueError(f"rows must be (n, {self.num_feature}), not {matrix.shape}")
        count = matrix.shape[0]
        out = np.empty((count, self.num_output), dtype=np.float64)
        if count:
            self._batch(matrix.ctypes.data, count, out.ctypes.data)
        if self.positive_class:
            return np.ascontiguousarray(out[:, 1])
        return out.reshape(count) if self.num_output == 1 else out


def _int_function(dll: ctypes.CDLL, name: str) -> ctypes._CFunctionType:
    try:
        function: ctypes._CFunctionType = getattr(dll, name)
    except AttributeError as error:
        raise LibraryRefused(f"the library has no {name}(); not a model library") from error
    function.argtypes = []
    function.restype = ctypes.c_int32
    return function


def _load_bytes(data: bytes, path: Path) -> ctypes.CDLL:
    """Load the very bytes that were hashed, so the file cannot be swapped in between."""
    # dlopen hands back an already loaded library whose name matches, so every load needs a
    # name never used before: a rebuilt file at the same path would otherwise be the old code
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        descriptor: int = memfd_create(f"model-{path.stem}", os.MFD_CLOEXEC)
        with os.fdopen(descriptor, "wb", closefd=False) as handle:
            handle.write(data)
        try:
            # the descriptor stays open for good (ctypes never unloads a library either):
            # closed, its number and so this name would come back for the next load
            return ctypes.CDLL(f"/proc/self/fd/{descriptor}")
        except OSError:
            os.close(descriptor)  # vm.memfd_noexec kernels refuse to map it executable
    return _load_copy(data)


def _load_copy(data: bytes) -> ctypes.CDLL:
    """Load a private copy under a name this process never used, removed once mapped."""
    global _COPIES  # noqa: PLW0603 - created on first use: nothing happens at import time
    if _COPIES is None:
        _COPIES = (Path(tempfile.mkdtemp(prefix="model-libraries-")), itertools.count())
    folder, counter = _COPIES
    copy = folder / f"{next(counter)}.so"
    with copy.open("xb") as handle:
        handle.write(data)
    try:
        return ctypes.CDLL(str(copy))
    finally:
        copy.unlink()


_COPIES: tuple[Path, itertools.count[int]] | None = None
