"""§6.4 binarization and §6.5 level planes, directly."""

from __future__ import annotations

import unittest.mock

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from nncodec_unify.codec import planes
from nncodec_unify.codec.bitio import ByteReader, ByteWriter
from nncodec_unify.codec.classes import refine_classes
from nncodec_unify.codec.entropy import FrequencyTable, table_for_counts
from nncodec_unify.codec.format import MAX_DIRECT_BITS, PROBABILITY_BITS, Limits
from nncodec_unify.codec.planes import _BlockLayout, binarize, decode_plane, encode_plane, symbol_tables
from nncodec_unify.codec.syntax import write_level_plane


@given(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=50), st.integers(0, MAX_DIRECT_BITS),
       st.integers(0, 4))
def test_binarization_is_invertible(values, direct_bits, mantissa_bits):
    mantissa_bits = min(mantissa_bits, direct_bits)
    values = np.array(values, dtype=np.int64)
    symbols, raw_bits = binarize(values, direct_bits, mantissa_bits)
    base, width = symbol_tables(direct_bits, mantissa_bits)
    assert (width[symbols] == raw_bits).all()
    low = values - base[symbols]
    assert ((low >= 0) & (low < (np.int64(1) << raw_bits))).all()


def _round_trip(magnitudes, mask, **options):
    plane = encode_plane(magnitudes, mask, **options)
    writer = ByteWriter()
    write_level_plane(writer, plane)
    count = int(mask.sum()) if mask is not None else magnitudes.size
    data = writer.getvalue()
    reader = ByteReader(data)
    values = decode_plane(reader, *magnitudes.shape, mask, count, Limits(), "plane")
    reader.expect_end("plane")
    return values, plane


@given(st.integers(1, 70), st.integers(1, 90), st.integers(0, 2**32 - 1), st.booleans())
def test_planes_round_trip_with_contexts_and_masks(rows, cols, seed, masked):
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(0, 1.5, (rows, 1)) * rng.lognormal(0, 1, (1, cols))
    magnitudes = np.abs(np.rint(rng.normal(0, 1, (rows, cols)) * scale * 8)).astype(np.int64)
    mask = rng.random((rows, cols)) < 0.6 if masked else None
    values, _ = _round_trip(magnitudes, mask)
    assert (values == (magnitudes[mask] if masked else magnitudes.ravel())).all()


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**32 - 1),
       st.booleans())
def test_any_classes_round_trip_in_coding_order(rows, cols, row_classes, col_classes, seed, masked):
    """§6.5.1 step 3 with classes that mix row classes within a context, masked or not."""
    rng = np.random.default_rng(seed)
    classes = (rng.integers(0, row_classes, rows), rng.integers(0, col_classes, cols))
    classes[0][0], classes[1][0] = row_classes - 1, col_classes - 1  # every class count is used
    magnitudes = rng.integers(0, 20, (rows, cols))
    mask = rng.random((rows, cols)) < 0.6 if masked else None
    if mask is not None and not mask.any():
        mask[0, 0] = True
    values, plane = _round_trip(magnitudes, mask, classes=classes)
    assert (values == (magnitudes[mask] if masked else magnitudes.ravel())).all()
    # the order is: context, then row class, then scan order
    i, j = np.nonzero(mask if masked else np.ones((rows, cols), dtype=bool))
    expected = sorted(range(i.size), key=lambda n: (classes[0][i[n]] + classes[1][j[n]], classes[0][i[n]], n))
    positions = np.zeros((rows, cols), dtype=np.int64)  # each position's index among the coded ones
    positions[i, j] = np.arange(i.size)
    layout = _BlockLayout(*classes, row_classes + col_classes - 1)
    if not masked:
        for chunk in (planes._CHUNK, 2 * cols):  # the whole plane at once, or two rows at a time
            with unittest.mock.patch.object(planes, "_CHUNK", chunk):
                pieces = list(layout.coding_pieces(positions))
                assert np.concatenate([piece for _, piece in pieces]).tolist() == expected
                assert [context for context, _ in pieces] == sorted(context for context, _ in pieces)
                # the tables' counts, from one pass over the plane, are those of each context's run
                codes = magnitudes.reshape(rows, cols) % 7
                counts = layout.context_histograms(codes, 7)
                for context in range(counts.shape[0]):
                    run = [piece for c, piece in layout.coding_pieces(codes) if c == context]
                    run = np.concatenate(run) if run else np.zeros(0, dtype=np.int64)
                    assert counts[context].tolist() == np.bincount(run, minlength=7).tolist()
        return
    for chunk in (planes._CHUNK, 3 * cols):  # the whole plane at once, or three rows at a time
        with unittest.mock.patch.object(planes, "_CHUNK", chunk):
            runs = layout.masked_coding_runs(positions[mask], mask)
            assert np.concatenate([piece for run in runs for piece in run]).tolist() == expected


def test_contexts_are_used_when_line_scales_differ_and_pay_off():
    rng = np.random.default_rng(1)
    scale = np.exp(np.linspace(-2, 2, 300))[:, None]
    magnitudes = np.abs(np.rint(rng.normal(0, 1, (300, 200)) * scale * 30)).astype(np.int64)
    values, plane = _round_trip(magnitudes, None)
    assert (values == magnitudes.ravel()).all()
    assert plane.row_class_count > 1
    _, flat = _round_trip(magnitudes, None, use_contexts=False)
    assert plane.words.nbytes < 0.97 * flat.words.nbytes


def test_fixed_choices_are_honoured_and_escapes_carry_raw_bits():
    magnitudes = np.array([[0, 1, 2, 3, 1000, 2**31 - 1]], dtype=np.int64)
    values, plane = _round_trip(magnitudes, None, binarization=(1, 1), classes=(np.zeros(1), np.array([0, 0, 1, 1, 2, 2])))
    assert (values == magnitudes.ravel()).all()
    assert (plane.direct_bits, plane.mantissa_bits, plane.col_class_count) == (1, 1, 3)
    assert len(plane.raw_bits) > 0


def test_constant_plane_costs_no_words():
    values, plane = _round_trip(np.zeros((50, 40), dtype=np.int64), None)
    assert (values == 0).all() and plane.words.size == 0


def test_table_weights_sum_to_the_probability_total():
    table = table_for_counts(np.array([5, 0, 1000, 3, 0, 0, 1]))
    weights = table.weights()
    assert weights.sum() + table.alphabet_size == 2**PROBABILITY_BITS
    assert (weights >= 0).all() and table.alphabet_size == 7
    uniform = FrequencyTable(np.ones(3, dtype=np.int64), 1).weights()
    # T = 2**24 - 3 = 16777213; floor(T / 3) = 5592404 each; the remainder 1 goes to symbol 0
    assert uniform.tolist() == [5592405.0, 5592404.0, 5592404.0]


def test_refined_classes_code_a_plane_in_fewer_bytes():
    """Lloyd refinement (an encoder choice) moves lines to the classes that code them best."""
    rng = np.random.default_rng(5)
    row_scale = rng.choice([2.0, 5.0, 12.0, 30.0], 600)[:, None]
    col_scale = rng.choice([0.5, 1.0, 2.0], 300)[None, :]
    magnitudes = np.abs(np.rint(rng.laplace(0, 1, (600, 300)) * row_scale * col_scale)).astype(np.int64)
    symbols = binarize(magnitudes, 6, 2)[0]
    start = (rng.integers(0, 4, 600), rng.integers(0, 3, 300))  # poor classes: random
    refined = refine_classes(symbols, *start)
    assert refined[0].max() <= 3 and refined[1].max() <= 2
    size = {}
    for label, classes in (("start", start), ("refined", refined)):
        values, plane = _round_trip(magnitudes, None, binarization=(6, 2), classes=classes)
        assert (values == magnitudes.ravel()).all()
        size[label] = plane.words.nbytes
    assert size["refined"] < 0.95 * size["start"]


def test_range_decoder_reports_bad_data_and_lets_a_termination_through(monkeypatch):
    """constriction's assertions become BitstreamError; Ctrl-C and SIGTERM are not bad data."""
    import pytest

    from nncodec_unify.codec import entropy, termination
    from nncodec_unify.codec.errors import BitstreamError

    table = table_for_counts(np.array([3, 1]))
    for raised, expected in ((AssertionError(), BitstreamError), (termination.Terminated(15), termination.Terminated),
                             (KeyboardInterrupt(), KeyboardInterrupt)):
        class Failing:
            def __init__(self, words):
                pass

            def decode(self, model, count, raised=raised):
                raise raised

        monkeypatch.setattr(entropy.constriction.stream.queue, "RangeDecoder", Failing)
        with pytest.raises(expected):
            entropy.RangeDecoder(np.zeros(2, np.uint32), element="p", offset=0).decode(4, table)


@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 7), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_masked_plane_statistics_a_few_rows_at_a_time_equal_the_whole_plane_at_once(rows, cols, step, chunk, seed):
    """The class choice of a masked plane reads it a few rows at a time (no plane-sized
    copies): the sampled positions and the line means are those of the whole plane."""
    from nncodec_unify.codec import classes

    rng = np.random.default_rng(seed)
    mask = rng.random((rows, cols)) < rng.random()
    magnitudes = rng.integers(0, 50, (rows, cols))
    with unittest.mock.patch.object(classes, "_CHUNK", chunk):
        assert classes._every_nth_position(mask, step).tolist() == np.flatnonzero(mask)[::step].tolist()
        for axis in (0, 1):
            sums = np.where(mask, magnitudes, 0).sum(axis=axis, dtype=np.float64)
            counts = mask.sum(axis=axis, dtype=np.float64)
            log_means, present = classes._line_log_means(magnitudes, mask, axis)
            assert np.array_equal(log_means, np.log2(sums / np.maximum(counts, 1) + 0.5))
            assert np.array_equal(present, counts > 0)


@given(st.integers(1, 60), st.integers(1, 70), st.integers(0, 2**32 - 1), st.booleans())
def test_planes_of_signed_levels_or_of_a_scratch_grid_are_the_plain_planes(rows, cols, seed, masked):
    """``signed`` (a masked plane's magnitudes taken from signed levels) and ``scratch`` (the
    symbols written over the caller's grid) change memory only: the plane is the same."""
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(0, 1.5, (rows, 1)) * rng.lognormal(0, 1, (1, cols))
    levels = np.rint(rng.normal(0, 1, (rows, cols)) * scale * 8).clip(-127, 127).astype(np.int8)
    mask = rng.random((rows, cols)) < 0.6 if masked else None

    def plane_bytes(plane):
        writer = ByteWriter()
        write_level_plane(writer, plane)
        return writer.getvalue()

    expected = plane_bytes(encode_plane(np.abs(levels), mask))
    if masked:
        assert plane_bytes(encode_plane(levels.copy(), mask, signed=True)) == expected
    scratch = np.abs(levels)
    assert plane_bytes(encode_plane(scratch, mask, scratch=True)) == expected
