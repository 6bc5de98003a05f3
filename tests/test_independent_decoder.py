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

import nncodec_unify as nu
from nncodec_unify.conform import canonical_bytes
from nncodec_unify.entropy import FrequencyTable

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
            "sha256": t.sha256} for t in tensors]
    assert got == entry["tensors"]


@pytest.mark.parametrize("entry", _entries("invalid"), ids=lambda e: e["file"])
def test_invalid_stream_is_rejected_with_the_expected_error(entry):
    with pytest.raises(ind.DecodeError) as caught:
        ind.decode((SUITE / "invalid" / entry["file"]).read_bytes(), entry.get("limits"))
    assert (caught.value.category, caught.value.element) == (entry["error"]["category"], entry["error"]["element"])


def test_it_agrees_with_the_reference_decoder_on_encoder_output(monkeypatch):
    """Including planes with several contexts, unmasked (a dense tensor) and masked (the dense
    blocks of a unified tensor), whose coding order (§6.5.1 step 3) differs from scan order."""
    coded = []
    coding_order = ind.coding_order

    def spy(positions, row_class, col_class, context_count):
        order = coding_order(positions, row_class, col_class, context_count)
        unmasked = len(positions) == len(row_class) * len(col_class)
        coded.append((unmasked, any(indices != sorted(indices) for indices in order)))
        return order

    monkeypatch.setattr(ind, "coding_order", spy)
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
    dense_rule = nu.TensorRule("scaled", mode=nu.CodingMode.DENSE)
    for config in (nu.EncoderConfig(qp=-40), nu.EncoderConfig(qp=-32, rules=(dense_rule,)),
                   nu.EncoderConfig(qp=-24)):
        data = nu.encode(tensors, config=config)
        reference = nu.decode_tensors(data).tensors
        independent = ind.decode(data)
        assert [t.name for t in independent] == [t.name for t in reference]
        for r, i in zip(reference, independent, strict=True):
            assert (i.dtype, i.shape) == (r.dtype_name, r.array.shape)
            assert i.sha256 == hashlib.sha256(canonical_bytes(r.array, r.dtype_name)).hexdigest(), r.name
    assert {(True, True), (False, True)} <= set(coded)


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


@pytest.mark.parametrize("minor", [0, 1, 255])
def test_it_reads_every_minor_version_of_format_2_and_no_other_major(minor):
    data = bytearray(nu.encode({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}))
    assert data[8] == 2
    data[9] = minor
    assert [t.name for t in ind.decode(bytes(data))] == ["w"]
    for major in (0, 1, 3, 255):
        data[8] = major
        with pytest.raises(ind.DecodeError) as caught:
            ind.decode(bytes(data))
        assert (caught.value.category, caught.value.element) == ("unsupported_version", "version_major")


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
