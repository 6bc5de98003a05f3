"""Worker processes that code tensors in parallel (``--workers N``, encoding and decoding).

Tensors are independent units, so N spawned processes code N of them at a time while the
parent keeps stream order: the bytes written (encoding) and the tensors returned (decoding)
are those of one process. Processes, not threads: constriction's bindings hold the GIL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Mapping

import numpy as np

from .memory import keep_large_blocks_mapped

BUFFERED_BYTES = 256 << 20  # finished results held back behind an unfinished head unit
SPILL_BYTES = 1 << 20  # results at least this large come back through a file (spill), not the pipe

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def check_workers(workers) -> None:
    """Refuse a ``workers`` argument that is not a whole number of at least 1 (ValueError)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number of at least 1, got {workers!r}")


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[_Pool]:
    """A pool of ``workers`` spawned processes (a ``concurrent.futures.ProcessPoolExecutor``
    behind :class:`_Pool`), each started single-threaded. Leaving the block after an
    exception cancels the jobs not yet started and terminates the running ones
    (:func:`_stop`) rather than waiting for their tensors (seconds for a large one)."""
    import concurrent.futures
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    unimportable = _unimportable_main_script()
    if unimportable is not None:
        raise ValueError(f"workers={workers}: worker processes are started by re-running the main script, and "
                         f"{unimportable!r} is not a file (a script read from standard input?); run the script "
                         f"from a file, or pass workers=1")
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as executor:
        try:
            yield _Pool(executor)
        except BrokenProcessPool as exc:
            _stop(executor)
            raise BrokenProcessPool(
                f"{exc} Was a worker killed (out of memory?), could it not start (the main script starts "
                f"workers outside `if __name__ == \"__main__\":`, and spawned processes re-run it), or could "
                f"its result not be unpickled (see the exception this one was raised from)? workers=1 codes "
                f"in this process") from exc
        except BaseException:  # a tensor failed or the consumer stopped: no job's result is wanted
            _stop(executor)
            raise


def _unimportable_main_script() -> str | None:
    """The main script's path when a spawned process could not run it (``python - < script``
    gives ``<stdin>``), else None: a main module imported by name (``python -m``), an
    interactive session or ``python -c`` (no file) are all fine."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None):
        return None
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path):
        return None
    return path


def _stop(executor) -> None:
    """Shut ``executor`` down without waiting for its running jobs: cancel the queued ones,
    terminate the worker processes and wait until the executor's own thread has reaped them.

    A worker terminated while it sends a result leaves that message cut short, and the
    executor's thread that reads it would wait for the rest for ever (the parent holds a
    write end of the pipe too), hanging the exit: closing the parent's write end turns the
    wait into end-of-file. Only that thread reaps the processes (two threads waiting for
    one child can each miss its exit status). This reaches into the executor's private
    state (``_processes``, ``_result_queue``, ``_executor_manager_thread``): Python 3.14's
    ``terminate_workers`` does not close the pipe either."""
    running = _processes_of(executor)
    results = getattr(executor, "_result_queue", None)
    manager = getattr(executor, "_executor_manager_thread", None)
    executor.shutdown(wait=False, cancel_futures=True)
    for signal_process in ("terminate", "kill"):  # kill: for a worker that outlives SIGTERM
        for process in running:
            with contextlib.suppress(Exception):
                getattr(process, signal_process)()
        writer = getattr(results, "_writer", None)
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        if manager is None or manager.ident is None:
            # the executor's thread never started (a signal came while the pool was starting its
            # workers): nothing else reaps them, and join() on that thread would raise
            for process in running:
                with contextlib.suppress(Exception):
                    process.join(10)
            if not any(_alive(process) for process in running):
                return
            continue
        manager.join(10)
        if not manager.is_alive():
            return


def _alive(process) -> bool:
    try:
        return process.is_alive()
    except Exception:  # a process object that never started, or one from another parent
        return False


def _processes_of(executor) -> list:
    """The executor's worker processes (a private table: ``shutdown`` forgets it)."""
    return list((getattr(executor, "_processes", None) or {}).values())


class _Pool:
    """Submits jobs to an executor whose processes start, when a job needs one, with one
    BLAS/OpenMP thread and Ctrl-C held back (:func:`_child_environment`). Both are set only
    while a job is submitted, which is when the executor starts its processes: a paused
    iterator leaves the caller's environment as it was."""

    def __init__(self, executor):
        self._executor = executor

    def submit(self, function, *args):
        """``executor.submit(function, *args)``: a future."""
        with _child_environment():
            return self._executor.submit(function, *args)


@contextlib.contextmanager
def _child_environment():
    """Spawned workers start with one BLAS/OpenMP thread each unless the user chose otherwise:
    numpy reads these when it is imported, and N workers with a thread per core each crawl
    (all-MiniLM-L6-v2 with 2 workers on 2 cores: 10.8 s with OpenBLAS's default, 6.6 s with 1).
    And SIGINT is blocked while they are started, so that they inherit it blocked: a Ctrl-C
    during a worker's start-up (its imports) waits until :func:`_worker_init` lets the worker
    die of it quietly, instead of printing a KeyboardInterrupt traceback. In the caller a
    blocked Ctrl-C is delivered when the job is submitted, not lost."""
    added = [name for name in _THREAD_VARIABLES if name not in os.environ]
    for name in added:
        os.environ[name] = "1"
    masked = hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if masked else None
    try:
        yield
    finally:
        if masked:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for name in added:
            os.environ.pop(name, None)


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: a worker stops at once and quietly (the parent
    # reports it), rather than finishing its tensor or printing a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):  # blocked since the start (_child_environment); one pending ends it now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if "torch" in sys.modules:  # two processes with two torch threads each crawl on 2 cores
        sys.modules["torch"].set_num_threads(1)
    keep_large_blocks_mapped()


@contextlib.contextmanager
def spill_folder() -> Iterator[str | None]:
    """A private temporary folder for :func:`spill`, removed with whatever is left in it; None
    when none can be made (then results cross the pipe)."""
    try:
        folder = tempfile.TemporaryDirectory(prefix="nncodec-", ignore_cleanup_errors=True)
    except OSError:  # no usable temporary folder, a full disk
        yield None
        return
    with folder as path:
        yield path


@dataclasses.dataclass(frozen=True)
class OutputLayout:
    """Regular files being written (safetensors: one, or a folder's shards) that workers
    write large decoded tensors into themselves instead of handing them to the parent to
    write: ``places[name]`` is the file and the byte offset of that name's data (an alias
    has its own). The parent then copies nothing."""

    places: Mapping[str, tuple[str, int]]
    crc32: bool = False  # the worker also sends back the CRC-32 of what it wrote (a .pt archive's records need it)


@dataclasses.dataclass(frozen=True)
class WrittenArray:
    """In place of a decoded array: a worker wrote it into the :class:`OutputLayout`'s file
    itself, at the offsets of its name and aliases."""

    shape: tuple[int, ...]
    crc32: int | None = None  # of the bytes written, when the OutputLayout asked for it

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class SpilledArray:
    """An array a worker wrote to a file of the parent's :func:`spill_folder` instead of
    sending it through the pool's pipe, which would hold it two or three times over in the
    parent (the message, the unpickled bytes, the array): the file's path, the dtype and the
    shape."""

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
    """In the parent: the array a :class:`SpilledArray` stands for, read once into memory
    (a writable array of its own) from its file, which is removed at once; else ``value``
    itself. Raises OSError when the file is gone or not the array's size. (Reading, not
    mapping: a mapping would hold a file descriptor, and on Windows the file, for as long
    as the array lives.)"""
    if not isinstance(value, SpilledArray):
        return value
    dtype = np.dtype(value.dtype)
    count = math.prod(value.shape)
    try:
        array = np.fromfile(value.path, dtype=dtype)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(value.path)
    if array.size != count:
        raise OSError(f"{value.path}: a decoded tensor's file holds {array.size} elements, not {count}")
    return array.reshape(value.shape)
