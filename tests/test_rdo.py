"""Rate-distortion optimized encoding (rdo.py), the small-tensor RAW fallback and rate control."""

import numpy as np
import pytest

import nncodec_unify as nu
from nncodec_unify import CodingMode, EncoderConfig, TensorRule
from nncodec_unify.cli import EXIT_OK, main
from nncodec_unify.codec.encoder import encode_with_report
from nncodec_unify.codec.errors import EncodeError
from nncodec_unify.codec.quant import step_size
from nncodec_unify.codec.ratecontrol import RateTarget, encode_to_target


def _laplace(shape, scale=0.05, seed=0):
    return np.random.default_rng(seed).laplace(0, scale, size=shape).astype(np.float32)


def _rd_cost(values, data, qp, c):
    """D + lambda R of a one-tensor stream, lambda = c step**2 (the encoder's own criterion)."""
    decoded = nu.decode(data)["w"].astype(np.float64)
    step = float(step_size(qp))
    return float(((decoded - values) ** 2).sum()) + c * step ** 2 * 8 * len(data)


@pytest.mark.parametrize("mode", [CodingMode.DENSE, CodingMode.UNIFIED])
@pytest.mark.parametrize("qp", [-28, -20])
def test_rdo_lowers_the_rate_distortion_cost(mode, qp):
    values = _laplace((192, 256))
    rules = (TensorRule("w", mode=mode),)
    plain = nu.encode({"w": values}, config=EncoderConfig(qp=qp, rules=rules, rdo=False))
    optimized = nu.encode({"w": values}, config=EncoderConfig(qp=qp, rules=rules, dependent=False))
    assert len(optimized) < len(plain)
    c = EncoderConfig.rdo_lambda
    assert _rd_cost(values, optimized, qp, c) < _rd_cost(values, plain, qp, c)


def test_rdo_levels_are_a_neighbour_of_the_value_or_zero():
    values = _laplace((64, 96), seed=3)
    qp = -24
    config = EncoderConfig(qp=qp, rules=(TensorRule("w", mode=CodingMode.DENSE),), dependent=False)
    decoded = nu.decode(nu.encode({"w": values}, config=config))["w"]
    step = float(step_size(qp))
    levels = np.rint(decoded.astype(np.float64) / step)
    scaled = values.astype(np.float64) / step
    down, up = np.floor(np.abs(scaled)), np.floor(np.abs(scaled)) + 1
    allowed = (np.abs(levels) == down) | (np.abs(levels) == up) | (levels == 0)
    assert allowed.all()
    assert (np.sign(levels)[levels != 0] == np.sign(scaled)[levels != 0]).all()
    assert (levels != np.rint(scaled)).any()  # it did decide something


def test_values_already_on_the_grid_are_kept_exactly():
    """A model trained onto the grid is coded losslessly: RDO never moves its weights."""
    qp = -24
    step = step_size(qp)
    levels = np.random.default_rng(1).integers(-3, 4, size=(64, 64))
    levels[:16] = 0  # pruned blocks, which RDO might otherwise extend
    values = (levels * np.float32(step)).astype(np.float32)
    decoded = nu.decode(nu.encode({"w": values}, config=EncoderConfig(qp=qp)))["w"]
    assert decoded.tobytes() == values.tobytes()


def test_block_kinds_chosen_by_cost_unify_nearly_unified_blocks():
    """Blocks whose magnitudes differ by a fraction of a step: nearest rounding leaves them
    dense, the RD choice unifies them (one magnitude, own signs)."""
    rng = np.random.default_rng(2)
    qp = -24
    step = float(step_size(qp))
    magnitude = rng.integers(2, 6, size=(16, 16)).repeat(4, axis=0).repeat(4, axis=1)
    values = (magnitude + rng.uniform(-0.6, 0.6, size=(64, 64))) * step * rng.choice([-1, 1], size=(64, 64))
    values = values.astype(np.float32)
    plain = encode_with_report({"w": values}, config=EncoderConfig(qp=qp, rdo=False)).reports[0]
    chosen = encode_with_report({"w": values}, config=EncoderConfig(qp=qp, dependent=False)).reports[0]
    kinds_only = encode_with_report({"w": values}, config=EncoderConfig(qp=qp, rdo_blocks=False,
                                                                        dependent=False)).reports[0]
    assert plain.block_counts[1] < 16 and chosen.block_counts[1] > 200
    assert kinds_only.block_counts[1] < chosen.block_counts[1]
    assert chosen.coded_bytes < plain.coded_bytes


def test_block_kinds_chosen_by_cost_prune_blocks_of_tiny_weights():
    rng = np.random.default_rng(4)
    values = rng.normal(0, 0.05, size=(64, 64))
    values[:32] *= 0.1  # the top half is mostly below half a step, with a few levels of 1
    values = values.astype(np.float32)
    config = EncoderConfig(qp=-24)
    pruned_plain = encode_with_report({"w": values}, config=EncoderConfig(qp=-24, rdo=False)).reports[0].block_counts[0]
    pruned = encode_with_report({"w": values}, config=config).reports[0].block_counts[0]
    assert pruned > pruned_plain


def test_rdo_lambda_zero_is_nearest_rounding():
    values = _laplace((64, 64))
    assert nu.encode({"w": values}, config=EncoderConfig(rdo_lambda=0.0, dependent=False)) == \
        nu.encode({"w": values}, config=EncoderConfig(rdo=False))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.1", True, 1000.0])
def test_rdo_lambda_must_be_a_sensible_number(bad):
    with pytest.raises(EncodeError, match="rdo_lambda"):
        EncoderConfig(rdo_lambda=bad)


def test_rdo_stream_is_deterministic_and_the_same_with_workers():
    tensors = {"a": _laplace((64, 80), seed=5), "b": _laplace((40,), seed=6)}
    once = nu.encode(tensors)
    assert once == nu.encode(tensors)
    assert encode_with_report(tensors, workers=2).data == once


# ---------------------------------------------------------------------------------------------
# small tensors: RAW when that is no larger


def test_small_float_tensors_fall_back_to_raw_when_smaller():
    values = {"bias": np.array([0.1, -0.2, 0.3], np.float32), "w": _laplace((32, 32))}
    result = encode_with_report(values)
    reports = {r.name: r for r in result.reports}
    assert reports["bias"].mode == CodingMode.RAW and "no larger" in reports["bias"].note
    assert reports["w"].mode == CodingMode.DENSE  # coded, not RAW (no block came out structured: DENSE)
    assert nu.decode(result.data)["bias"].tobytes() == values["bias"].tobytes()


def test_a_matrix_without_structured_blocks_is_coded_dense_with_the_same_values():
    """An all-dense UNIFIED payload codes the same levels as DENSE mode with a block map and
    empty unified planes on top: the encoder writes DENSE, unless the mode was asked for."""
    values = {"w": _laplace((32, 32))}
    dense = encode_with_report(values)
    asked = encode_with_report(values, config=EncoderConfig(rules=(TensorRule("w", mode=CodingMode.UNIFIED),)))
    assert dense.reports[0].mode == CodingMode.DENSE and asked.reports[0].mode == CodingMode.UNIFIED
    assert asked.reports[0].block_counts[:2] == (0, 0)  # no pruned, no unified block
    assert len(dense.data) < len(asked.data)
    assert nu.decode(dense.data)["w"].tobytes() == nu.decode(asked.data)["w"].tobytes()


def test_an_integer_matrix_without_structured_blocks_is_coded_dense_too():
    rng = np.random.default_rng(5)
    plain = rng.integers(-300, 300, size=(16, 64)).astype(np.int32)  # no block of equal magnitudes
    structured = plain.copy()
    structured[:8, :32] = 0  # 16 of 64 blocks pruned
    result = encode_with_report({"plain": plain, "structured": structured})
    modes = {r.name: r.mode for r in result.reports}
    assert modes == {"plain": CodingMode.DENSE, "structured": CodingMode.UNIFIED}
    decoded = nu.decode(result.data)
    assert decoded["plain"].tobytes() == plain.tobytes() and decoded["structured"].tobytes() == structured.tobytes()
    asked = encode_with_report({"plain": plain}, config=EncoderConfig(rules=(TensorRule("*", mode=CodingMode.UNIFIED),)))
    assert asked.reports[0].mode == CodingMode.UNIFIED and len(asked.data) > len(encode_with_report({"plain": plain}).data)


def test_small_float16_vectors_are_never_larger_than_raw():
    for size in (1, 2, 5, 17, 64):
        values = np.linspace(-1, 1, size).astype(np.float16)
        report = encode_with_report({"v": values}).reports[0]
        raw_only = encode_with_report({"v": values}, config=EncoderConfig(
            rules=(TensorRule("v", mode=CodingMode.RAW),))).reports[0]
        assert report.coded_bytes <= raw_only.coded_bytes


def test_an_explicit_mode_is_kept_even_when_raw_is_smaller():
    config = EncoderConfig(rules=(TensorRule("bias", mode=CodingMode.DENSE),))
    report = encode_with_report({"bias": np.array([0.1, -0.2], np.float32)}, config=config).reports[0]
    assert report.mode == CodingMode.DENSE


# ---------------------------------------------------------------------------------------------
# rate control


@pytest.fixture(scope="module")
def model():
    return {"a": _laplace((128, 256), seed=7), "b": _laplace((64, 128), 0.1, seed=8),
            "bias": _laplace((64,), seed=9)}


def _encode_at(model, qp):
    config = EncoderConfig(qp=qp, vector_qp=qp + EncoderConfig.vector_qp - EncoderConfig.qp)
    return encode_with_report(model, config=config, measure_error=True)


def test_target_size_gives_the_finest_qp_that_fits(model):
    target = 40_000
    found = encode_to_target(model, RateTarget(size_bytes=target))
    assert len(found.result.data) == found.chosen.size_bytes <= target
    assert len(_encode_at(model, found.chosen.qp - 1).data) > target
    assert nu.decode(found.result.data).keys() == model.keys()


def test_target_bits_per_parameter(model):
    found = encode_to_target(model, RateTarget(bits_per_param=3.0))
    elements = sum(v.size for v in model.values())
    assert 8 * len(found.result.data) / elements <= 3.0
    assert 8 * len(_encode_at(model, found.chosen.qp - 1).data) / elements > 3.0


def test_target_rmse_gives_the_coarsest_qp_within_it(model):
    target = 2e-3
    found = encode_to_target(model, RateTarget(rmse=target))
    decoded = nu.decode(found.result.data)

    def rmse(tensors):
        errors = [((tensors[k].astype(np.float64) - model[k]) ** 2) for k in ("a", "b")]
        return float(np.sqrt(sum(e.sum() for e in errors) / sum(e.size for e in errors)))

    assert rmse(decoded) == pytest.approx(found.chosen.rmse) and found.chosen.rmse <= target
    assert rmse(nu.decode(_encode_at(model, found.chosen.qp + 1).data)) > target


def test_an_unreachable_target_is_a_clear_error(model):
    with pytest.raises(EncodeError, match="no qp meets the target"):
        encode_to_target({"w": np.zeros((4, 4), np.float32)}, RateTarget(size_bytes=10))


@pytest.mark.parametrize("kwargs", [{}, {"size_bytes": 10, "rmse": 1.0}, {"rmse": -1.0}, {"size_bytes": float("inf")}])
def test_rate_target_needs_exactly_one_positive_figure(kwargs):
    with pytest.raises(EncodeError):
        RateTarget(**kwargs)


def test_cli_target_size_reports_its_choice(tmp_path, capsys, model):
    from safetensors.numpy import save_file

    save_file(model, tmp_path / "m.safetensors")
    out = tmp_path / "m.nnu"
    assert main(["encode", str(tmp_path / "m.safetensors"), str(out), "--target-size", "40000", "--json"]) == EXIT_OK
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["rate_control"]["bytes"] == out.stat().st_size <= 40000
    assert summary["rdo"] == {"lambda": EncoderConfig.rdo_lambda, "blocks": True}
    assert main(["encode", str(tmp_path / "m.safetensors"), str(out), "-f", "--no-rdo", "--target-size", "-3"]) == 2
    assert "--target-size must be a positive number" in capsys.readouterr().err


@pytest.mark.parametrize("shape, block", [((203, 157), (4, 4)), ((130, 61), (3, 5))])
def test_unified_rdo_a_piece_of_block_rows_at_a_time_equals_the_whole_matrix_at_once(monkeypatch, shape, block):
    """optimize_unified works a few block rows at a time (edge blocks included): the levels
    and classes are those of one piece holding the whole matrix."""
    from nncodec_unify.codec import rdo

    rng = np.random.default_rng(13)
    kinds = np.repeat(np.repeat(rng.integers(0, 3, size=(-(-shape[0] // block[0]), -(-shape[1] // block[1]))),
                                block[0], axis=0), block[1], axis=1)[:shape[0], :shape[1]]
    scaled = rng.laplace(0, 6, size=shape).astype(np.float32)
    scaled[kinds == 0] *= 0.05
    scaled[kinds == 1] = np.copysign(7.3, scaled[kinds == 1])
    whole = rdo.optimize_unified(scaled.copy(), block, 0.12)  # it uses up its input
    monkeypatch.setattr(rdo, "_CHUNK", 1)  # one block row per piece
    pieces = rdo.optimize_unified(scaled.copy(), block, 0.12)
    assert np.array_equal(whole[0], pieces[0]) and all(np.array_equal(a, b) for a, b in zip(whole[1], pieces[1]))
    assert len(np.unique(np.abs(whole[0]))) > 3 and np.count_nonzero(whole[0] == 0) > 0


@pytest.mark.parametrize("with_offsets", [False, True])
def test_dense_rdo_a_piece_of_rows_at_a_time_equals_the_whole_matrix_at_once(monkeypatch, with_offsets):
    """optimize_dense works a few rows at a time, column offsets included: the levels and
    classes are those of one piece holding the whole matrix."""
    from nncodec_unify.codec import rdo

    rng = np.random.default_rng(15)
    offsets = rng.integers(-9, 10, size=97) if with_offsets else None
    scaled = (rng.laplace(0, 6, size=(211, 97)) + (0 if offsets is None else offsets)).astype(np.float32)
    whole = rdo.optimize_dense(scaled.copy(), offsets, 0.12)  # it uses up its input
    monkeypatch.setattr(rdo, "_CHUNK", 1)  # one row per piece
    pieces = rdo.optimize_dense(scaled.copy(), offsets, 0.12)
    assert np.array_equal(whole[0], pieces[0]) and all(np.array_equal(a, b) for a, b in zip(whole[1], pieces[1]))
    assert np.abs(whole[0] - np.rint(scaled)).max() <= 1 and np.count_nonzero(whole[0] != np.rint(scaled)) > 0
