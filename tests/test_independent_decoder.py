"""The independent decoder (tools/independent_decoder.py), written from spec/bitstream.md alone,
passes the whole conformance suite and agrees with the reference decoder on encoder output.

Where the two decoders agree on every stream, the spec says everything a decoder needs."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import subprocess
import sys
import zlib
from pathlib import Path

import constriction
import numpy as np
import pytest
from fuzzing import field_map, fix_crcs

import nncodec_unify as nu
import nncodec_unify.codec.encoder as reference_encoder
from nncodec_unify.codec.conform import canonical_bytes, error_category
from nncodec_unify.codec.entropy import FrequencyTable
from nncodec_unify.codec.planes import encode_plane
from nncodec_unify.codec.quant import zigzag
from nncodec_unify.codec.syntax import write_level_plane, write_sign_section

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "independent_decoder.py"
SUITE = ROOT / "conformance"


def _load():
    spec = importlib.util.spec_from_file_location("independent_decoder", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["independent_decoder"] = module
    spec.loader.exec_module(module)
    return module


ind = _load()


def _entries(group: str) -> list[dict]:
    return json.loads((SUITE / group / "manifest.json").read_text(encoding="utf-8"))["streams"]


def test_it_imports_only_the_standard_library_and_numpy():
    tree = ast.parse(TOOL.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "argparse", "dataclasses", "hashlib", "json", "sys", "pathlib", "numpy"}


def test_it_passes_the_suite_from_the_command_line_without_loading_our_package():
    code = "\n".join([
        "import runpy, sys",
        "tool, suite = sys.argv[1:]",
        "sys.argv = [tool, '--suite', suite]",
        "try:",
        "    runpy.run_path(tool, run_name='__main__')",
        "except SystemExit:",
        "    assert 'constriction' not in sys.modules and 'nncodec_unify' not in sys.modules",
        "    raise",
    ])
    result = subprocess.run([sys.executable, "-c", code, str(TOOL), str(SUITE)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "0 failure(s)"


@pytest.mark.parametrize("entry", _entries("valid"), ids=lambda e: e["file"])
def test_valid_stream_decodes_to_the_expected_tensors(entry):
    tensors = ind.decode((SUITE / "valid" / entry["file"]).read_bytes(), entry.get("limits"))
    got = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "coding_mode": t.coding_mode,
            "sha256": t.sha256} | ({"alias_of": t.alias_of} if t.alias_of is not None else {}) for t in tensors]
    assert got == entry["tensors"]


@pytest.mark.parametrize("entry", _entries("invalid"), ids=lambda e: e["file"])
def test_invalid_stream_is_rejected_with_the_expected_error(entry):
    with pytest.raises(ind.DecodeError) as caught:
        ind.decode((SUITE / "invalid" / entry["file"]).read_bytes(), entry.get("limits"))
    assert (caught.value.category, caught.value.element) == (entry["error"]["category"], entry["error"]["element"])


def test_it_agrees_with_the_reference_decoder_on_encoder_output(monkeypatch):
    """Including planes with several contexts, unmasked (a dense tensor) and masked (the dense
    blocks of a unified tensor), whose coding order (§6.5.1 step 3) differs from scan order,
    and column offsets (§6.10), which the encoder chooses for the large matrices with
    per-column means, float32, float16 and int32, coded DENSE and UNIFIED; and integer tensors,
    which the encoder codes DENSE or UNIFIED at step 1 (§7.1.1) where that is smaller than RAW."""
    coded = []
    coding_order = ind.coding_order

    def spy(positions, row_class, col_class, context_count):
        order = coding_order(positions, row_class, col_class, context_count)
        unmasked = len(positions) == len(row_class) * len(col_class)
        coded.append((unmasked, any(indices != sorted(indices) for indices in order)))
        return order

    monkeypatch.setattr(ind, "coding_order", spy)
    offset_modes = _record_offset_modes(monkeypatch)
    rng = np.random.default_rng(7)
    tensors = {
        "conv.weight": (rng.standard_normal((8, 4, 3, 3)) * 0.05).astype(np.float32),
        "big": (rng.standard_normal((64, 80)) * rng.uniform(0.01, 1, size=(64, 1))).astype(np.float32),
        "bias": rng.standard_normal(7).astype(np.float16),
        "scalar": np.float64(3.25),
        "empty": np.zeros((0, 5), np.float32),
        "ids": rng.integers(-9, 9, size=(3, 3)).astype(np.int64),
    }
    structured = (rng.standard_normal((12, 16)) * 0.1).astype(np.float32)
    structured[:4] = 0
    structured[4:8] = np.sign(structured[4:8]) * 0.125
    tensors["structured"] = structured
    # Row and column scales spread over a few octaves: the encoder chooses several classes.
    tensors["scaled"] = _scaled(rng, 80, 96)
    pruned = _scaled(rng, 96, 128)
    pruned[:8] = 0
    pruned[8:16, :32] = np.sign(pruned[8:16, :32]) * 0.125
    pruned[:, 96:] = 0
    tensors["pruned"] = pruned
    # Columns centred on a few quantization steps (multiples of 2**-8, the step at qp -32):
    # 512 x 160 is large enough for the encoder to weigh column offsets, and they pay.
    centred = (rng.integers(-12, 13, size=(1, 160)) * 2.0**-8
               + rng.standard_normal((512, 160)) * 2.0**-7).astype(np.float32)
    integers = _integer_tensors()
    tensors.update(integers)
    # the centred matrices last: the only ones with column offsets
    tensors["centred"], tensors["centred16"] = centred, centred.astype(np.float16)
    tensors["centred_int32"] = integers.pop("centred_int32")
    dense_rules = (nu.TensorRule("scaled", mode=nu.CodingMode.DENSE), nu.TensorRule("centred16", mode=nu.CodingMode.DENSE),
                   nu.TensorRule("counts", mode=nu.CodingMode.DENSE), nu.TensorRule("weights_int8", mode=nu.CodingMode.DENSE))
    # formats 2.0, 4.0, 2.0, 4.0 (dependently quantized) and 3.0: the 4.0 streams' digests verified
    for config, major in ((_plain(qp=-40, dependent=False), 2), (nu.EncoderConfig(qp=-32, rules=dense_rules, dependent=False), 4),
                          (_plain(qp=-24, dependent=False), 2), (nu.EncoderConfig(qp=-24), 4),
                          (_plain(qp=-32, rules=dense_rules), 3)):
        data = nu.encode(tensors, config=config)
        assert data[8] == major
        offset_modes.clear()
        reference = nu.decode_tensors(data).tensors
        independent = ind.decode(data)
        assert [t.name for t in independent] == [t.name for t in reference]
        for r, i in zip(reference, independent, strict=True):
            assert (i.dtype, i.shape, i.coding_mode) == (r.dtype_name, r.array.shape, r.coding_mode.name.lower())
            assert i.sha256 == hashlib.sha256(canonical_bytes(r.array, r.dtype_name)).hexdigest(), r.name
        decoded = {t.name: t for t in independent}
        for name in [*integers, "centred_int32"]:  # coded at step 1, so lossless (§7.1.1, §7.3)
            assert decoded[name].coding_mode != "raw", name
            assert decoded[name].data == tensors[name].astype(tensors[name].dtype.newbyteorder("<")).tobytes(), name
        if config.dependent:  # dependently quantized float tensors are coded without offsets
            continue
        # offset_mode 1 was read for the three centred matrices (the last tensors), 0 for the others
        assert [mode for mode, _ in offset_modes[-3:]] == [1, 1, 1], offset_modes
        assert {mode for mode, _ in offset_modes[:-3]} == {0}, offset_modes
    assert {(True, True), (False, True)} <= set(coded)


def test_it_agrees_with_the_reference_decoder_on_tied_weights():
    """Format 5.0 (§5.2): the reference encoder stores one array under two names once, the second
    name an alias; both decoders present it right after its tensor with the same values, and the
    independent decoder's model digest (§5.8, a record per name) matches the stream's."""
    rng = np.random.default_rng(3)
    embed = (rng.standard_normal((16, 8)) * 0.1).astype(np.float32)
    tensors = {"embed": embed, "bias": rng.standard_normal(8).astype(np.float32), "lm_head": embed}
    data = nu.encode(tensors)
    assert data[8] == 5
    reference = nu.decode_tensors(data).tensors
    independent = ind.decode(data)
    assert [(t.name, t.alias_of) for t in independent] == [(t.name, t.alias_of) for t in reference]
    assert ("lm_head", "embed") in [(t.name, t.alias_of) for t in independent]
    for r, i in zip(reference, independent, strict=True):
        assert i.sha256 == hashlib.sha256(canonical_bytes(r.array, r.dtype_name)).hexdigest(), r.name


def _plain(**options) -> nu.EncoderConfig:
    """The reference encoder's options for a stream without digests: format 2.0 or 3.0 (spec §4.1).
    Tests that force or patch what the encoder writes use it, so that the rule they test is
    reached rather than the content digest (§7.4), which the encoder computed from its own data."""
    return nu.EncoderConfig(digests=False, **options)


def _integer_tensors() -> dict[str, np.ndarray]:
    """Integer tensors the reference encoder codes DENSE or UNIFIED (smaller than RAW, values
    within 31 bits); the int32 matrix has per-column means, so column offsets pay (§6.10)."""
    rng = np.random.default_rng(0)
    return {
        "position_ids": np.arange(512, dtype=np.int64)[None, :],
        "counts": rng.poisson(3, (64, 80)).astype(np.uint16),
        "weights_int8": np.clip(np.rint(rng.laplace(0, 6, (96, 64))), -128, 127).astype(np.int8),
        "centred_int32": (rng.integers(-3000, 3000, size=(1, 256))
                          + rng.integers(-4, 5, size=(256, 256))).astype(np.int32),
    }


def _record_offset_modes(monkeypatch) -> list[tuple[int, int]]:
    """(offset_mode byte, column count) for every dense_offsets (§6.10) the independent decoder reads."""
    modes = []
    read_dense_offsets = ind.read_dense_offsets

    def spy(payload, rows, cols, lim):
        modes.append((payload.data[payload.pos] if payload.remaining else None, cols))
        return read_dense_offsets(payload, rows, cols, lim)

    monkeypatch.setattr(ind, "read_dense_offsets", spy)
    return modes


def _force_offsets(monkeypatch, mode: int, offsets, residuals=None, trailing: bytes = b"") -> None:
    """Make the reference encoder write ``offset_mode`` ``mode`` and, for mode 1, ``offsets``
    before every dense_levels plane, masked or not; the dense planes then code the tensor's own
    levels (or ``residuals``) as residuals, so the decoded levels are those plus the offsets.
    ``trailing`` is written after dense_signs."""
    def write(writer, matrix, mask, use_contexts, choice=None):
        writer.u8(mode)
        if mode == 1:
            write_level_plane(writer, encode_plane(zigzag(np.asarray(offsets, np.int64))[None, :], None,
                                                   use_contexts=False))
        values = np.asarray(matrix if residuals is None else residuals, np.int64)
        write_level_plane(writer, encode_plane(np.abs(values), mask, use_contexts=use_contexts))
        coded = values.ravel() if mask is None else values[mask]
        write_sign_section(writer, coded[coded != 0] < 0)
        writer.bytes(trailing)

    monkeypatch.setattr(reference_encoder, "_write_dense_levels", write)


def _both_decoders(data: bytes):
    """The tensors' SHA-256 from both decoders, or both decoders' (category, element) of a rejection."""
    try:
        reference = [hashlib.sha256(canonical_bytes(r.array, r.dtype_name)).hexdigest()
                     for r in nu.decode_tensors(data).tensors]
    except nu.BitstreamError as exc:
        reference = (error_category(exc), exc.element)
    try:
        independent = [t.sha256 for t in ind.decode(data)]
    except ind.DecodeError as exc:
        independent = (exc.category, exc.element)
    return reference, independent


def test_column_offsets_apply_to_the_dense_blocks_only(monkeypatch):
    """§5.6, §6.10: in a unified tensor with pruned, unified and dense blocks the offsets are
    added to the dense elements only (the reference encoder writes offsets only where every
    block is dense, so they are forced here)."""
    rng = np.random.default_rng(5)
    matrix = np.round(rng.standard_normal((24, 20)) * 4).astype(np.float32)
    matrix[:8] = 0                                    # pruned blocks
    matrix[8:12, :12] = 3                             # unified blocks
    matrix[12:16, 4:8] = -2
    offsets = rng.integers(-6, 7, size=20)
    offsets[0] = -(1 << 30)                           # the extremes of the zigzag codes
    offsets[1] = (1 << 30) - 1
    offset_modes = _record_offset_modes(monkeypatch)
    _force_offsets(monkeypatch, 1, offsets)
    config = _plain(qp=0, block=(4, 4))
    result = nu.encode_with_report({"mixed": matrix, "dense": matrix[8:]}, config=config)
    assert [r.block_counts[:2] for r in result.reports] == [(10, 4), (0, 4)]  # pruned, unified
    reference, independent = _both_decoders(result.data)
    assert reference == independent
    assert offset_modes == [(1, 20), (1, 20)]
    levels = np.frombuffer(ind.decode(result.data)[0].data, "<f4").reshape(24, 20)
    assert (levels[:8] == 0).all() and (levels[8:12, :12] == 3).all() and (levels[12:16, 4:8] == -2).all()
    assert (levels[16:] == (matrix[16:].astype(np.int64) + offsets).astype(np.float32)).all()


@pytest.mark.parametrize("mode, offsets, residuals, trailing, error", [
    pytest.param(2, None, None, b"", ("malformed", "offset_mode"), id="mode-2"),
    pytest.param(255, None, None, b"", ("malformed", "offset_mode"), id="mode-255"),
    pytest.param(1, [(1 << 30) - 1, -(1 << 30), 0], [[1 << 30, 1 - (1 << 30), 7]], b"", None,
                 id="levels-2**31-1-and-minus"),
    pytest.param(1, [(1 << 30) - 1, 0, 0], [[(1 << 30) + 1, 0, 7]], b"", ("malformed", "column_offsets"),
                 id="level-2**31"),
    pytest.param(1, [0, -(1 << 30), 0], [[0, -(1 << 30), 7]], b"", ("malformed", "column_offsets"),
                 id="level-minus-2**31"),
    # checked right after dense_signs: before the payload's trailing bytes
    pytest.param(1, [0, -(1 << 30), 0], [[0, -(1 << 30), 7]], b"\0", ("malformed", "column_offsets"),
                 id="level-minus-2**31-then-trailing-byte"),
    pytest.param(1, [0, 0, 0], [[0, -(1 << 30), 7]], b"\0", ("malformed", "tensor_payload"), id="trailing-byte"),
])
@pytest.mark.parametrize("coding_mode", [nu.CodingMode.DENSE, nu.CodingMode.UNIFIED])
def test_dense_offsets_checks(monkeypatch, coding_mode, mode, offsets, residuals, trailing, error):
    """§6.10: a reserved offset_mode, and a level (residual + offset) beyond ±(2**31 - 1)."""
    _force_offsets(monkeypatch, mode, offsets, residuals, trailing)
    config = _plain(qp=0, rules=(nu.TensorRule("w", mode=coding_mode),))
    w = np.array([[1, 2, 3]], np.float32)  # one dense block when UNIFIED: dense_levels unmasked
    reference, independent = _both_decoders(nu.encode({"w": w}, config=config))
    assert reference == independent
    assert independent == error if error else isinstance(independent, list)


def _patched(data: bytes, **values: int) -> bytes:
    """``data`` with the given elements (by their spec names, located by the reference
    decoder's field map) set to ``values``, in their own width, and every unit's CRC recomputed."""
    fields = {f.element: f for f in field_map(data)}
    patched = bytearray(data)
    for element, value in values.items():
        field = fields[element]
        patched[field.offset:field.offset + field.size] = value.to_bytes(field.size, "little", signed=value < 0)
    return fix_crcs(bytes(patched))


INT8, INT16, INT32, INT64, UINT8, BOOL, UINT16, UINT64 = 5, 6, 7, 8, 9, 10, 11, 13  # dtype values (§5.2)


@pytest.mark.parametrize("coding_mode", [nu.CodingMode.DENSE, nu.CodingMode.UNIFIED])
@pytest.mark.parametrize("changes, error", [
    pytest.param({}, None, id="as-encoded"),
    pytest.param({"qp": 252}, ("malformed", "qp"), id="qp-252"),  # a valid step, but not 1 (§6.1)
    pytest.param({"qp": -1}, ("malformed", "qp"), id="qp-minus-1"),
    pytest.param({"qp_density": 4}, None, id="qp-0-density-4"),  # step 1 whatever qp_density
    pytest.param({"qp": 4000}, ("malformed", "qp"), id="qp-out-of-range"),
    pytest.param({"qp": 252, "qp_density": 5}, ("malformed", "qp_density"), id="qp-252-density-5"),  # range checks first
    pytest.param({"dtype": INT8}, ("malformed", "levels"), id="int8"),  # -100..199 do not fit int8
    pytest.param({"dtype": UINT8}, ("malformed", "levels"), id="uint8"),  # nor negative levels an unsigned type
    pytest.param({"dtype": UINT16}, ("malformed", "levels"), id="uint16"),
    pytest.param({"dtype": UINT64}, ("malformed", "levels"), id="uint64"),
    pytest.param({"dtype": INT32}, None, id="int32"),
    pytest.param({"dtype": INT64}, None, id="int64"),
    pytest.param({"dtype": INT8, "qp": 252}, ("malformed", "qp"), id="int8-qp-252"),  # qp is read first
    pytest.param({"dtype": BOOL}, ("malformed", "coding_mode"), id="bool"),  # no coded mode for bool (§5.2)
])
def test_integer_tensor_checks(coding_mode, changes, error):
    """§6.1: qp 0 for an integer dtype, checked after the range checks; §7.1.1: every level within
    the dtype's range; §5.2: no DENSE or UNIFIED bool. An int16 tensor of -100..199, its header
    or quant_params patched (CRCs recomputed): both decoders agree."""
    values = np.arange(300, dtype=np.int16).reshape(10, 30) - 100
    config = _plain(rules=(nu.TensorRule("counts", mode=coding_mode),))
    data = nu.encode({"counts": values}, config=config)
    assert ind.decode(data)[0].coding_mode == coding_mode.name.lower()
    reference, independent = _both_decoders(_patched(data, **changes))
    assert reference == independent
    if error:
        assert independent == error
    else:  # the same levels in another integer dtype
        dtype = {INT16: np.int16, INT32: np.int32, INT64: np.int64}[changes.get("dtype", INT16)]
        assert independent == [hashlib.sha256(values.astype(np.dtype(dtype).newbyteorder("<")).tobytes()).hexdigest()]


@pytest.mark.parametrize("dtype, values, error", [
    pytest.param(np.uint8, [[0, 255, 7]], None, id="uint8-0-255"),
    pytest.param(np.uint8, [[256, 0, 7]], ("malformed", "levels"), id="uint8-256"),
    pytest.param(np.uint8, [[0, -1, 7]], ("malformed", "levels"), id="uint8-minus-1"),
    pytest.param(np.int8, [[-128, 127, 7]], None, id="int8-extremes"),
    pytest.param(np.int8, [[-129, 0, 7]], ("malformed", "levels"), id="int8-minus-129"),
    pytest.param(np.uint16, [[65535, 0, 7]], None, id="uint16-65535"),
    pytest.param(np.uint16, [[65536, 0, 7]], ("malformed", "levels"), id="uint16-65536"),
    pytest.param(np.int16, [[-32768, 32767, 7]], None, id="int16-extremes"),
    pytest.param(np.int16, [[32768, 0, 7]], ("malformed", "levels"), id="int16-32768"),
    pytest.param(np.uint32, [[(1 << 31) - 1, 0, 7]], None, id="uint32-2**31-1"),
    pytest.param(np.uint32, [[-((1 << 31) - 1), 0, 7]], ("malformed", "levels"), id="uint32-minus-2**31+1"),
    pytest.param(np.int32, [[-((1 << 31) - 1), (1 << 31) - 1, 7]], None, id="int32-extremes"),
])
@pytest.mark.parametrize("coding_mode", [nu.CodingMode.DENSE, nu.CodingMode.UNIFIED])
def test_integer_levels_must_fit_the_dtype(monkeypatch, coding_mode, dtype, values, error):
    """§7.1.1 at the edges of each range: the dense levels are forced (without column offsets)."""
    _force_offsets(monkeypatch, 0, None, values)
    config = _plain(rules=(nu.TensorRule("w", mode=coding_mode),))
    w = np.array([[1, 2, 3]], dtype)  # one dense block when UNIFIED: dense_levels unmasked
    reference, independent = _both_decoders(nu.encode({"w": w}, config=config))
    assert reference == independent
    expected = hashlib.sha256(np.array(values, np.int64).astype(np.dtype(dtype).newbyteorder("<")).tobytes()).hexdigest()
    assert independent == (error or [expected])


@pytest.mark.parametrize("offsets, residuals, trailing, error", [
    # column offsets apply to integer levels as to float ones (§6.10)
    pytest.param([100, -100, 0], [[27, -28, 7]], b"", None, id="offsets-to-the-extremes"),
    pytest.param([100, -100, 0], [[28, -28, 7]], b"", ("malformed", "levels"), id="offset-level-128"),
    pytest.param([100, -100, 0], [[27, -29, 7]], b"", ("malformed", "levels"), id="offset-level-minus-129"),
    # the range check comes once the payload has been read: before its trailing bytes
    pytest.param([100, -100, 0], [[28, -28, 7]], b"\0", ("malformed", "levels"), id="level-128-then-trailing-byte"),
    pytest.param([100, -100, 0], [[27, -28, 7]], b"\0", ("malformed", "tensor_payload"), id="trailing-byte"),
    # and the ±(2**31 - 1) check of §6.10 (right after dense_signs) before the dtype's range
    pytest.param([0, -(1 << 30), 0], [[0, -(1 << 30), 7]], b"", ("malformed", "column_offsets"),
                 id="level-minus-2**31"),
    pytest.param([0, -(1 << 30), 0], [[0, -(1 << 30), 7]], b"\0", ("malformed", "column_offsets"),
                 id="level-minus-2**31-then-trailing-byte"),
])
@pytest.mark.parametrize("coding_mode", [nu.CodingMode.DENSE, nu.CodingMode.UNIFIED])
def test_column_offsets_of_an_int8_tensor(monkeypatch, coding_mode, offsets, residuals, trailing, error):
    """§6.10 and §7.1.1 together: the offsets are added before the dtype's range is checked, which
    comes after the ±(2**31 - 1) check and before the payload's trailing bytes."""
    _force_offsets(monkeypatch, 1, offsets, residuals, trailing)
    config = _plain(rules=(nu.TensorRule("w", mode=coding_mode),))
    w = np.array([[1, 2, 3]], np.int8)  # one dense block when UNIFIED: dense_levels unmasked
    reference, independent = _both_decoders(nu.encode({"w": w}, config=config))
    assert reference == independent
    levels = (np.array(residuals, np.int64) + offsets).astype("i1").tobytes()
    assert independent == (error or [hashlib.sha256(levels).hexdigest()])


def _scaled(rng, rows: int, cols: int) -> np.ndarray:
    scales = rng.uniform(0.01, 1, size=(rows, 1)) * rng.uniform(0.05, 1, size=(1, cols))
    return (rng.standard_normal((rows, cols)) * scales).astype(np.float32)


def test_coding_order_is_by_context_then_row_class_then_scan_order():
    row_class, col_class = [1, 0, 2], [0, 1, 0, 1]
    positions = [(i, j) for i in range(3) for j in range(4) if (i, j) != (1, 1)]  # masked: (1, 1) left out
    order = ind.coding_order(positions, row_class, col_class, 4)
    contexts = [[positions[index] for index in indices] for indices in order]
    assert contexts == [
        [(1, 0), (1, 2)],                  # context 0: row class 0 (row 1, column 1 masked out)
        [(1, 3), (0, 0), (0, 2)],          # context 1: row class 0 before row class 1
        [(0, 1), (0, 3), (2, 0), (2, 2)],  # context 2: row class 1, then row class 2
        [(2, 1), (2, 3)],
    ]


def test_empty_and_one_row_grids_of_2_32_minus_1_are_never_listed():
    """An empty matrix may be 0 x (2**32 - 1) or (2**32 - 1) x 0 (§6.2); its column_offsets plane
    (§6.10) then has 2**32 - 1 positions, and a wrong value_count is rejected at once."""
    huge = (1 << 32) - 1
    assert list(ind.scan(huge, 0)) == list(ind.scan(0, huge)) == []
    assert len(ind.scan(1, huge)) == huge
    window = ind.Window((5).to_bytes(4, "little"), 0, 4)
    with pytest.raises(ind.DecodeError) as caught:
        ind.level_plane(window, "column_offsets", 1, huge, ind.scan(1, huge), ind.DEFAULT_LIMITS)
    assert (caught.value.category, caught.value.element) == ("malformed", "column_offsets.value_count")


@pytest.mark.parametrize("minor", [0, 1, 255])
@pytest.mark.parametrize("dependent", [False, True])
def test_it_reads_every_minor_version_of_formats_2_and_3_and_no_unknown_major(minor, dependent):
    values = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    data = bytearray(nu.encode({"w": values}, config=_plain(dependent=dependent)))
    assert data[8] == (3 if dependent else 2)
    data[9] = minor
    assert [t.name for t in ind.decode(bytes(data))] == ["w"]
    for major in (0, 1, 6, 255):
        data[8] = major
        with pytest.raises(ind.DecodeError) as caught:
            ind.decode(bytes(data))
        assert (caught.value.category, caught.value.element) == ("unsupported_version", "version_major")


# ---------------------------------------------------------------------------------------------
# Format 4.0 (§4.3 rules 0 and 5, §5.2 content_digest, §5.8 stream_end, §7.4), on streams built
# here byte by byte from the spec (units framed with zlib's CRC-32, digests with hashlib).

FLOAT32, FLOAT16 = 1, 2  # dtype values (§5.2)
MAGIC = b"\x89NNU\r\n\x1a\n"


def _unit(unit_type: int, payload: bytes, flags: int = 0) -> bytes:
    """§4.2: unit_type, unit_flags, payload_length, payload, unit_crc."""
    head = bytes([unit_type, flags]) + len(payload).to_bytes(4, "little")
    return head + payload + zlib.crc32(head + payload).to_bytes(4, "little")


def _tensor(name: str, dtype: int, dims: tuple[int, ...], body: bytes, *, mode: int = 0, canonical: bytes | None = None,
            digest: bytes | None = None, major: int = 4) -> tuple[bytes, bytes]:
    """A TENSOR unit (§5.2) and its tensor_record (§5.8). ``body`` follows the header: raw_data for
    RAW (mode 0), else the rest of the payload, whose canonical bytes are then ``canonical``.
    ``digest`` defaults to the SHA-256 of the canonical bytes; no digest before major version 4."""
    raw_name = name.encode()
    fields = (len(raw_name).to_bytes(2, "little") + raw_name + bytes([dtype, len(dims)])
              + b"".join(d.to_bytes(4, "little") for d in dims))
    if digest is None:
        digest = hashlib.sha256(body if canonical is None else canonical).digest()
    if major < 4:
        digest = b""
    return _unit(2, fields + bytes([mode]) + digest + body), fields + digest


def _zero_dense(count: int, quant_flags: int | None = 0, trailing: bytes = b"") -> bytes:
    """A dense_payload (§5.5) of ``count`` levels 0 in a 1 x count matrix, with no range-coded word:
    qp 0, density 0, quant_flags (absent if None), offset_mode 0, a level plane with one
    one-symbol magnitude table (§6.6), no sign bits."""
    quant = (0).to_bytes(2, "little") + b"\0" + (b"" if quant_flags is None else bytes([quant_flags]))
    plane = (count.to_bytes(4, "little") + bytes([0, 0, 1, 1]) + (1).to_bytes(2, "little")
             + (0).to_bytes(4, "little") + (0).to_bytes(4, "little"))
    return quant + b"\0" + plane + (0).to_bytes(4, "little") + trailing


def _stream(items, *, major: int = 4, minor: int = 0, tensor_count: int | None = None, end: bool = True,
            unit_count: int | None = None, model_digest: bytes | None = None, stream_digest: bytes | None = None,
            end_payload: bytes | None = None, end_flags: int = 0, after: bytes = b"") -> bytes:
    """A stream of ``major.minor``: the file header, a model header, then ``items`` — units, or
    (unit, record) pairs from ``_tensor`` — then (when ``end``) a STREAM_END unit whose fields
    are right unless given, then ``after``."""
    units = [item[0] if isinstance(item, tuple) else item for item in items]
    records = [item[1] for item in items if isinstance(item, tuple)]
    count = len(records) if tensor_count is None else tensor_count
    body = MAGIC + bytes([major, minor, 0, 0]) + _unit(1, count.to_bytes(4, "little")) + b"".join(units)
    if not end:
        return body + after
    if end_payload is None:
        end_payload = ((1 + len(units) if unit_count is None else unit_count).to_bytes(4, "little")
                       + (model_digest or hashlib.sha256(b"".join(records)).digest())
                       + (stream_digest or hashlib.sha256(body).digest()))
    return body + _unit(4, end_payload, end_flags) + after


def _error(data: bytes) -> tuple[str, str] | None:
    try:
        ind.decode(data)
    except ind.DecodeError as exc:
        return exc.category, exc.element
    return None


W = np.arange(6, dtype="<f4").reshape(2, 3)
MASK = np.array([1, 0, 1], "u1")
IDS = np.array([-3, 7], "<i2")


def _three_tensors(**digests: bytes):
    return [_tensor("w", FLOAT32, (2, 3), W.tobytes(), digest=digests.get("w")),
            _tensor("mask", BOOL, (3,), MASK.tobytes(), digest=digests.get("mask")),
            _tensor("ids", INT16, (2,), IDS.tobytes(), digest=digests.get("ids"))]


def test_sha256_vectors_of_appendix_a():
    assert hashlib.sha256(b"").hexdigest() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert hashlib.sha256(b"abc").hexdigest() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("minor", [0, 1, 255])
def test_a_4_0_stream_of_raw_tensors_decodes(minor):
    """§5.2, §5.8: RAW tensors with their content digests, an attached file (defined at every 4.x
    minor version, §5.7) and an unknown ancillary unit, counted in unit_count, then STREAM_END."""
    attached = _unit(3, (10).to_bytes(2, "little") + b"config.txt" + b"hello", flags=1)
    items = [attached, *_three_tensors(), _unit(200, b"skip me", flags=1)]
    tensors = ind.decode(_stream(items, minor=minor))
    assert [(t.name, t.dtype, t.shape, t.coding_mode) for t in tensors] == [
        ("w", "float32", (2, 3), "raw"), ("mask", "bool", (3,), "raw"), ("ids", "int16", (2,), "raw")]
    assert [t.data for t in tensors] == [W.tobytes(), MASK.tobytes(), IDS.tobytes()]


def test_a_4_0_stream_without_tensors_has_the_digest_of_no_bytes():
    data = _stream([])
    assert data[-4 - 64:-4 - 32] == hashlib.sha256(b"").digest()
    assert ind.decode(data) == []


@pytest.mark.parametrize("quant_flags, trailing, digest, error", [
    pytest.param(0, b"", None, None, id="scalar"),
    pytest.param(1, b"", None, None, id="dependent"),  # zeros are zeros in either quantizer (§7.1.2)
    pytest.param(2, b"", None, ("malformed", "quant_flags"), id="quant-flags-2"),
    pytest.param(0, b"", bytes(32), ("checksum", "content_digest"), id="wrong-digest"),
    # the content digest is compared after every other check on the tensor (§7.4, §9)
    pytest.param(0, b"\0", bytes(32), ("malformed", "tensor_payload"), id="trailing-byte-before-digest"),
    pytest.param(2, b"", bytes(32), ("malformed", "quant_flags"), id="quant-flags-before-digest"),
])
def test_a_4_0_dense_tensor_reads_quant_flags_and_its_content_digest(quant_flags, trailing, digest, error):
    """§6.1: 4.x quant_params end with quant_flags, as in 3.x; a DENSE float16 tensor of zeros."""
    tensor = _tensor("z", FLOAT16, (1, 4), _zero_dense(4, quant_flags, trailing), mode=1, canonical=bytes(8),
                     digest=digest)
    data = _stream([tensor])
    assert _error(data) == error
    if error is None:
        assert ind.decode(data)[0].data == bytes(8)


def _swapped_tensors() -> bytes:
    """The three tensors in another order, but STREAM_END's model digest that of the encoder's order
    and its stream digest right for the bytes before it."""
    items = _three_tensors()
    return _stream([items[1], items[0], items[2]], model_digest=hashlib.sha256(b"".join(r for _, r in items)).digest())


def _tensor_replaced() -> bytes:
    """A tensor edited, its content digest and CRC recomputed (so it decodes and verifies), but the
    model digest that of the original tensors."""
    items = _three_tensors()
    edited = _tensor("ids", INT16, (2,), np.array([-3, 8], "<i2").tobytes())
    return _stream([items[0], items[1], edited], model_digest=hashlib.sha256(b"".join(r for _, r in items)).digest())


def _with_end(data: bytes, end_payload: bytes, flags: int = 0) -> bytes:
    """``data`` whose last unit (a STREAM_END of 68 payload bytes) is replaced."""
    return data[:-78] + _unit(4, end_payload, flags)


def _end_payload(data: bytes) -> bytes:
    return data[-72:-4]


@pytest.mark.parametrize("build, error", [
    pytest.param(lambda: _stream(_three_tensors()), None, id="valid"),
    pytest.param(lambda: _stream(_three_tensors(mask=bytes(32))), ("checksum", "content_digest"), id="content-digest"),
    pytest.param(lambda: _stream([_tensor("w", FLOAT32, (2, 3), W.tobytes(), digest=hashlib.sha256(b"").digest())]),
                 ("checksum", "content_digest"), id="content-digest-of-no-bytes"),
    # a RAW payload of the wrong size is malformed before any digest is compared (§7.4)
    pytest.param(lambda: _stream([_tensor("w", FLOAT32, (2, 3), W.tobytes()[:-1], digest=bytes(32))]),
                 ("malformed", "raw_data"), id="raw-data-before-content-digest"),
    pytest.param(lambda: _stream([_tensor("m", BOOL, (3,), b"\0\2\1")]), ("malformed", "raw_data"), id="bool-byte-2"),
    # the header ends with content_digest: cut inside it, the unit's payload is truncated there
    pytest.param(lambda: _stream([(_unit(2, b"\1\0w\1\0\0" + bytes(31)), b"")]), ("truncated", "content_digest"),
                 id="content-digest-cut"),
    pytest.param(lambda: _stream(_three_tensors(), unit_count=3), ("malformed", "unit_count"), id="unit-count-low"),
    pytest.param(lambda: _stream(_three_tensors(), unit_count=5), ("malformed", "unit_count"), id="unit-count-high"),
    pytest.param(lambda: _stream(_three_tensors(), unit_count=5, model_digest=bytes(32), stream_digest=bytes(32)),
                 ("malformed", "unit_count"), id="unit-count-first"),
    pytest.param(lambda: _stream(_three_tensors(), model_digest=bytes(32)), ("checksum", "model_digest"),
                 id="model-digest"),
    pytest.param(lambda: _stream(_three_tensors(), model_digest=bytes(32), stream_digest=bytes(32)),
                 ("checksum", "model_digest"), id="model-digest-before-stream-digest"),
    pytest.param(_swapped_tensors, ("checksum", "model_digest"), id="tensors-reordered"),
    pytest.param(_tensor_replaced, ("checksum", "model_digest"), id="tensor-replaced"),
    pytest.param(lambda: _stream(_three_tensors(), stream_digest=bytes(32)), ("checksum", "stream_digest"),
                 id="stream-digest"),
    pytest.param(lambda: _stream([_unit(200, b"b", flags=1), *_three_tensors()],
                                 stream_digest=hashlib.sha256(_stream([_unit(200, b"a", flags=1), *_three_tensors()],
                                                                      end=False)).digest()),
                 ("checksum", "stream_digest"), id="ancillary-unit-edited"),
    # a longer payload: malformed, checked before the three fields are compared (§5.8)
    pytest.param(lambda: _with_end(_stream([]), _end_payload(_stream([])) + b"\0"), ("malformed", "stream_end"),
                 id="payload-69-bytes"),
    pytest.param(lambda: _with_end(_stream([]), _end_payload(_stream([]))[:-1] + b"\0\0"), ("malformed", "stream_end"),
                 id="payload-69-bytes-wrong-digest"),  # the length is checked first (§5.8)
    pytest.param(lambda: _with_end(_stream([]), _end_payload(_stream([]))[:-1]), ("truncated", "stream_digest"),
                 id="payload-67-bytes"),
    pytest.param(lambda: _with_end(_stream([]), _end_payload(_stream([]))[:36]), ("truncated", "stream_digest"),
                 id="payload-36-bytes"),
    pytest.param(lambda: _with_end(_stream([]), _end_payload(_stream([]))[:35]), ("truncated", "model_digest"),
                 id="payload-35-bytes"),
    # the checks come after the whole payload is read: a wrong unit_count in a cut payload is not reported
    pytest.param(lambda: _with_end(_stream([]), (7).to_bytes(4, "little") + _end_payload(_stream([]))[4:35]),
                 ("truncated", "model_digest"), id="payload-35-bytes-wrong-unit-count"),
    pytest.param(lambda: _with_end(_stream([]), _end_payload(_stream([]))[:3]), ("truncated", "unit_count"),
                 id="payload-3-bytes"),
    pytest.param(lambda: _with_end(_stream([]), b""), ("truncated", "unit_count"), id="payload-empty"),
    # §4.3 rule 0: nothing may follow STREAM_END, checked before anything of the next unit is read
    pytest.param(lambda: _stream(_three_tensors(), after=b"\0"), ("malformed", "stream_end"), id="one-byte-after"),
    pytest.param(lambda: _stream(_three_tensors(), after=_unit(200, b"", flags=1)), ("malformed", "stream_end"),
                 id="ancillary-unit-after"),
    pytest.param(lambda: _stream(_three_tensors(), after=_unit(2, b"", flags=0x80)), ("malformed", "stream_end"),
                 id="bad-unit-after"),
    pytest.param(lambda: _stream([], after=_stream([])[-78:]),
                 ("malformed", "stream_end"), id="second-stream-end"),
    # §4.3 rule 5
    pytest.param(lambda: _stream(_three_tensors(), end_flags=1), ("malformed", "unit_flags"), id="ancillary-stream-end"),
    pytest.param(lambda: _stream(_three_tensors(), tensor_count=4), ("truncated", "tensor_count"),
                 id="stream-end-before-last-tensor"),
    pytest.param(lambda: _stream(_three_tensors(), tensor_count=4, end_flags=1), ("malformed", "unit_flags"),
                 id="ancillary-stream-end-before-last-tensor"),
    pytest.param(lambda: MAGIC + bytes([4, 0, 0, 0]) + _unit(4, bytes(68)), ("malformed", "unit_type"),
                 id="stream-end-first"),
    pytest.param(lambda: _stream([_unit(3, b"\1\0a", flags=0)]), ("malformed", "unit_flags"),
                 id="critical-attached-file"),
    pytest.param(lambda: _stream([_unit(5, b"")]), ("malformed", "unit_type"), id="unknown-critical-unit-type-5"),
    # §4.3 end of the stream: model_header, then tensor_count, then stream_end
    pytest.param(lambda: _stream(_three_tensors(), end=False), ("truncated", "stream_end"), id="no-stream-end"),
    pytest.param(lambda: _stream(_three_tensors(), tensor_count=4, end=False), ("truncated", "tensor_count"),
                 id="no-stream-end-nor-last-tensor"),
    pytest.param(lambda: MAGIC + bytes([4, 0, 0, 0]), ("truncated", "model_header"), id="no-model-header"),
    pytest.param(lambda: _stream(_three_tensors())[:-1], ("truncated", "payload_length"), id="stream-end-cut"),
    pytest.param(lambda: _stream(_three_tensors())[:-78] + _unit(4, bytes(68))[:-4] + b"\0\0\0\0", ("checksum", "unit_crc"),
                 id="stream-end-crc"),
    pytest.param(lambda: _stream([], major=6), ("unsupported_version", "version_major"), id="major-6"),
])
def test_4_0_stream_checks(build, error):
    assert _error(build()) == error


@pytest.mark.parametrize("major, minor", [(2, 0), (3, 0), (3, 1), (3, 255)])
def test_in_2_x_and_3_x_streams_type_4_is_an_unknown_unit_and_nothing_is_digested(major, minor):
    """§4.1 table: no content_digest, no STREAM_END; a unit of type 4 is unknown (rules 7, 8)."""
    raw = _tensor("w", FLOAT32, (2, 3), W.tobytes(), major=major)
    dense = _tensor("z", FLOAT16, (1, 4), _zero_dense(4, None if major == 2 else 0), mode=1, major=major)
    valid = _stream([raw, dense], major=major, minor=minor, end=False)
    assert [t.data for t in ind.decode(valid)] == [W.tobytes(), bytes(8)]
    ancillary_end = _unit(4, bytes(68), flags=1)
    assert [t.name for t in ind.decode(valid + ancillary_end)] == ["w", "z"]  # skipped, even last
    assert _error(valid + _unit(4, bytes(68))) == ("malformed", "unit_type")
    assert _error(valid + b"\0") == ("truncated", "unit_flags")  # trailing bytes start another unit
    assert _error(_stream([raw], major=major, minor=minor, tensor_count=2, end=False)) == ("truncated", "tensor_count")
    # a 4.0 stream read as 2.x or 3.x misreads the tensor header (why 4.0 is a new major version)
    v4 = bytearray(_stream([_tensor("w", FLOAT32, (2, 3), W.tobytes())]))
    v4[8:10] = bytes([major, minor])
    assert _error(bytes(v4)) == ("malformed", "raw_data")


def test_crc32_is_zlibs():
    assert ind.crc32(b"123456789") == 0xCBF43926
    assert ind.crc32(b"") == 0
    data = bytes(range(256)) * 3
    assert ind.crc32(data) == zlib.crc32(data)


def test_range_decoder_inverts_constriction_and_its_end_check_is_maybe_exhausted():
    """§6.6.1 and §6.9 against constriction 0.5.0 itself: random tables, random symbols. On the
    encoder's words and on altered ones, the decoders agree step by step, and the end check
    (§6.9.4) passes exactly when constriction's ``maybe_exhausted()`` is true (Appendix C)."""
    rng = np.random.default_rng(11)
    outcomes = set()
    for _ in range(300):
        groups = _random_groups(rng)
        encoder = constriction.stream.queue.RangeEncoder()
        for symbols, f in groups:
            if symbols.size:
                encoder.encode(symbols, FrequencyTable(f.astype(np.int64), 24).model())
        words = [int(w) for w in encoder.get_compressed()]
        decoder = ind.RangeDecoder(words, "p")
        for symbols, f in groups:
            assert decoder.symbols(symbols.size, ind_cdf(f)) == symbols.tolist()
        decoder.end_check()  # the encoder's words always pass
        if not decoder.initialised:
            assert words == []
            continue
        # Zero words up to the decoder's last read change nothing; one more is a surplus word.
        padded = words + [0] * (decoder.reads - len(words))
        assert _end_check_passes(padded, groups) is True
        assert _end_check_passes(padded + [0], groups) is False
        for wrong in _altered(rng, words):
            ours = _end_check_passes(wrong, groups)
            theirs = _maybe_exhausted(wrong, groups)
            assert ours == theirs, (words, wrong)
            outcomes.add(ours)
    assert outcomes == {None, False, True}


def _random_groups(rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """1 to 3 groups of symbols, each with its own random frequencies (2 to 29 symbols)."""
    groups = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(2, 30))
        bits = int(rng.integers(1, 25))
        f = rng.integers(0, 1 << bits, size=n)
        f[int(rng.integers(n))] |= 1
        p = f / f.sum()
        groups.append((rng.choice(n, size=int(rng.integers(0, 80)), p=p).astype(np.int32), f))
    return groups


def _altered(rng, words: list[int]) -> list[list[int]]:
    """Word sequences near ``words``: surplus, missing, changed words."""
    def changed(i: int) -> list[int]:
        return words[:i] + [int(rng.integers(0, 1 << 32))] + words[i + 1:]

    return [words + [0], words + [int(rng.integers(0, 1 << 32))], words[:-1], words[:-2],
            changed(len(words) - 1), changed(int(rng.integers(len(words)))),
            [int(w) for w in rng.integers(0, 1 << 32, size=len(words))]]


def _end_check_passes(words: list[int], groups) -> bool | None:
    """The independent decoder on ``words``: None if a decoding step fails, else whether the
    end check passes."""
    decoder = ind.RangeDecoder(words, "p")
    try:
        for symbols, f in groups:
            decoder.symbols(symbols.size, ind_cdf(f))
    except ind.DecodeError as exc:
        assert (exc.category, exc.element) == ("malformed", "p.words")
        return None
    try:
        decoder.end_check()
    except ind.DecodeError as exc:
        assert (exc.category, exc.element) == ("malformed", "p.word_count")
        return False
    return True


def _maybe_exhausted(words: list[int], groups) -> bool | None:
    """constriction on ``words``: None if decoding fails, else ``maybe_exhausted()``."""
    decoder = constriction.stream.queue.RangeDecoder(np.array(words, dtype=np.uint32))
    try:
        for symbols, f in groups:
            if symbols.size:
                decoder.decode(FrequencyTable(f.astype(np.int64), 24).model(), symbols.size)
    except BaseException:  # constriction signals bad data with bare assertions (or a panic)
        return None
    return decoder.maybe_exhausted()


def ind_cdf(frequencies) -> list[int]:
    """§6.6.1 through the independent decoder's own table reader."""
    f = [int(x) for x in frequencies]
    packed = b"".join([len(f).to_bytes(2, "little"), bytes([24]), _pack24(f)])
    window = ind.Window(packed, 0, len(packed))
    return ind.frequency_table(window, "t", len(f), ind.DEFAULT_LIMITS)


def _pack24(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(3, "big") for v in values)
