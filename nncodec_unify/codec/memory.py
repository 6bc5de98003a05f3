"""Keeping a large model's encoding within the memory of its largest tensor.

Two things the C library and the kernel do not do on their own: hand freed tensor-sized
blocks back to the system (:func:`keep_large_blocks_mapped`), and drop the pages of a
memory-mapped input tensor once its values have been turned into levels
(:func:`release_pages`). Neither changes a value or a byte of output.
"""

from __future__ import annotations

import ctypes
import mmap

import numpy as np

_MMAP_THRESHOLD = 16 << 20


def keep_large_blocks_mapped() -> None:
    """Fix the C library's mmap threshold at 16 MiB where it is glibc's (a no-op elsewhere),
    for a process that encodes large tensors.

    glibc raises the threshold (up to 32 MiB) whenever a mapped block is freed; from then on
    arrays the size of a tensor's levels come from the heap, whose freed memory the process
    keeps. Fixed, blocks of 16 MiB and more are mapped and go back to the system when freed,
    while the smaller per-chunk temporaries reuse the heap. ``tools/bench_scale.py --scale
    0.5``, one worker: a peak of 413 MiB without, 305 MiB with.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(ctypes.c_int(-3), ctypes.c_int(_MMAP_THRESHOLD))  # -3: M_MMAP_THRESHOLD


class FileMapping(mmap.mmap):
    """A read-only shared mapping of a whole file (``map_file``): its pages hold nothing but
    the file's bytes, so dropping them loses nothing. :func:`release_pages` acts on these
    alone; a copy-on-write or anonymous mapping (``np.memmap(mode="c")``) would lose its
    changes."""


def map_file(file) -> FileMapping:
    """A :class:`FileMapping` of the open binary ``file`` (not empty)."""
    return FileMapping(file.fileno(), 0, access=mmap.ACCESS_READ)


def release_pages(array: np.ndarray) -> bool:
    """Let the system drop the resident pages under ``array`` when it views a
    :class:`FileMapping` (as :class:`~nncodec_unify.codec.safetensors_io.SafetensorsFile`
    returns tensors); returns whether it did. The values stay readable: a later access reads
    them from the file again. Pages ``array`` shares only partly with its neighbours are kept.
    Any other array (on the heap, a copy, another kind of mapping, a non-contiguous view) is
    left alone, and so is a system that cannot do it.
    """
    owner = array
    while owner is not None and not isinstance(owner, mmap.mmap):
        owner = owner.obj if isinstance(owner, memoryview) else getattr(owner, "base", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if (not isinstance(owner, FileMapping) or advice is None or not hasattr(owner, "madvise")
            or not array.flags.c_contiguous or array.nbytes == 0):
        return False
    try:
        mapping_start = np.frombuffer(owner, dtype=np.uint8, count=1).ctypes.data
    except (ValueError, TypeError):  # a closed mapping
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
