"""§6.1 step sizes and §7.1 reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nncodec_unify.codec.format import DType
from nncodec_unify.codec.quant import dequantize, qp_for_step, qp_is_valid, quantize, round_to_bfloat16, step_size


@pytest.mark.parametrize(("qp", "expected"), [(-32, 2.0**-8), (-31, 1.25 * 2.0**-8), (-30, 1.5 * 2.0**-8),
                                              (-29, 1.75 * 2.0**-8), (-28, 2.0**-7), (0, 1.0), (3, 1.75)])
def test_step_follows_the_nnr_rule(qp, expected):
    assert step_size(qp, 2) == np.float32(expected)
    assert step_size(qp, 2).dtype == np.float32


@given(st.integers(-600, 500), st.integers(0, 4))
def test_every_valid_step_is_exact_in_float32(qp, density):
    if not qp_is_valid(qp, density):
        with pytest.raises(ValueError):
            step_size(qp, density)
        return
    mantissa = (1 << density) + qp % (1 << density)
    exact = mantissa * 2.0 ** ((qp >> density) - density)
    assert float(step_size(qp, density)) == exact


@given(st.floats(1e-30, 1e20))
def test_qp_for_step_never_exceeds_the_step(step):
    qp = qp_for_step(step)
    assert float(step_size(qp)) <= step
    assert float(step_size(qp + 1)) > step or not qp_is_valid(qp + 1, 2)


def test_reconstruction_is_float32_times_float32():
    levels = np.array([3, -7, 2**24 + 1, 0], dtype=np.int64)
    step = step_size(-31)
    out = dequantize(levels, step, DType.FLOAT32)
    assert out.dtype == np.float32
    expected = np.array([np.float32(v) * step for v in levels.astype(np.float32)], dtype=np.float32)
    assert out.tobytes() == expected.tobytes()


def test_quantize_rounds_to_nearest_even():
    step = step_size(0)
    assert quantize(np.array([0.5, 1.5, -0.5, 2.49]), step).tolist() == [0, 2, 0, 2]


def test_bfloat16_rounding_ties_to_even_and_keeps_nan():
    values = np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, np.inf, np.nan, -0.0], dtype=np.float32)
    rounded = round_to_bfloat16(values)
    assert rounded[0] == np.float32(1.0)
    assert rounded[1] == np.float32(1.0 + 2.0**-6)
    assert np.isinf(rounded[2]) and np.isnan(rounded[3])
    assert (rounded.view(np.uint32) & 0xFFFF == 0).all()


@given(st.lists(st.floats(-6e4, 6e4, width=32), min_size=1, max_size=64), st.integers(-80, 40),
       st.sampled_from([np.float32, np.float16]))
def test_quantize_takes_the_float64_rounding_on_every_path(values, qp, dtype):
    """Power-of-two steps use a float32 product; it must round exactly like value / step in
    float64, ties to even included."""
    step = step_size(qp, 2)
    array = np.array(values, dtype=np.float32).astype(dtype)
    array = array[np.abs(array.astype(np.float64)) / float(step) < 2**31]
    ties = ((np.arange(array.size) + 0.5) * float(step)).astype(np.float32)  # k + 1/2 steps
    ties = ties[ties == ties.astype(dtype)].astype(dtype)
    for data in (array, ties, *([array[0].reshape(())] if array.size else [])):
        expected = np.rint(data.astype(np.float64) / np.float64(step)).astype(np.int64)
        assert np.array_equal(quantize(data, step), expected)
