"""Keeping a large model's encoding within the memory of its largest tensor.

Two things the C library and the kernel do not do on their own: hand freed tensor-sized
blocks back to the system (:func:`keep_large_blocks_mapped`), and drop the pages of a
memory-mapped input tensor once its values have been turned into levels
(:func:`release_pages`). Neither changes a value or a byte of output.
"""

from __future__ import annotations

import ctypes
import dataclasses
import mmap
import os
from collections.abc import Iterator

import numpy as np

_MMAP_THRESHOLD = 16 << 20
_TRIM_THRESHOLD = 16 << 20


def keep_large_blocks_mapped() -> None:
    """Fix the C library's mmap threshold at 16 MiB where it is glibc's (a no-op elsewhere),
    for a process that encodes large tensors.

    glibc raises the threshold (up to 32 MiB) whenever a mapped block is freed; from then on
    arrays the size of a tensor's levels come from the heap, whose freed memory the process
    keeps. Fixed, blocks of 16 MiB and more are mapped and go back to the system when freed,
    while the smaller per-chunk temporaries reuse the heap. ``tools/bench_scale.py --scale
    0.5``, one worker: a peak of 413 MiB without, 305 MiB with.

    Fixing the mmap threshold also stops glibc from raising the trim threshold with it, which
    would stay at 128 KiB: every free at the top of the heap then gave the memory back, and
    the next chunk-sized temporary (the trellis's, a few MiB) faulted its pages in anew. So
    the trim threshold is fixed at 16 MiB too (MiniLM's whole-process encode, one core:
    7.5 s with 128 KiB, 5.1 s with 16 MiB; peaks within 8 MiB of each other).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(ctypes.c_int(-3), ctypes.c_int(_MMAP_THRESHOLD))  # -3: M_MMAP_THRESHOLD
    mallopt(ctypes.c_int(-1), ctypes.c_int(_TRIM_THRESHOLD))  # -1: M_TRIM_THRESHOLD


class FileMapping(mmap.mmap):
    """A read-only shared mapping of a whole file (``map_file``): its pages hold nothing but
    the file's bytes, so dropping them loses nothing. :func:`release_pages` acts on these
    alone; a copy-on-write or anonymous mapping (``np.memmap(mode="c")``) would lose its
    changes. ``identity`` names the file mapped (:class:`FileIdentity`), or is None for a
    file without a usable path."""

    identity: FileIdentity | None = None


@dataclasses.dataclass(frozen=True)
class FileIdentity:
    """Which file a mapping holds: its absolute path and what ``fstat`` said of it when it was
    mapped. Another process maps the same file only if all of them still agree."""

    path: str
    device: int
    inode: int
    size: int
    modified_ns: int

    def still_names_it(self) -> bool:
        """Whether ``path`` still names this file, unchanged."""
        try:
            status = os.stat(self.path)
        except OSError:
            return False
        return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns) == (
            self.device, self.inode, self.size, self.modified_ns)

    @classmethod
    def of(cls, file) -> FileIdentity | None:
        """The identity of the open binary ``file``, or None when it has no path of its own."""
        name = getattr(file, "name", None)
        if not isinstance(name, (str, bytes, os.PathLike)):  # e.g. opened from a descriptor
            return None
        status = os.fstat(file.fileno())
        # realpath: /dev/fd/N and /proc/self/fd/N name the file in this process only
        return cls(os.path.realpath(os.fsdecode(name)), status.st_dev, status.st_ino, status.st_size,
                   status.st_mtime_ns)


def map_file(file) -> FileMapping:
    """A :class:`FileMapping` of the open binary ``file`` (not empty)."""
    mapping = FileMapping(file.fileno(), 0, access=mmap.ACCESS_READ)
    mapping.identity = FileIdentity.of(file)
    return mapping


def mapped_regions(path: str | os.PathLike) -> list[tuple[int, int, int]]:
    """Where this process has the file ``path`` mapped, from ``/proc/self/maps``: ``(start
    address, end address, file offset of start)`` for each mapping of that file (the same
    path and inode), adjacent pieces of one mapping joined. Empty where /proc is not there
    (not Linux) or nothing of the file is mapped."""
    try:
        status = os.stat(path)
        with open("/proc/self/maps", encoding="utf-8", errors="surrogateescape") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    real = os.path.realpath(path)
    regions: list[tuple[int, int, int]] = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5] != real or int(fields[4]) != status.st_ino:
            continue
        start, end = (int(address, 16) for address in fields[0].split("-"))
        offset = int(fields[2], 16)
        if regions and regions[-1][1] == start and regions[-1][2] + (start - regions[-1][0]) == offset:
            regions[-1] = (regions[-1][0], end, regions[-1][2])
        else:
            regions.append((start, end, offset))
    return regions


class FileChangedError(OSError):
    """The file a :class:`MappedSlice` refers to is not the one it was taken from any more."""


@dataclasses.dataclass(frozen=True)
class MappedSlice:
    """A reference to a C-contiguous array that views a :class:`FileMapping`: the file, the
    byte offset, the dtype and the shape. It pickles to a few hundred bytes whatever the
    array's size, so that a worker process maps the values itself (:meth:`load`) instead of
    receiving a copy through a pipe."""

    file: FileIdentity
    offset: int
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, array: np.ndarray) -> MappedSlice | None:
        """The reference to ``array``, or None when it is not a C-contiguous, non-empty view of a
        :class:`FileMapping` with a known file."""
        owner = _mapping_under(array)
        if (not isinstance(owner, FileMapping) or owner.identity is None or not array.flags.c_contiguous
                or array.nbytes == 0):
            return None
        start = _address_of(owner)
        if start is None:
            return None
        return cls(owner.identity, array.ctypes.data - start, array.dtype.str, tuple(array.shape))

    def load(self) -> np.ndarray:
        """A read-only view of the referenced values in this process's mapping of the file (one
        mapping per file, kept for the process's life). Raises :class:`FileChangedError` when the
        path now names another file, or the file's size or modification time changed."""
        mapping = _MAPPED.get(self.file)
        if mapping is None:
            try:
                with open(self.file.path, "rb") as file:
                    if FileIdentity.of(file) != self.file:
                        raise FileChangedError(f"{self.file.path} changed after it was opened")
                    mapping = map_file(file)
            except FileChangedError:
                raise
            except (OSError, ValueError) as exc:
                raise FileChangedError(f"{self.file.path} cannot be mapped again ({exc})") from None
            _MAPPED[self.file] = mapping
        dtype = np.dtype(self.dtype)
        count = int(np.prod(self.shape, dtype=np.int64))
        if self.offset + count * dtype.itemsize > len(mapping):
            raise FileChangedError(f"{self.file.path} is shorter than it was")
        return np.frombuffer(mapping, dtype=dtype, count=count, offset=self.offset).reshape(self.shape)


_MAPPED: dict[FileIdentity, FileMapping] = {}  # MappedSlice.load's mappings in this process


def _mapping_under(array: np.ndarray):
    """The ``mmap`` an array's memory belongs to, following views and memoryviews; or None."""
    owner = array
    while owner is not None and not isinstance(owner, mmap.mmap):
        owner = owner.obj if isinstance(owner, memoryview) else getattr(owner, "base", None)
    return owner


def _address_of(mapping: mmap.mmap) -> int | None:
    """Where ``mapping`` starts in memory, or None for a closed mapping."""
    try:
        return np.frombuffer(mapping, dtype=np.uint8, count=1).ctypes.data
    except (ValueError, TypeError):
        return None


def release_pages(array: np.ndarray) -> bool:
    """Let the system drop the resident pages under ``array`` when it views a
    :class:`FileMapping` (as :class:`~nncodec_unify.codec.safetensors_io.SafetensorsFile`
    returns tensors); returns whether it did. The values stay readable: a later access reads
    them from the file again. Pages ``array`` shares only partly with its neighbours are kept.
    Any other array (on the heap, a copy, another kind of mapping, a non-contiguous view) is
    left alone, and so is a system that cannot do it.
    """
    owner = _mapping_under(array)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if (not isinstance(owner, FileMapping) or advice is None or not hasattr(owner, "madvise")
            or not array.flags.c_contiguous or array.nbytes == 0):
        return False
    mapping_start = _address_of(owner)
    if mapping_start is None:
        return False
    offset = array.ctypes.data - mapping_start
    page = mmap.PAGESIZE
    start = -(-offset // page) * page
    stop = (offset + array.nbytes) // page * page
    if stop <= start:
        return False
    try:
        owner.madvise(advice, start, stop - start)
    except OSError:  # e.g. locked pages: they stay, nothing else changes
        return False
    return True


_READ_PIECE = 1 << 24  # bytes a pass over a mapped stream takes at a time


def read_through(data, start: int, stop: int) -> Iterator[memoryview]:
    """Bytes ``start`` to ``stop`` of ``data`` as consecutive memoryviews, for a pass that
    reads each once (a checksum, a hash): when ``data`` is a :class:`FileMapping`, each
    piece's pages are let go (:func:`release_pages`) once the consumer has taken it, so the
    pass leaves nothing of the file resident."""
    view = memoryview(data)
    for at in range(start, stop, _READ_PIECE):
        end = min(at + _READ_PIECE, stop)
        yield view[at:end]
        if isinstance(data, FileMapping):
            release_pages(np.frombuffer(data, dtype=np.uint8, count=end - at, offset=at))
