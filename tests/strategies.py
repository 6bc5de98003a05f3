"""Hypothesis strategies shared by the codec's property tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from nncodec_unify.codec.format import BlockKind

RAW_NUMPY_DTYPES = ["<f4", "<f2", "<f8", "i1", "<i2", "<i4", "<i8", "u1", "<u2", "<u4", "<u8", "?"]


@st.composite
def shapes(draw, min_dims: int = 0, max_dims: int = 4, max_side: int = 9) -> tuple[int, ...]:
    """Shapes including 0-dim, empty and odd sizes that blocks do not divide."""
    ndim = draw(st.integers(min_dims, max_dims))
    return tuple(draw(st.integers(0 if ndim else 1, max_side)) for _ in range(ndim))


@st.composite
def raw_arrays(draw) -> np.ndarray:
    """Arrays of any supported numpy dtype with arbitrary bit patterns (nan, inf, subnormals)."""
    dtype = np.dtype(draw(st.sampled_from(RAW_NUMPY_DTYPES)))
    shape = draw(shapes())
    count = int(np.prod(shape, dtype=np.int64))
    if dtype == np.bool_:
        return np.array(draw(st.lists(st.booleans(), min_size=count, max_size=count)), dtype=bool).reshape(shape)
    raw = draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


@st.composite
def structured_levels(draw, max_rows: int = 13, max_cols: int = 14, max_level: int = 300):
    """An integer level matrix with pruned, unified and dense blocks, and its block shape."""
    block = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    rows, cols = draw(st.integers(0, max_rows)), draw(st.integers(0, max_cols))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    levels = rng.integers(-max_level, max_level + 1, size=(rows, cols))
    grid_rows, grid_cols = -(-rows // block[0]), -(-cols // block[1])
    kinds = rng.choice([BlockKind.DENSE, BlockKind.UNIFIED, BlockKind.PRUNED], size=(grid_rows, grid_cols))
    for i in range(grid_rows):
        for j in range(grid_cols):
            window = levels[i * block[0]:(i + 1) * block[0], j * block[1]:(j + 1) * block[1]]
            if kinds[i, j] == BlockKind.PRUNED:
                window[...] = 0
            elif kinds[i, j] == BlockKind.UNIFIED:
                window[...] = rng.integers(1, max_level + 1) * rng.choice([-1, 1], size=window.shape)
    return levels, block
