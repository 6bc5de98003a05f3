"""Worker processes that code tensors in parallel (``--workers N``, encoding and decoding).

Tensors are independent units, so N spawned processes code N of them at a time while the
parent keeps stream order: the bytes written (encoding) and the tensors returned (decoding)
are those of one process. Processes, not threads: constriction's bindings hold the GIL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import mmap
import os
import signal
import sys
import tempfile
from collections.abc import Iterator

import numpy as np

from .memory import keep_large_blocks_mapped

BUFFERED_BYTES = 256 << 20  # finished results held back behind an unfinished head unit
SPILL_BYTES = 1 << 20  # results at least this large come back through a file (spill), not the pipe

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[_Pool]:
    """A pool of ``workers`` spawned processes (a ``concurrent.futures.ProcessPoolExecutor``
    behind :class:`_Pool`), each started single-threaded. Leaving the block after an
    exception cancels the jobs not yet started."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as executor:
        try:
            yield _Pool(executor)
        except BaseException:  # a tensor failed or the consumer stopped: no job's result is wanted
            running = _processes_of(executor)
            executor.shutdown(wait=False, cancel_futures=True)
            for process in running:  # rather than wait for their tensors (seconds for a large one)
                with contextlib.suppress(Exception):
                    process.terminate()
            raise


def _processes_of(executor) -> list:
    """The executor's worker processes (a private table: ``terminate_workers`` is public only
    from Python 3.14, and ``shutdown`` forgets the table)."""
    return list((getattr(executor, "_processes", None) or {}).values())


class _Pool:
    """Submits jobs to an executor whose processes start, when a job needs one, with one
    BLAS/OpenMP thread (:func:`_single_threaded_children`). The variables are set only while a
    job is submitted, which is when the executor starts its processes: a paused iterator
    leaves the caller's environment as it was."""

    def __init__(self, executor):
        self._executor = executor

    def submit(self, function, *args):
        """``executor.submit(function, *args)``: a future."""
        with _single_threaded_children():
            return self._executor.submit(function, *args)


@contextlib.contextmanager
def _single_threaded_children():
    """Spawned workers start with one BLAS/OpenMP thread each unless the user chose otherwise:
    numpy reads these when it is imported, and N workers with a thread per core each crawl
    (all-MiniLM-L6-v2 with 2 workers on 2 cores: 10.8 s with OpenBLAS's default, 6.6 s with 1)."""
    added = [name for name in _THREAD_VARIABLES if name not in os.environ]
    for name in added:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: a worker stops at once and quietly (the parent
    # reports it), rather than finishing its tensor or printing a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if "torch" in sys.modules:  # two processes with two torch threads each crawl on 2 cores
        sys.modules["torch"].set_num_threads(1)
    keep_large_blocks_mapped()


@contextlib.contextmanager
def spill_folder() -> Iterator[str]:
    """A private temporary folder for :func:`spill`, removed with whatever is left in it."""
    with tempfile.TemporaryDirectory(prefix="nncodec-", ignore_cleanup_errors=True) as folder:
        yield folder


@dataclasses.dataclass(frozen=True)
class SpilledArray:
    """An array a worker wrote to a file of the parent's :func:`spill_folder` instead of
    sending it through the pool's pipe, which would hold it twice in the parent (the message
    and the unpickled copy): the file's path, the dtype and the shape."""

    path: str
    dtype: str
    shape: tuple[int, ...]


def spill(array, folder: str | None):
    """In a worker: a :class:`SpilledArray` for a C-contiguous numpy ``array`` of at least
    SPILL_BYTES, written to a new file in ``folder``; ``array`` itself when it is smaller,
    ``folder`` is None, or the file cannot be written (a full disk: the pipe still works)."""
    if (folder is None or not isinstance(array, np.ndarray) or array.nbytes < SPILL_BYTES
            or not array.flags.c_contiguous):
        return array
    path = None
    try:
        handle, path = tempfile.mkstemp(dir=folder, suffix=".array")
        with open(handle, "wb") as file:
            array.tofile(file)
    except OSError:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return array
    return SpilledArray(path, array.dtype.str, tuple(array.shape))


def unspill(value):
    """In the parent: the array a :class:`SpilledArray` stands for, else ``value`` itself.

    The array is a private (copy-on-write) mapping of the file, so it is writable while its
    pages stay the file's until written to; the file is removed at once (the mapping keeps
    its data until the array is let go). Raises OSError when the file is gone or short."""
    if not isinstance(value, SpilledArray):
        return value
    dtype = np.dtype(value.dtype)
    count = math.prod(value.shape)
    try:
        with open(value.path, "rb") as file:
            mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(value.path)
    if len(mapping) != count * dtype.itemsize:
        raise OSError(f"{value.path}: a decoded tensor's file is {len(mapping)} bytes, not {count * dtype.itemsize}")
    return np.frombuffer(mapping, dtype=dtype, count=count).reshape(value.shape)
