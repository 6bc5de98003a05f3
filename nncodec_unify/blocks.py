"""The 2-D view of a tensor, its grid of blocks, and block kinds (spec §6.2, §6.3).

This is the one definition of the block view; the codec and the training code both use it.
A tensor of shape ``(s0, s1, ..., sk)`` is viewed as a ``s0 x (s1*...*sk)`` matrix (a conv
weight ``(out, in, kh, kw)`` becomes ``out x (in*kh*kw)``); a 1-D tensor as ``1 x s0``; a
0-dim tensor as ``1 x 1``. Blocks of ``block_rows x block_cols`` tile the matrix from its
top-left corner; blocks on the right and bottom edges may be partial.
"""

from __future__ import annotations

import math

import numpy as np

from .format import BlockKind


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """Rows and columns of the 2-D view of a tensor of ``shape``."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def grid_shape(rows: int, cols: int, block_rows: int, block_cols: int) -> tuple[int, int]:
    """Number of block rows and block columns (edge blocks counted)."""
    return -(-rows // block_rows), -(-cols // block_cols)


def block_kinds(magnitudes: np.ndarray, block_rows: int, block_cols: int) -> np.ndarray:
    """Kind of every block from the matrix of level magnitudes, as a uint8 grid.

    All zero -> PRUNED; all equal and non-zero -> UNIFIED; otherwise DENSE (§6.3).
    Works on numpy integer arrays.
    """
    rows, cols = magnitudes.shape
    if rows == 0 or cols == 0:
        return np.zeros(grid_shape(rows, cols, block_rows, block_cols), dtype=np.uint8)
    row_starts = np.arange(0, rows, block_rows)
    col_starts = np.arange(0, cols, block_cols)
    # reduceat reduces each run between starts, so partial edge blocks need no padding
    # reduce along the contiguous axis first: it is the cheap pass over the whole matrix
    largest = np.maximum.reduceat(np.maximum.reduceat(magnitudes, col_starts, axis=1), row_starts, axis=0)
    smallest = np.minimum.reduceat(np.minimum.reduceat(magnitudes, col_starts, axis=1), row_starts, axis=0)
    kinds = np.full(largest.shape, BlockKind.DENSE, dtype=np.uint8)
    kinds[largest == smallest] = BlockKind.UNIFIED
    kinds[largest == 0] = BlockKind.PRUNED
    return kinds


def expand_blocks(grid: np.ndarray, block_rows: int, block_cols: int, rows: int, cols: int) -> np.ndarray:
    """Per-element array of a per-block ``grid``, cropped to the ``rows x cols`` matrix.

    Crops after each repeat and clamps the block to the matrix, so memory stays within twice
    the matrix: the sides come from the stream, and a 255x255 block over a 1 x n matrix must
    not allocate 255 x n elements.
    """
    block_rows, block_cols = min(block_rows, max(rows, 1)), min(block_cols, max(cols, 1))
    return np.repeat(np.repeat(grid, block_rows, axis=0)[:rows], block_cols, axis=1)[:, :cols]
