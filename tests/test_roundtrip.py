"""Round trips through encode and decode (issue 2, item 7)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import raw_arrays, shapes, structured_levels

import nncodec_unify as nu
from nncodec_unify import CodingMode, DType, EncoderConfig, TensorRule
from nncodec_unify.codec.decoder import _Levels
from nncodec_unify.codec.encoder import choose_column_offsets
from nncodec_unify.codec.format import BlockKind
from nncodec_unify.codec.quant import dequantize, step_size


def _config(mode: CodingMode, **kwargs) -> EncoderConfig:
    return EncoderConfig(rules=(TensorRule("*", mode=mode),), **kwargs)


@given(raw_arrays())
def test_raw_is_bit_exact_for_every_dtype_and_value(array):
    stream = nu.encode({"t": array}, config=_config(CodingMode.RAW))
    decoded = nu.decode(stream)["t"]
    assert decoded.dtype == array.dtype.newbyteorder("=")
    assert decoded.shape == array.shape
    assert decoded.tobytes() == array.tobytes()


@given(structured_levels(), st.sampled_from([CodingMode.UNIFIED, CodingMode.DENSE]), st.integers(-60, 8))
def test_values_on_the_grid_come_back_bit_exactly(levels_and_block, mode, qp):
    levels, block = levels_and_block
    step = step_size(qp)
    values = dequantize(levels, step, DType.FLOAT32)
    config = _config(mode, qp=qp, vector_qp=qp, block=block)
    result = nu.encode_with_report({"w": values}, config=config)
    decoded = nu.decode(result.data)["w"]
    assert decoded.tobytes() == values.tobytes()
    if mode == CodingMode.UNIFIED and levels.size:
        pruned, unified, dense = result.reports[0].block_counts
        assert pruned + unified + dense == -(-levels.shape[0] // block[0]) * -(-levels.shape[1] // block[1])


def test_unified_and_pruned_blocks_are_coded_as_such():
    step = step_size(-32)
    levels = np.zeros((8, 8), dtype=np.int64)
    levels[:4, :4] = 5 * np.array([1, -1, 1, 1] * 4).reshape(4, 4)  # unified
    levels[4:, 4:] = np.arange(16).reshape(4, 4) - 8  # dense
    values = dequantize(levels, step, DType.FLOAT32)
    result = nu.encode_with_report({"w": values})
    assert result.reports[0].block_counts == (2, 1, 1)
    assert nu.decode(result.data)["w"].tobytes() == values.tobytes()


@given(shapes(min_dims=1, max_dims=4, max_side=12), st.integers(-40, -8), st.integers(0, 2**32 - 1))
def test_quantized_values_are_within_half_a_step(shape, qp, seed):
    values = np.random.default_rng(seed).normal(0, 0.3, size=shape).astype(np.float32)
    config = EncoderConfig(qp=qp, vector_qp=qp, rdo=False)  # nearest levels (RDO: tests/test_rdo.py)
    decoded = nu.decode(nu.encode({"w": values}, config=config))["w"]
    step = float(step_size(qp))
    error = np.abs(decoded.astype(np.float64) - values.astype(np.float64))
    # half a step, plus one float32 rounding of the product
    assert (error <= step / 2 + np.abs(values) * 2.0**-23 + 1e-45).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_quantized_float16_and_float64_keep_their_dtype(dtype):
    values = np.linspace(-1, 1, 60).astype(dtype).reshape(6, 10)
    decoded = nu.decode(nu.encode({"w": values}, config=EncoderConfig(rdo=False)))["w"]  # nearest levels
    assert decoded.dtype == dtype
    assert np.abs(decoded.astype(np.float64) - values.astype(np.float64)).max() <= 2.0**-9 + 2.0**-11
    assert nu.decode(nu.encode({"w": values}))["w"].dtype == dtype  # dependent quantization too


def test_bfloat16_torch_tensors_round_trip_and_report_their_dtype():
    torch = pytest.importorskip("torch")
    weight = torch.randn(9, 7).bfloat16()
    bias = torch.randn(7).bfloat16()
    model = nu.decode_tensors(nu.encode({"w": weight, "b": bias, "r": weight.clone()},
                                        config=EncoderConfig(rules=(TensorRule("r", mode=CodingMode.RAW),))))
    by_name = {t.name: t for t in model.tensors}
    assert all(t.dtype == DType.BFLOAT16 for t in model.tensors)
    assert np.array_equal(by_name["r"].array, weight.float().numpy())
    assert (by_name["w"].array.view(np.uint32) & 0xFFFF == 0).all()  # values are bfloat16 values
    assert np.abs(by_name["w"].array - weight.float().numpy()).max() <= 2.0**-9 + 2.0**-7


@given(structured_levels())
def test_encoding_is_deterministic(levels_and_block):
    levels, block = levels_and_block
    values = {"a": levels.astype(np.float32) * 0.01, "b": np.arange(5, dtype=np.int16)}
    config = EncoderConfig(block=block)
    assert nu.encode(values, config=config) == nu.encode(dict(values), config=config)


def test_zero_dim_empty_and_many_tensors():
    tensors = {"scalar": np.float32(2.5), "empty": np.zeros((0, 4), np.float32), "vec": np.zeros(0, np.float32)}
    tensors.update({f"layer.{i}.ü": np.full((3, 5), i / 7, np.float32) for i in range(40)})
    decoded = nu.decode(nu.encode(tensors))
    assert list(decoded) == list(tensors)
    assert decoded["scalar"].shape == () and decoded["scalar"] == np.float32(2.5)
    assert decoded["empty"].shape == (0, 4) and decoded["vec"].shape == (0,)
    assert np.abs(decoded["layer.39.ü"] - 39 / 7).max() <= 2.0**-9


def test_nan_falls_back_to_raw_unless_a_mode_was_asked_for():
    values = np.array([[1.0, np.nan], [np.inf, -2.0]], dtype=np.float32)
    result = nu.encode_with_report({"w": values})
    assert result.reports[0].mode == CodingMode.RAW and "nan" in result.reports[0].note
    assert nu.decode(result.data)["w"].tobytes() == values.tobytes()
    with pytest.raises(nu.EncodeError, match="nan or inf"):
        nu.encode({"w": values}, config=_config(CodingMode.UNIFIED))


def test_levels_beyond_31_bits_fall_back_to_raw():
    values = np.array([[1e30, 0.0]], dtype=np.float32)
    result = nu.encode_with_report({"w": values})
    assert result.reports[0].mode == CodingMode.RAW
    assert nu.decode(result.data)["w"].tobytes() == values.tobytes()


def test_integer_tensors_are_coded_losslessly_or_raw_whichever_is_smaller():
    """§7.1.1: integers take the coded modes at step 1; RAW when smaller or beyond 31 bits."""
    rng = np.random.default_rng(4)
    tensors = {
        "position_ids": np.arange(512, dtype=np.int64)[None, :],
        "counts": rng.poisson(3, (64, 80)).astype(np.uint16),
        "weights_int8": np.clip(np.rint(rng.laplace(0, 6, (96, 64))), -128, 127).astype(np.int8),
        "noise_int8": rng.integers(-128, 128, (32, 32)).astype(np.int8),
        "huge": np.array([0, 2**40], dtype=np.int64),
        "flags": np.ones(7, dtype=bool),
        "empty": np.zeros((0, 3), dtype=np.int32),
    }
    result = nu.encode_with_report(tensors)
    modes = {r.name: r.mode for r in result.reports}
    # coded losslessly; DENSE, as float matrices, when no block comes out pruned or unified
    assert modes["position_ids"] == modes["counts"] == modes["weights_int8"] == CodingMode.DENSE
    assert modes["noise_int8"] == modes["huge"] == modes["flags"] == CodingMode.RAW
    sizes = {r.name: r.coded_bytes for r in result.reports}
    assert sizes["position_ids"] < 4096 // 4 and sizes["weights_int8"] < 0.7 * 96 * 64
    decoded = nu.decode(result.data)
    for name, array in tensors.items():
        assert decoded[name].dtype == array.dtype and decoded[name].tobytes() == array.tobytes(), name
    # a mode asked for is kept even when RAW would be smaller, and values beyond 31 bits refuse it
    forced = nu.encode_with_report({"noise_int8": tensors["noise_int8"]}, config=_config(CodingMode.DENSE))
    assert forced.reports[0].mode == CodingMode.DENSE
    assert nu.decode(forced.data)["noise_int8"].tobytes() == tensors["noise_int8"].tobytes()
    with pytest.raises(nu.EncodeError, match="31 bits"):
        nu.encode({"huge": tensors["huge"]}, config=_config(CodingMode.DENSE))


def test_rules_pick_mode_qp_and_block_by_name():
    config = EncoderConfig(rules=(TensorRule("*.bias", mode=CodingMode.RAW), TensorRule("enc.*", qp=-20, block=(2, 8))))
    assert config.coding_for("enc.bias", DType.FLOAT32, 1).mode == CodingMode.RAW
    coding = config.coding_for("enc.weight", DType.FLOAT32, 2)
    assert (coding.mode, coding.qp, coding.block) == (CodingMode.UNIFIED, -20, (2, 8))
    assert config.coding_for("dec.weight", DType.FLOAT32, 2).qp == -32


def test_block_kinds_follow_the_levels():
    from nncodec_unify.codec.blocks import block_kinds

    magnitudes = np.array([[0, 0, 3, 3, 1], [0, 0, 3, 3, 2]])
    kinds = block_kinds(magnitudes, 2, 2)
    assert kinds.tolist() == [[BlockKind.PRUNED, BlockKind.UNIFIED, BlockKind.DENSE]]


def test_workers_give_the_same_bytes():
    rng = np.random.default_rng(3)
    tensors = {f"t{i}": rng.normal(0, 0.1, (20 + i, 30)).astype(np.float32) for i in range(4)}
    assert nu.encode_with_report(tensors, workers=2).data == nu.encode(tensors)


def test_workers_keep_the_stream_order_behind_a_large_head_and_report_a_failing_tensor(monkeypatch):
    """Many small tensors finish while the large first one is still coding: they are held
    (BUFFERED_BYTES, here one byte: the first finished payload behind the head stops the
    submitting) and written after it, in order; a tensor that cannot be coded stops the run
    with its own error."""
    from nncodec_unify.codec import encoder

    monkeypatch.setattr(encoder, "BUFFERED_BYTES", 1)
    rng = np.random.default_rng(4)
    tensors = {"head": rng.normal(0, 0.1, (600, 400)).astype(np.float32)}
    tensors.update({f"t{i}": rng.normal(0, 0.1, (8, 3 + i)).astype(np.float32) for i in range(12)})
    assert nu.encode_with_report(tensors, workers=2).data == nu.encode(tensors)
    tensors["t5"] = np.full((4, 4), np.nan, np.float32)
    config = nu.EncoderConfig(rules=(TensorRule("t5", mode=CodingMode.DENSE),))
    with pytest.raises(nu.EncodeError, match="'t5'"):
        nu.encode_with_report(tensors, config=config, workers=2)


@pytest.mark.parametrize("mode", [CodingMode.DENSE, CodingMode.UNIFIED])
@pytest.mark.parametrize("qp", [-32, -31, -29])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_column_offsets_are_used_when_columns_have_a_mean_and_come_back_bit_exactly(mode, qp, dtype):
    """§6.10: a matrix whose columns are centred on non-zero levels gets column offsets;
    values on the grid still decode bit for bit, and the stream is smaller than without."""
    rng = np.random.default_rng(11)
    step = step_size(qp)
    levels = np.rint(rng.laplace(0, 6, (512, 160)) + rng.integers(-9, 10, 160)).astype(np.int64)
    values = dequantize(levels, step, DType.FLOAT32).astype(dtype)
    data = nu.encode({"w": values}, config=_config(mode, qp=qp))
    decoded = nu.decode(data)["w"]
    assert decoded.dtype == dtype and decoded.tobytes() == values.tobytes()
    plain = nu.encode({"w": values}, config=_config(mode, qp=qp, use_contexts=False))
    assert len(data) < 0.97 * len(plain)
    assert choose_column_offsets(levels.astype(np.int32)) is not None


def test_offsets_at_large_levels_take_the_exact_integer_path():
    """Where |level| times the step's odd mantissa reaches 2**24, a float sum of the two
    products could round differently from float32(level) * step; the decoder must not."""
    rng = np.random.default_rng(2)
    for step in (step_size(-31), step_size(-29), step_size(-32)):
        magnitudes = rng.integers(0, 1 << 24, (64, 8)).astype(np.int32)
        negative = (rng.random((64, 8)) < 0.5).astype(np.uint8) * (magnitudes != 0)
        offsets = rng.integers(-(1 << 20), 1 << 20, 8)
        signed = np.where(negative == 1, -magnitudes, magnitudes)
        levels = signed.astype(np.int64) + offsets
        for dtype in (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64):
            got = _Levels(signed.copy(), offsets).values(step, dtype)  # values() uses its levels up
            assert got.tobytes() == dequantize(levels.astype(np.int32), step, dtype).ravel().tobytes()
        small = np.where(negative == 1, -(magnitudes >> 12), magnitudes >> 12)
        levels = small.astype(np.int64) + (offsets >> 12)
        got = _Levels(small, offsets >> 12).values(step, DType.FLOAT32)
        assert got.tobytes() == dequantize(levels.astype(np.int32), step, DType.FLOAT32).ravel().tobytes()


@pytest.mark.parametrize("dtype, zero_point", [(np.uint8, 128), (np.uint16, 30000), (np.uint32, 1 << 20), (np.uint64, 1 << 20)])
def test_unsigned_tensors_around_a_zero_point_get_column_offsets(dtype, zero_point):
    """A quantized tensor's unsigned levels around its zero point take column offsets near
    that zero point: the stream is about the size of the signed levels', and exact."""
    rng = np.random.default_rng(3)
    signed = np.clip(np.rint(rng.laplace(0, 6, (512, 256)) + rng.integers(-9, 10, 256)), -127, 127)
    unsigned = (signed + zero_point).astype(dtype)
    data = nu.encode({"w": unsigned})
    assert nu.decode(data)["w"].tobytes() == unsigned.tobytes()
    assert choose_column_offsets(unsigned) is not None
    assert len(data) < 1.02 * len(nu.encode({"w": signed.astype(np.int16)}))


# --- values the float32 reconstruction (§7.1) cannot give back within a step -------------------------

def test_float16_that_a_coarse_step_would_rebuild_as_infinity_is_coded_raw():
    """65504 at a step of 40 rounds to level 1638, which rebuilds 65520: inf in float16."""
    x = (np.random.default_rng(3).standard_normal((64, 64)) * 1000).astype(np.float16)
    x[0, :5] = 65504
    for config in (EncoderConfig(qp=21, rdo=False), EncoderConfig(qp=21)):
        result = nu.encode_with_report({"w": x}, config=config, measure_error=True)
        report = result.reports[0]
        assert report.mode == CodingMode.RAW and "float16's range" in report.note
        assert nu.decode(result.data)["w"].tobytes() == x.tobytes()
    with pytest.raises(nu.EncodeError, match="tensor 'w': cannot code in DENSE mode: .* beyond float16's range"):
        nu.encode({"w": x}, config=EncoderConfig(qp=21, rules=(TensorRule("w", mode=CodingMode.DENSE),)))


@pytest.mark.parametrize("values, qp", [
    (2000 + np.random.default_rng(0).random(256), None),  # a float64 running_var: levels beyond 2**24 at the vector step
    ((np.arange(256) + 2.0 ** 25) * 2.0 ** -14, None),  # on the float64 grid, not on the float32 product's
    (np.where(np.arange(256) % 2 == 0, 3.5e38, -1e38).reshape(16, 16), 400),  # beyond float32 (IndexError or inf)
])
def test_float64_values_the_float32_product_cannot_hold_are_coded_raw(values, qp):
    base = EncoderConfig() if qp is None else EncoderConfig(qp=qp)
    for config in (base, dataclasses.replace(base, rdo=False), dataclasses.replace(base, dependent=False)):
        result = nu.encode_with_report({"v": values}, config=config)
        assert result.reports[0].mode == CodingMode.RAW
        assert nu.decode(result.data)["v"].tobytes() == values.tobytes()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_snapped_onto_the_grid_is_coded_losslessly_by_default(dtype):
    """snap_to_grid rounds the float32 product to the tensor's type; the trellis re-quantized
    such a tensor (on_grid compared the product in float64), so 20 % of it came back changed."""
    step = step_size(-31, EncoderConfig().qp_density)
    levels = np.random.default_rng(4).integers(-3000, 3000, size=(16, 16))
    values = dequantize(levels, step, DType.FLOAT16 if dtype == "float16" else DType.BFLOAT16)
    if dtype == "float16":
        decoded = nu.decode(nu.encode({"w": values}, config=EncoderConfig(qp=-31)))["w"]
        assert decoded.dtype == np.float16 and decoded.tobytes() == values.tobytes()
    else:
        torch = pytest.importorskip("torch")
        tensor = torch.from_numpy(values).to(torch.bfloat16)
        decoded = nu.decode(nu.encode({"w": tensor}, config=EncoderConfig(qp=-31)), framework="pt")["w"]
        assert torch.equal(decoded.view(torch.int16), tensor.view(torch.int16))
