"""Where a stream's bytes go (codec/layout.py, ``nncodec info --bytes``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nncodec_unify as nu
from nncodec_unify import CodingMode, EncoderConfig, TensorRule
from nncodec_unify.cli import EXIT_BAD_INPUT, EXIT_OK, main
from nncodec_unify.codec.decoder import describe
from nncodec_unify.codec.errors import BitstreamError, ChecksumError
from nncodec_unify.codec.format import DTYPE_ITEMSIZE, Limits
from nncodec_unify.codec.layout import CATEGORIES, OVERHEAD_CATEGORIES, category_of, stream_layout

SUITE = Path(__file__).resolve().parent.parent / "conformance" / "valid"


def _model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    weights = rng.laplace(0, 0.05, size=(32, 48)).astype(np.float32)
    weights[:16, :16] = 0  # pruned blocks
    return {"w": weights, "b": rng.normal(0, 0.1, size=32).astype(np.float32),
            "steps": np.array([3, -1, 7], dtype=np.int64)}


def _expected(data: bytes, limits: Limits) -> dict[str, int]:
    """Some categories' bytes computed from the spec and describe(), independently of layout.py."""
    files: list = []
    header, infos = describe(data, limits=limits, files=files)
    stored = [t for t in infos if t.alias_of is None]
    aliases = {t.name: [a.name for a in infos if a.alias_of == t.name] for t in stored}
    major = header.version_major
    expected = {
        # §5.2: name_length, name, dtype, ndim, dims, coding_mode; (5.x) alias_count and each alias
        "tensor headers": sum(2 + len(t.name.encode()) + 1 + 1 + 4 * len(t.shape) + 1 for t in stored)
        + (sum(2 + sum(2 + len(a.encode()) for a in aliases[t.name]) for t in stored) if major >= 5 else 0),
        # §5.2 content_digest per tensor unit, §5.8 model and stream digests
        "digests": 32 * len(stored) + 64 if major >= 4 else 0,
        "RAW values": sum(int(np.prod(t.shape, dtype=np.int64)) * DTYPE_ITEMSIZE[t.dtype]
                          for t in stored if t.coding_mode == CodingMode.RAW),
        "attached files": sum(2 + len(f.path.encode()) + len(f.content) for f in files),
    }
    return expected


def test_every_valid_conformance_stream_is_accounted_to_the_byte():
    manifest = json.loads((SUITE / "manifest.json").read_text())
    for entry in manifest["streams"]:
        data = (SUITE / entry["file"]).read_bytes()
        limits = Limits(**entry.get("limits", {}))
        layout = stream_layout(data, limits=limits)
        assert sum(layout.bytes.values()) == len(data)
        for category, count in _expected(data, limits).items():
            assert layout.bytes.get(category, 0) == count, (entry["file"], category)
        stored = [t for t in entry["tensors"] if "alias_of" not in t]  # an alias has no unit of its own
        assert [t.name for t in layout.tensors] == [t["name"] for t in stored], entry["file"]
        # the tensor units hold every byte of a tensor category (the rest is in other units)
        for category in ("tensor headers", "coding parameters", "plane fields", "frequency tables", "sign bits",
                         "dense levels", "block map", "RAW values"):
            assert sum(t.bytes.get(category, 0) for t in layout.tensors) == layout.bytes.get(category, 0)


def test_categories_of_a_coded_stream_match_its_syntax():
    values = _model(np.random.default_rng(1))
    data = nu.encode(values, config=EncoderConfig(rules=(TensorRule("steps", mode=CodingMode.RAW),)))
    layout = stream_layout(data)
    # 4.0: a content digest per tensor, and STREAM_END's model and stream digests
    assert layout.bytes["digests"] == 32 * 3 + 64
    assert layout.bytes["RAW values"] == 3 * 8
    assert layout.bytes["sign bits"] > 0 and layout.bytes["dense levels"] > 0 and layout.bytes["block map"] > 0
    # file header 12, six bytes of header and a CRC per unit (model header, 3 tensors, STREAM_END),
    # the model header's tensor_count and STREAM_END's unit_count
    assert layout.bytes["container"] == 12 + 10 * 5 + 4 + 4
    by_name = {t.name: t.bytes for t in layout.tensors}
    # name_length, "steps", dtype, ndim, one dim, coding_mode (4.0 has no alias_count)
    assert by_name["steps"] == {"container": 10, "tensor headers": 2 + 5 + 1 + 1 + 4 + 1, "digests": 32,
                                "RAW values": 24}
    # the tensors' units and the rest (file header, model header and STREAM_END units) make the stream
    rest = 12 + (10 + 4) + (10 + 4 + 64)
    assert sum(sum(t.bytes.values()) for t in layout.tensors) + rest == len(data)


def test_a_stream_without_digests_has_none_and_an_unknown_ancillary_unit_is_counted():
    data = nu.encode(_model(np.random.default_rng(2)), config=EncoderConfig(digests=False, dependent=False))
    assert data[8] == 2
    layout = stream_layout(data)
    assert "digests" not in layout.bytes and sum(layout.bytes.values()) == len(data)
    with_unit = (SUITE / next(e["file"] for e in json.loads((SUITE / "manifest.json").read_text())["streams"]
                              if "unknown" in e["description"] and "ancillary" in e["description"]))
    assert stream_layout(with_unit.read_bytes()).bytes["other units"] > 0


def test_a_stream_that_does_not_verify_is_refused_with_the_decoders_error():
    data = bytearray(nu.encode(_model(np.random.default_rng(3))))
    data[-40] ^= 1  # inside STREAM_END's stream digest (its CRC recomputed would not help: the digest differs)
    with pytest.raises(BitstreamError):
        stream_layout(bytes(data))
    with pytest.raises(ChecksumError):
        stream_layout(bytes(data[:-4]) + b"\0\0\0\0")  # the last unit's CRC


def test_category_of_names_every_element_or_refuses():
    assert category_of("dense_levels.magnitude_table[1].frequencies") == "frequency tables"
    assert category_of("unified_magnitudes.words") == "unified magnitudes"
    assert category_of("unified_signs.sign_bits") == "sign bits"
    assert category_of("column_offsets.raw_byte_count") == "plane fields"
    assert category_of("content_digest") == "digests"
    with pytest.raises(ValueError):
        category_of("no_such_element")
    assert set(OVERHEAD_CATEGORIES) < set(CATEGORIES)


def test_cli_info_bytes(tmp_path, capsys):
    stream = tmp_path / "m.nnu"
    stream.write_bytes(nu.encode(_model(np.random.default_rng(4))))
    assert main(["info", str(stream), "--bytes"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "where the bytes go" in out and "sign bits" in out and "overhead (container" in out
    assert main(["info", str(stream), "--bytes", "--json"]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["layout"]["bytes"].values()) == stream.stat().st_size
    assert [t["name"] for t in summary["layout"]["tensors"]] == ["w", "b", "steps"]
    assert main(["info", str(stream), "--json"]) == EXIT_OK
    assert "layout" not in json.loads(capsys.readouterr().out)  # only when asked: it decodes the stream
    damaged = bytearray(stream.read_bytes())
    damaged[-40] ^= 1
    stream.write_bytes(bytes(damaged))
    assert main(["info", str(stream), "--bytes"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("nncodec: error:") and len(err.splitlines()) == 1
