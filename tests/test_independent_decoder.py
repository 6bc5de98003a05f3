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


def test_it_agrees_with_the_reference_decoder_on_encoder_output():
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
    for qp in (-40, -24):
        data = nu.encode(tensors, config=nu.EncoderConfig(qp=qp))
        reference = nu.decode_tensors(data).tensors
        independent = ind.decode(data)
        assert [t.name for t in independent] == [t.name for t in reference]
        for r, i in zip(reference, independent, strict=True):
            assert (i.dtype, i.shape) == (r.dtype_name, r.array.shape)
            assert i.sha256 == hashlib.sha256(canonical_bytes(r.array, r.dtype_name)).hexdigest(), r.name


def test_crc32_is_zlibs():
    assert ind.crc32(b"123456789") == 0xCBF43926
    assert ind.crc32(b"") == 0
    data = bytes(range(256)) * 3
    assert ind.crc32(data) == zlib.crc32(data)


def test_range_decoder_inverts_constriction_and_its_end_check_counts_every_word():
    """§6.6.1 and §6.9 against constriction 0.5.0 itself: random tables, random symbols."""
    rng = np.random.default_rng(11)
    extras = set()
    for _ in range(300):
        groups = []
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(2, 30))
            bits = int(rng.integers(1, 25))
            f = rng.integers(0, 1 << bits, size=n)
            f[int(rng.integers(n))] |= 1
            p = f / f.sum()
            groups.append((rng.choice(n, size=int(rng.integers(0, 80)), p=p).astype(np.int32), f))
        encoder = constriction.stream.queue.RangeEncoder()
        for symbols, f in groups:
            if symbols.size:
                encoder.encode(symbols, FrequencyTable(f.astype(np.int64), 24).model())
        words = [int(w) for w in encoder.get_compressed()]
        decoder = ind.RangeDecoder(words, "p")
        for symbols, f in groups:
            assert decoder.symbols(symbols.size, ind_cdf(f)) == symbols.tolist()
        decoder.end_check()  # raises unless word_count is exactly what §6.9.4 requires
        if decoder.initialised:
            extras.add(len(words) - decoder.reads + 1)
        for wrong in (words + [0], words[:-1]):
            if not words:
                continue
            # A surplus or a missing word never yields the same symbols: the stream is rejected, or
            # (rarely, without its last word) it is a different valid stream of other symbols.
            probe = ind.RangeDecoder(wrong, "p")
            try:
                decoded = [probe.symbols(symbols.size, ind_cdf(f)) for symbols, f in groups]
                probe.end_check()
            except ind.DecodeError as exc:
                assert exc.category == "malformed" and exc.element in ("p.words", "p.word_count")
            else:
                assert len(wrong) < len(words) and decoded != [symbols.tolist() for symbols, _ in groups]
    assert extras <= {0, 1}


def ind_cdf(frequencies) -> list[int]:
    """§6.6.1 through the independent decoder's own table reader."""
    f = [int(x) for x in frequencies]
    packed = b"".join([len(f).to_bytes(2, "little"), bytes([24]), _pack24(f)])
    window = ind.Window(packed, 0, len(packed))
    return ind.frequency_table(window, "t", len(f), ind.DEFAULT_LIMITS)


def _pack24(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(3, "big") for v in values)
