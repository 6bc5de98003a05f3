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


def block_sizes(rows: int, cols: int, block_rows: int, block_cols: int) -> np.ndarray:
    """Elements in each block of the ``rows x cols`` matrix (edge blocks partial), as an
    int64 grid of :func:`grid_shape`."""
    grid_rows, grid_cols = grid_shape(rows, cols, block_rows, block_cols)
    row_sizes = np.minimum(block_rows, rows - np.arange(grid_rows, dtype=np.int64) * block_rows)
    col_sizes = np.minimum(block_cols, cols - np.arange(grid_cols, dtype=np.int64) * block_cols)
    return np.outer(row_sizes, col_sizes)


def block_kinds(magnitudes: np.ndarray, block_rows: int, block_cols: int) -> np.ndarray:
    """Kind of every block from the matrix of level magnitudes, as a uint8 grid.

    All zero -> PRUNED; all equal and non-zero -> UNIFIED; otherwise DENSE (§6.3).
    Works on numpy integer arrays.
    """
    rows, cols = magnitudes.shape
    if rows == 0 or cols == 0:
        return np.zeros(grid_shape(rows, cols, block_rows, block_cols), dtype=np.uint8)
    largest = _block_reduce(np.maximum, magnitudes, block_rows, block_cols)
    smallest = _block_reduce(np.minimum, magnitudes, block_rows, block_cols)
    kinds = np.full(largest.shape, BlockKind.DENSE, dtype=np.uint8)
    kinds[largest == smallest] = BlockKind.UNIFIED
    kinds[largest == 0] = BlockKind.PRUNED
    return kinds


def _block_reduce(combine: np.ufunc, matrix: np.ndarray, block_rows: int, block_cols: int) -> np.ndarray:
    """``combine`` (maximum or minimum) over each block, partial edge blocks included.

    Combines the strided slices ``matrix[:, k::block_cols]`` (the k-th column of every block)
    rather than reducing block by block: a handful of whole-array operations.
    """
    reduced = _reduce_axis1(combine, matrix, block_cols)
    return _reduce_axis1(combine, reduced.T, block_rows).T


def _reduce_axis1(combine: np.ufunc, matrix: np.ndarray, width: int) -> np.ndarray:
    result = matrix[:, 0::width].copy()  # every block has its first column
    for k in range(1, min(width, matrix.shape[1])):
        part = matrix[:, k::width]  # one column shorter when the last block is partial
        combine(result[:, :part.shape[1]], part, out=result[:, :part.shape[1]])
    return result


def expand_blocks(grid: np.ndarray, block_rows: int, block_cols: int, rows: int, cols: int) -> np.ndarray:
    """Per-element array of a per-block ``grid``, cropped to the ``rows x cols`` matrix.

    Crops after each repeat and clamps the block to the matrix, so memory stays within twice
    the matrix: the sides come from the stream, and a 255x255 block over a 1 x n matrix must
    not allocate 255 x n elements.
    """
    block_rows, block_cols = min(block_rows, max(rows, 1)), min(block_cols, max(cols, 1))
    return np.repeat(np.repeat(grid, block_rows, axis=0)[:rows], block_cols, axis=1)[:, :cols]
