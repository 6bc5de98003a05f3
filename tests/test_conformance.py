"""The conformance suite: reproduced byte for byte by its generator, passed by the reference
decoder (``nncodec conform``), and consistent with spec/bitstream.md (every error condition of
§9 has a stream; every section the code cites exists; the examples match the streams)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from nncodec_unify import cli
from nncodec_unify.codec import conform

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "conformance"
SPEC = ROOT / "spec" / "bitstream.md"


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> dict[str, bytes]:
    return _load_tool("gen_conformance").build()


def _manifest(group: str) -> dict:
    return json.loads((SUITE / group / "manifest.json").read_text(encoding="utf-8"))


def test_generator_reproduces_the_committed_suite_byte_for_byte(generated):
    gen = sys.modules["gen_conformance"]
    assert gen.diff(generated, SUITE) == []


def test_the_reference_decoder_passes_every_stream():
    results = conform.check_suite(SUITE)
    failures = [r.line() for r in results if not r.passed]
    assert not failures, "\n".join(failures)
    assert len(results) == len(_manifest("valid")["streams"]) + len(_manifest("invalid")["streams"])


def test_nncodec_conform_prints_one_line_per_stream_and_exits_zero(capsys):
    assert cli.main(["conform", str(SUITE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    streams = len(_manifest("valid")["streams"]) + len(_manifest("invalid")["streams"])
    assert len(lines) == streams + 1
    assert all(line.startswith("PASS ") for line in lines[:-1])
    assert lines[-1] == f"{streams} passed, 0 failed ({streams} streams)"


def test_nncodec_conform_accepts_one_group(capsys):
    assert cli.main(["conform", str(SUITE / "invalid")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"({len(_manifest('invalid')['streams'])} streams)")


def test_nncodec_conform_reports_every_kind_of_failure(tmp_path, capsys):
    suite = tmp_path / "suite"
    shutil.copytree(SUITE, suite)
    valid = json.loads((suite / "valid" / "manifest.json").read_text(encoding="utf-8"))
    valid["streams"][1]["tensors"][0]["sha256"] = "0" * 64  # wrong hash
    valid["streams"][2]["tensors"][0]["shape"] = [4]  # wrong shape
    (suite / "valid" / "manifest.json").write_text(json.dumps(valid), encoding="utf-8")
    invalid = json.loads((suite / "invalid" / "manifest.json").read_text(encoding="utf-8"))
    invalid["streams"][0]["error"]["element"] = "unit_crc"  # wrong element
    (suite / "invalid" / "manifest.json").write_text(json.dumps(invalid), encoding="utf-8")
    shutil.copy(suite / "valid" / valid["streams"][0]["file"], suite / "invalid" / "999-accepted.nnu")
    (suite / "valid" / valid["streams"][3]["file"]).unlink()  # listed but missing
    assert cli.main(["conform", str(suite)]) == cli.EXIT_FAILURES
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 5, out
    assert out.splitlines()[-1].endswith(f"5 failed ({len(valid['streams']) + len(invalid['streams']) + 1} streams)")
    assert "sha256 differ" in failed[0] and "shape differ" in failed[1] and "missing" in failed[2]
    assert "expected malformed at unit_crc" in out and "not listed in the manifest" in out


def test_nncodec_conform_on_a_missing_directory_is_an_io_error(tmp_path, capsys):
    assert cli.main(["conform", str(tmp_path / "absent")]) == cli.EXIT_IO
    assert "no such directory" in capsys.readouterr().err


def test_file_names_are_numbered_in_manifest_order():
    for group in ("valid", "invalid"):
        names = [e["file"] for e in _manifest(group)["streams"]]
        assert names == [f"{k:03d}-{n[4:]}" for k, n in enumerate(names, 1)]
        assert sorted(p.name for p in (SUITE / group).glob("*.nnu")) == names


def test_manifests_name_the_format_and_revision_of_the_spec():
    text = SPEC.read_text(encoding="utf-8")
    version = re.search(r"^\| Format version \| \*\*(\d+\.\d+)\*\*", text, flags=re.M).group(1)
    revision = re.search(r"^\| Document revision \| ([\d.]+) \|", text, flags=re.M).group(1)
    for group in ("valid", "invalid"):
        manifest = _manifest(group)
        assert (manifest["format_version"], manifest["spec_revision"]) == (version, revision)
    major = int(version.split(".")[0])
    majors = set()
    for entry in _manifest("valid")["streams"]:  # 5.x decoders read 2.x, 3.x and 4.x streams too (§10)
        majors.add((SUITE / "valid" / entry["file"]).read_bytes()[8])
    assert majors == set(range(2, major + 1))


def test_valid_streams_cover_every_dtype_mode_and_block_kind():
    valid = _manifest("valid")["streams"]
    raw_dtypes = {t["dtype"] for e in valid for t in e["tensors"] if t["coding_mode"] == "raw"}
    assert raw_dtypes == {"float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64",
                          "uint8", "bool", "uint16", "uint32", "uint64"}
    quantized = {(t["dtype"], t["coding_mode"]) for e in valid for t in e["tensors"]}
    for dtype in ("float32", "float16", "bfloat16", "float64"):
        assert (dtype, "dense") in quantized
    shapes = [t["shape"] for e in valid for t in e["tensors"]]
    assert [] in shapes and any(0 in s for s in shapes) and any(len(s) == 4 for s in shapes)
    assert any(len(s) == 8 for s in shapes) and any(4294967295 in s for s in shapes)


def test_valid_streams_cover_every_integer_dtype_in_both_coded_modes(generated):
    """§5.2, §7.1.1: DENSE and UNIFIED for every integer dtype (never bool) at qp 0, with the extreme
    levels the dtype holds, UNIFIED and PRUNED blocks, column offsets, qp_density other than 2, and
    scalar and empty shapes; the invalid streams cover qp, levels and bool."""
    gen = sys.modules["gen_conformance"]
    tensors = [t for case in gen.valid_cases() for t in case.tensors
               if t.dtype in gen.INTEGER_DTYPES and t.mode != gen.RAW]
    assert {(t.dtype, t.mode) for t in tensors} == {(d, m) for d in gen.INTEGER_DTYPES for m in (gen.DENSE, gen.UNIFIED)}
    assert all(t.qp == 0 for t in tensors)
    for dtype in gen.INTEGER_DTYPES:
        for mode in (gen.DENSE, gen.UNIFIED):
            levels = {v for t in tensors if (t.dtype, t.mode) == (dtype, mode) for v in t.levels}
            assert set(gen.reachable(dtype)) <= levels, (dtype, mode)
    kinds = [{k for row in t.kinds for k in row} for t in tensors if t.mode == gen.UNIFIED and t.kinds]
    assert any({gen.K_UNIFIED, gen.K_PRUNED, gen.K_DENSE} <= k for k in kinds)
    assert {t.mode for t in tensors if t.offsets} == {gen.DENSE, gen.UNIFIED}
    assert {t.density for t in tensors} >= {0, 1, 2, 3, 4}
    assert any(t.shape == () for t in tensors) and any(0 in t.shape for t in tensors)
    valid = _manifest("valid")["streams"]
    assert not [t for e in valid for t in e["tensors"] if t["dtype"] == "bool" and t["coding_mode"] != "raw"]
    errors = {(e["error"]["category"], e["error"]["element"]) for e in _manifest("invalid")["streams"]}
    assert {("malformed", "qp"), ("malformed", "levels"), ("malformed", "coding_mode")} <= errors


def test_valid_streams_cover_column_offsets(generated):
    """§6.10: offset_mode 1 in DENSE and UNIFIED payloads (all-dense and with unified and pruned
    blocks), for every float dtype, with a single column and with classes in column_offsets."""
    gen = sys.modules["gen_conformance"]
    tensors = [t for case in gen.valid_cases() for t in case.tensors if t.offsets is not None]
    covered = {(t.dtype, t.mode) for t in tensors}
    assert {("float32", gen.DENSE), ("float32", gen.UNIFIED), ("float16", gen.DENSE), ("bfloat16", gen.UNIFIED),
            ("float64", gen.DENSE)} <= covered
    unified = [t for t in tensors if t.mode == gen.UNIFIED and t.kinds]
    assert any(all(k == gen.K_DENSE for row in t.kinds for k in row) for t in unified)
    assert any({gen.K_UNIFIED, gen.K_PRUNED, gen.K_DENSE} <= {k for row in t.kinds for k in row} for t in unified)
    assert any(len(t.offsets) == 1 for t in tensors)
    assert any((t.planes.get("column_offsets") or gen.PlaneOptions()).col_classes for t in tensors)
    extremes = {o for t in tensors for o in t.offsets}
    assert {-(1 << 30), (1 << 30) - 1} <= extremes and any(o < 0 for o in extremes) and 0 in extremes
    errors = {(e["error"]["category"], e["error"]["element"]) for e in _manifest("invalid")["streams"]}
    assert {("malformed", "offset_mode"), ("truncated", "offset_mode"), ("malformed", "column_offsets"),
            ("malformed", "column_offsets.value_count")} <= errors


def test_every_dense_plane_follows_an_offset_mode(generated):
    """§5.5, §5.6: dense_offsets comes right before every dense_levels plane of the valid streams."""
    gen = sys.modules["gen_conformance"]
    for case in gen.valid_cases():
        names = [f.element for f in case.layout.fields]
        for k, name in enumerate(names):
            if name == "dense_levels.value_count":
                before = names[k - 1]
                assert before == "offset_mode" or before.startswith("column_offsets."), (case.slug, before)
        assert names.count("offset_mode") == names.count("dense_levels.value_count"), case.slug


def _section_numbers(text: str) -> set[str]:
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", text, flags=re.M))


def _invalid_errors() -> set[tuple[str, str, int | None]]:
    """(category, element, version_major) of every invalid stream (None: shorter than 9 bytes)."""
    errors = set()
    for e in _manifest("invalid")["streams"]:
        data = (SUITE / "invalid" / e["file"]).read_bytes()
        errors.add((e["error"]["category"], e["error"]["element"], data[8] if len(data) > 8 else None))
    return errors


def test_every_error_condition_of_the_spec_has_an_invalid_stream():
    """Each row of §9 has an invalid stream with its category and element; a row marked for some
    versions, "(5.x)", "(4.x, 5.x)" or "(3.1, 4.x, 5.x)", has one in a stream of each of those major
    versions."""
    text = SPEC.read_text(encoding="utf-8")
    table = text[text.index("## 9. Error conditions"):text.index("## 10. Versioning")]
    errors = _invalid_errors()
    missing = []
    rows = re.findall(r"^\| (.+?) \| `(\w+)` \| (.+?) \| [\d., ]+ \|$", table, flags=re.M)
    assert len(rows) > 60 and sum(1 for r in rows if r[0].startswith("(4.x, 5.x)")) >= 8
    assert sum(1 for r in rows if r[0].startswith("(5.x)")) >= 3
    for row in rows:
        condition, category, elements = row
        tag = re.match(r"\(([\d.x, ]+)\) ", condition)
        majors = {int(v.split(".")[0]) for v in tag.group(1).split(", ")} if tag else {None}
        for element in re.findall(r"`([\w.\[\]]+)`", elements):
            prefix, _, name = element.rpartition(".")
            for major in majors:
                # P., T. and S. stand for a plane, table or sign section: any instance covers the row
                if not any(c == category and (major is None or m == major)
                           and (e == element or (prefix in ("P", "T", "S") and e.endswith("." + name)))
                           for c, e, m in errors):
                    missing.append(f"{condition}: {category} at {element}" + (f" in {major}.x" if major else ""))
    assert not missing, "\n".join(missing)


def test_every_section_cited_in_the_code_exists_in_the_spec():
    sections = _section_numbers(SPEC.read_text(encoding="utf-8"))
    cited = set()
    for path in (ROOT / "nncodec_unify").glob("*.py"):
        cited |= {m.rstrip(".") for m in re.findall(r"§(\d+(?:\.\d+)*)", path.read_text(encoding="utf-8"))}
    assert cited - sections == set()


def test_every_section_cited_by_the_suite_exists_in_the_spec():
    text = SPEC.read_text(encoding="utf-8")
    sections = _section_numbers(text) | set(re.findall(r"^## (Appendix [A-Z])\.", text, flags=re.M))
    for group in ("valid", "invalid"):
        for entry in _manifest(group)["streams"]:
            assert set(entry["sections"]) <= sections, entry["file"]


def test_the_examples_walk_through_the_suites_streams_byte_for_byte():
    text = (ROOT / "spec" / "examples.md").read_text(encoding="utf-8")
    examples = re.findall(r"`conformance/(valid/[\w.-]+\.nnu)`.*?```hex\n(.*?)```", text, flags=re.S)
    assert len(examples) == 4
    for path, dump in examples:
        data = (SUITE / path).read_bytes()
        assert bytes.fromhex(re.sub(r"^\s*\w+:|\s", "", dump, flags=re.M)) == data, path
        rows = text[text.index(path):]
        offsets = [int(m) for m in re.findall(r"^\| (\d+) \| \d+ \|", rows[:rows.index("```hex")], flags=re.M)]
        sizes = [int(m) for m in re.findall(r"^\| \d+ \| (\d+) \|", rows[:rows.index("```hex")], flags=re.M)]
        assert offsets and offsets[0] == 0 and offsets[-1] + sizes[-1] == len(data)
        assert all(a + s == b for a, s, b in zip(offsets, sizes, offsets[1:], strict=False)), path


# ---------------------------------------------------------------------------------------------
# format 4.0 (§5.2 content_digest, §5.8 STREAM_END): the stored digests, read here from the bytes


DTYPE_CODES = {"float32": 1, "float16": 2, "bfloat16": 3, "float64": 4, "int8": 5, "int16": 6, "int32": 7,
               "int64": 8, "uint8": 9, "bool": 10, "uint16": 11, "uint32": 12, "uint64": 13}


def _units(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(offset, unit_type, unit_flags, payload) of every unit (§4.2), CRCs checked."""
    import zlib

    units, at = [], 12
    while at < len(data):
        length = int.from_bytes(data[at + 2:at + 6], "little")
        end = at + 6 + length
        assert int.from_bytes(data[end:end + 4], "little") == zlib.crc32(data[at:end])
        units.append((at, data[at], data[at + 1], data[at + 6:end]))
        at = end + 4
    return units


def _stored_digest(payload: bytes) -> tuple[bytes, bytes]:
    """A 4.x TENSOR payload's tensor_record (§5.8) and content_digest (§5.2)."""
    records, digest = _stored_records(payload, 4)
    return records[0], digest


def _stored_records(payload: bytes, major: int) -> tuple[list[bytes], bytes]:
    """A 4.x or 5.x TENSOR payload's tensor_records (§5.8: its own, then in 5.x one per alias
    name, the alias_name_length and alias_name in place of name_length and name) and its
    content_digest (§5.2)."""
    name_length = int.from_bytes(payload[:2], "little")
    ndim = payload[3 + name_length]
    mode_at = 4 + name_length + 4 * ndim
    digest = payload[mode_at + 1:mode_at + 33]
    rest = payload[2 + name_length:mode_at] + digest
    names, at = [payload[:2 + name_length]], mode_at + 33
    if major >= 5:
        for _ in range(int.from_bytes(payload[at:at + 2], "little")):
            length = int.from_bytes(payload[at + 2:at + 4], "little")
            names.append(payload[at + 2:at + 4 + length])
            at += 2 + length
    return [name + rest for name in names], digest


def _record_of(entry: dict) -> bytes:
    """§5.8 tensor_record from a manifest entry alone."""
    name = entry["name"].encode("utf-8")
    return (len(name).to_bytes(2, "little") + name + bytes([DTYPE_CODES[entry["dtype"]], len(entry["shape"])])
            + b"".join(d.to_bytes(4, "little") for d in entry["shape"]) + bytes.fromhex(entry["sha256"]))


def _valid_4x(major: int = 4) -> list[tuple[dict, bytes]]:
    streams = [(e, (SUITE / "valid" / e["file"]).read_bytes()) for e in _manifest("valid")["streams"]]
    return [(e, d) for e, d in streams if d[8] == major]


def test_every_4_0_valid_stream_stores_the_manifests_digests():
    """Each stored content_digest is the manifest's sha256 of that tensor (§5.2, §7.4); the model
    digest follows from the manifest alone, the stream digest and unit_count from the bytes (§5.8)."""
    streams = _valid_4x()
    assert len(streams) >= 10 and any(not e["tensors"] for e, _ in streams)
    for entry, data in streams:
        units = _units(data)
        tensors = [u for u in units if u[1] == 2]
        assert [_stored_digest(u[3])[1].hex() for u in tensors] == [t["sha256"] for t in entry["tensors"]], \
            entry["file"]
        offset, unit_type, flags, payload = units[-1]
        assert (unit_type, flags, len(payload)) == (4, 0, 68), entry["file"]
        assert int.from_bytes(payload[:4], "little") == len(units) - 1, entry["file"]
        model = hashlib.sha256(b"".join(_record_of(t) for t in entry["tensors"])).digest()
        assert model == hashlib.sha256(b"".join(_stored_digest(u[3])[0] for u in tensors)).digest()
        assert payload[4:36] == model, entry["file"]
        assert payload[36:68] == hashlib.sha256(data[:offset]).digest(), entry["file"]


def test_the_model_digest_does_not_depend_on_the_coding_modes():
    """§5.8 (informative): two streams of the same tensors, coded differently, share a model digest."""
    pair = {e["file"][4:]: (e, d) for e, d in _valid_4x() if "model-digest" in e["file"]}
    (raw, raw_data), (coded, coded_data) = pair["v4-model-digest-raw.nnu"], pair["v4-model-digest-coded.nnu"]
    assert {t["coding_mode"] for t in raw["tensors"]} == {"raw"}
    assert "raw" not in {t["coding_mode"] for t in coded["tensors"]}
    assert raw_data[-68:-36] == coded_data[-68:-36] and raw_data[-36:-4] != coded_data[-36:-4]
    assert raw_data[-68:-36] == hashlib.sha256(b"".join(_record_of(t) for t in coded["tensors"])).digest()


def test_the_empty_4_0_model_has_the_model_digest_of_no_bytes():
    entry, data = next((e, d) for e, d in _valid_4x() if not e["tensors"])
    assert data[-68:-36].hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# ---------------------------------------------------------------------------------------------
# format 5.0 (§5.2 alias names): a record per presented name in the model digest


def test_every_5_0_valid_stream_stores_the_manifests_digests_and_aliases():
    """The manifest lists every presented name (§4.3): each tensor, then its alias names in the
    order stored, with the tensor's dtype, shape and sha256; the model digest follows from the
    manifest alone, a record per name (§5.8), and from the stored records alike."""
    streams = _valid_4x(5)
    assert len(streams) >= 6 and any(t.get("alias_of") for e, _ in streams for t in e["tensors"])
    for entry, data in streams:
        units = _units(data)
        stored = [_stored_records(u[3], 5) for u in units if u[1] == 2]
        tensors = [t for t in entry["tensors"] if "alias_of" not in t]
        assert [digest.hex() for _, digest in stored] == [t["sha256"] for t in tensors], entry["file"]
        names = [record[2:2 + int.from_bytes(record[:2], "little")].decode() for records, _ in stored
                 for record in records]
        assert names == [t["name"] for t in entry["tensors"]], entry["file"]
        for t in entry["tensors"]:
            if "alias_of" in t:
                target = next(u for u in entry["tensors"] if u["name"] == t["alias_of"])
                assert {**target, "name": t["name"], "alias_of": t["alias_of"]} == t, entry["file"]
        offset, unit_type, flags, payload = units[-1]
        assert (unit_type, flags, len(payload)) == (4, 0, 68), entry["file"]
        model = hashlib.sha256(b"".join(_record_of(t) for t in entry["tensors"])).digest()
        assert model == hashlib.sha256(b"".join(r for records, _ in stored for r in records)).digest()
        assert payload[4:36] == model, entry["file"]
        assert payload[36:68] == hashlib.sha256(data[:offset]).digest(), entry["file"]


def test_tied_weights_stored_once_have_the_model_digest_of_a_4_0_stream_storing_them_per_name():
    """§5.8: a 5.x stream that stores tied weights once has the model digest of a stream that
    stores them under each name in the same order."""
    streams = {e["file"][4:]: (e, d) for e, d in _valid_4x(5) + _valid_4x(4)}
    (tied, tied_data), (untied, untied_data) = streams["v5-model-digest-tied.nnu"], streams["v5-model-digest-as-4-0.nnu"]
    assert (tied_data[8], untied_data[8]) == (5, 4) and len(tied_data) < len(untied_data)
    assert [t["name"] for t in tied["tensors"]] == [t["name"] for t in untied["tensors"]]
    assert tied_data[-68:-36] == untied_data[-68:-36]


def test_both_decoders_must_reproduce_the_listed_attached_files(tmp_path):
    """The valid manifest lists each stream's attached files (revision 5.0.2): a path, a size or
    a content hash that differs, a file left out or one too many fails the stream."""
    independent = _load_tool("independent_decoder")
    manifest = _manifest("valid")
    with_files = [entry for entry in manifest["streams"] if entry.get("attached_files")]
    assert len(with_files) >= 4 and any(len(e["attached_files"]) >= 3 for e in with_files)
    entry = with_files[0]
    data = (SUITE / "valid" / entry["file"]).read_bytes()
    assert conform.check_stream(data, entry, "valid").passed
    assert independent.check_entry(SUITE / "valid", entry) is None
    first = entry["attached_files"][0]
    for changed in ({**first, "path": first["path"] + "x"}, {**first, "bytes": first["bytes"] + 1},
                    {**first, "sha256": "0" * 64}):
        wrong = {**entry, "attached_files": [changed] + entry["attached_files"][1:]}
        assert not conform.check_stream(data, wrong, "valid").passed
        assert independent.check_entry(SUITE / "valid", wrong) is not None
    for files in (entry["attached_files"][1:], entry["attached_files"] + [first], []):
        wrong = {**entry, "attached_files": files}
        assert not conform.check_stream(data, wrong, "valid").passed
        assert "attached files" in independent.check_entry(SUITE / "valid", wrong)
    # a 3.0 stream's type 3 units are unknown ancillary units: no attached file is listed
    skipped = [e for e in manifest["streams"] if e["file"].endswith("type-3-ancillary-before-3-1.nnu")]
    assert len(skipped) == 1 and "attached_files" not in skipped[0]
    skipped_data = (SUITE / "valid" / skipped[0]["file"]).read_bytes()
    assert skipped_data[8:10] == bytes((3, 0)) and b"config.json" in skipped_data
    assert conform.check_stream(skipped_data, skipped[0], "valid").passed
    assert not conform.check_stream(skipped_data, {**skipped[0], "attached_files": [first]}, "valid").passed
    bad = {**manifest, "streams": [{**entry, "attached_files": [{"path": 1}]}]}
    (tmp_path / "manifest.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(conform.ManifestError, match="attached_files"):
        conform.read_manifest(tmp_path / "manifest.json")
