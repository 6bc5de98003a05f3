"""Format 4.0 integrity (spec §5.8, §7.4): content digests, the model digest and STREAM_END.

Streams are edited here as a hostile or buggy writer would: with every CRC recomputed, and
with STREAM_END rewritten too (``_reseal``), so that each check is shown to be the one that
catches its edit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib

import numpy as np
import pytest

import nncodec_unify as nu
from nncodec_unify.cli import EXIT_BAD_INPUT, EXIT_FAILURES, EXIT_OK, main
from nncodec_unify.codec.decoder import describe, iter_decoded
from nncodec_unify.codec.format import DIGEST_SIZE, FILE_HEADER_SIZE, UNIT_CRC_SIZE, UNIT_HEADER_SIZE, UnitType
from nncodec_unify.codec.integrity import model_digest
from nncodec_unify.codec.syntax import AttachedFile

from fuzzing import reseal, units

RNG = np.random.default_rng(12)
MODEL = {
    "w": RNG.laplace(0, 0.05, size=(24, 40)).astype(np.float32),
    "b": RNG.normal(size=16).astype(np.float16),
    "n": np.arange(-6, 6, dtype=np.int32),
    "mask": np.array([True, False, True]),
    "scalar": np.float64(2.5),
    "empty": np.zeros((0, 3), np.float32),
}


def _units(data: bytes) -> list[tuple[int, int, bytes]]:
    """(unit_type, unit_flags, payload) of every unit."""
    found, pos = [], FILE_HEADER_SIZE
    while pos < len(data):
        length = int.from_bytes(data[pos + 2:pos + 6], "little")
        found.append((data[pos], data[pos + 1], data[pos + UNIT_HEADER_SIZE:pos + UNIT_HEADER_SIZE + length]))
        pos += UNIT_HEADER_SIZE + length + UNIT_CRC_SIZE
    return found


def _frame(units: list[tuple[int, int, bytes]], header: bytes) -> bytes:
    out = bytearray(header)
    for unit_type, flags, payload in units:
        framed = bytes((unit_type, flags)) + len(payload).to_bytes(4, "little") + payload
        out += framed + zlib.crc32(framed).to_bytes(4, "little")
    return bytes(out)


def _reseal(units: list[tuple[int, int, bytes]], header: bytes) -> bytes:
    """Frame ``units`` (without a STREAM_END) with correct CRCs and a correct STREAM_END
    (:func:`fuzzing.reseal`): only the content digests can then catch an edit."""
    return reseal(_frame(units + [(UnitType.STREAM_END, 0, bytes(4 + 2 * DIGEST_SIZE))], header))


@pytest.fixture(scope="module")
def stream() -> bytes:
    return nu.encode(MODEL)


def _split(data: bytes) -> tuple[bytes, list]:
    units = _units(data)
    assert units[-1][0] == UnitType.STREAM_END
    return data[:FILE_HEADER_SIZE], units[:-1]


def test_default_streams_are_4_0_with_a_digest_per_tensor_that_the_decoder_checks(stream):
    assert stream[8:10] == bytes((4, 0))
    model = nu.decode_tensors(stream)
    for tensor in model.tensors:
        original = MODEL[tensor.name]
        assert tensor.content_digest == hashlib.sha256(np.ascontiguousarray(tensor.array).tobytes()).digest()
        if tensor.name != "w":  # everything but the quantized matrix is lossless
            assert tensor.content_digest == hashlib.sha256(np.asarray(original).tobytes()).digest()
    assert model.model_digest == model_digest((t.name, t.dtype, t.array.shape, t.content_digest)
                                              for t in model.tensors)


def test_the_model_digest_depends_on_the_tensors_not_their_coding():
    lossless = {k: v for k, v in MODEL.items() if k != "w"}
    raw = nu.encode(lossless, config=nu.EncoderConfig(rules=(nu.TensorRule("*", mode=nu.CodingMode.RAW),)))
    coded = nu.encode(lossless)
    assert [t.coding_mode for t in describe(raw)[1]] != [t.coding_mode for t in describe(coded)[1]]
    assert nu.decode_tensors(raw).model_digest == nu.decode_tensors(coded).model_digest == nu.model_digest_of(lossless)


def test_model_digest_of_takes_torch_tensors_and_bfloat16():
    torch = pytest.importorskip("torch")
    tensors = {"a": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)}
    stream = nu.encode(tensors)
    assert nu.decode_tensors(stream).model_digest == nu.model_digest_of(tensors)
    assert nu.model_digest_of(tensors) != nu.model_digest_of({"a": tensors["a"].float(), "b": tensors["b"]})


def test_a_wrong_content_digest_names_the_tensor_and_verify_false_skips_only_that(stream):
    header, units = _split(stream)
    index = next(i for i, (t, _, p) in enumerate(units) if t == UnitType.TENSOR and p[2:3] == b"w")
    unit_type, flags, payload = units[index]
    digest_at = 2 + 1 + 2 + 4 * 2 + 1
    altered = payload[:digest_at] + bytes(b ^ 0xFF for b in payload[digest_at:digest_at + 1]) \
        + payload[digest_at + 1:]
    units[index] = (unit_type, flags, altered)
    forged = _reseal(units, header)
    with pytest.raises(nu.ChecksumError, match="tensor 'w' decodes to other values") as caught:
        nu.decode(forged)
    assert caught.value.element == "content_digest"
    assert nu.decode(forged, verify=False)["w"].tobytes() == nu.decode(stream)["w"].tobytes()


def test_a_changed_coded_value_is_caught_by_the_content_digest(stream):
    """A qp edit in the quantized tensor decodes fine, to other values: only §7.4 sees it."""
    header, units = _split(stream)
    index = next(i for i, (t, _, p) in enumerate(units) if t == UnitType.TENSOR and p[2:3] == b"w")
    unit_type, flags, payload = units[index]
    qp_at = 2 + 1 + 2 + 4 * 2 + 1 + DIGEST_SIZE
    qp = int.from_bytes(payload[qp_at:qp_at + 2], "little", signed=True)
    altered = payload[:qp_at] + (qp + 1).to_bytes(2, "little", signed=True) + payload[qp_at + 2:]
    units[index] = (unit_type, flags, altered)
    with pytest.raises(nu.ChecksumError, match="'w'"):
        nu.decode(_reseal(units, header))
    assert not np.array_equal(nu.decode(_reseal(units, header), verify=False)["w"], nu.decode(stream)["w"])


@pytest.mark.parametrize("edit", ["swap", "drop-ancillary", "duplicate-ancillary", "move-ancillary"])
def test_reordered_dropped_or_repeated_units_are_detected_with_crcs_intact(edit):
    data = nu.encode(MODEL, config=nu.EncoderConfig(), )
    header, units = _split(data)
    extra = [(200, 1, b"one"), (201, 1, b"two")]
    units = units[:2] + extra + units[2:]
    sealed = _reseal(units, header)
    assert nu.decode_tensors(sealed).model_digest == nu.decode_tensors(data).model_digest  # skipped, counted
    end = _units(sealed)[-1]
    edited = list(units)
    if edit == "swap":  # two tensor units: every unit's CRC still right
        first, second = [i for i, u in enumerate(units) if u[0] == UnitType.TENSOR][:2]
        edited[first], edited[second] = edited[second], edited[first]
        expected = (nu.ChecksumError, "model_digest")
    elif edit == "drop-ancillary":
        edited.remove(extra[0])
        expected = (nu.BitstreamError, "unit_count")
    elif edit == "duplicate-ancillary":
        edited.insert(2, extra[0])
        expected = (nu.BitstreamError, "unit_count")
    else:
        edited[2], edited[3] = edited[3], edited[2]
        expected = (nu.ChecksumError, "stream_digest")
    forged = _frame(edited + [end], header)
    with pytest.raises(expected[0]) as caught:
        nu.decode(forged)
    assert caught.value.element == expected[1]
    with pytest.raises(expected[0]):  # describe (info, and the streaming decoders) checks it too
        describe(forged)


def test_a_dropped_tensor_unit_or_stream_end_is_truncation(stream):
    header, units = _split(stream)
    end = _units(stream)[-1]
    dropped = [u for i, u in enumerate(units) if i != 1] + [end]
    with pytest.raises(nu.TruncatedError) as caught:
        nu.decode(_frame(dropped, header))
    assert caught.value.element == "tensor_count"
    with pytest.raises(nu.TruncatedError) as caught:
        nu.decode(_frame(units, header))
    assert caught.value.element == "stream_end"


def test_nothing_may_follow_stream_end_and_it_must_be_critical(stream):
    for tail in (b"\x00", stream[-(UNIT_HEADER_SIZE + 68 + UNIT_CRC_SIZE):]):
        with pytest.raises(nu.BitstreamError) as caught:
            nu.decode(stream + tail)
        assert caught.value.element == "stream_end"
    header, units = _split(stream)
    end = _units(stream)[-1]
    with pytest.raises(nu.BitstreamError) as caught:
        nu.decode(_frame(units + [(end[0], 1, end[2])], header))
    assert caught.value.element == "unit_flags"
    with pytest.raises(nu.BitstreamError) as caught:
        nu.decode(_frame(units + [(end[0], 0, end[2] + b"\x00")], header))
    assert caught.value.element == "stream_end"


def test_an_appended_or_dropped_word_is_caught_by_the_stream_digest():
    """§6.9.4 is not exact: with the CRC recomputed, a word appended to a plane that the decoder
    read one word past its end decodes identically, as does a plane whose final zero word is
    dropped. In format 4.0 the stream digest catches both (and a 3.0 stream shows the gap)."""
    from fuzzing import field_map, fix_crcs

    values = {"w": RNG.laplace(0, 0.05, size=(64, 64)).astype(np.float32)}
    config = nu.EncoderConfig(rules=(nu.TensorRule("w", mode=nu.CodingMode.DENSE),))
    gaps = 0
    for digests in (True, False):
        data = nu.encode(values, config=dataclasses.replace(config, digests=digests))
        original = nu.decode(data)["w"].tobytes()
        for field in [f for f in field_map(data) if f.element == "dense_levels.word_count"]:
            count = int.from_bytes(data[field.offset:field.offset + 4], "little")
            words_end = field.offset + 4 + 4 * count
            edits = [(count + 1, data[:words_end] + bytes(4) + data[words_end:])]  # one zero word appended
            if count and data[words_end - 4:words_end] == bytes(4):  # the final zero word dropped
                edits.append((count - 1, data[:words_end - 4] + data[words_end:]))
            for new_count, edited in edits:
                edited = bytearray(edited)
                edited[field.offset:field.offset + 4] = new_count.to_bytes(4, "little")
                unit = max(offset for offset, _ in units(data) if offset < field.offset)
                length = int.from_bytes(edited[unit + 2:unit + 6], "little") + 4 * (new_count - count)
                edited[unit + 2:unit + 6] = length.to_bytes(4, "little")
                edited = fix_crcs(bytes(edited))
                if digests:
                    with pytest.raises(nu.BitstreamError) as caught:
                        nu.decode(edited)
                    assert caught.value.element in ("stream_digest", "dense_levels.word_count")
                else:
                    try:
                        gaps += nu.decode(edited)["w"].tobytes() == original
                    except nu.BitstreamError:
                        pass
    assert gaps > 0  # without digests some such edit decodes: the gap format 4.0 closes


def test_iter_decoded_checks_every_tensor_before_yielding_it(stream):
    header, units = _split(stream)
    index = next(i for i, (t, _, p) in enumerate(units) if t == UnitType.TENSOR and p[2:3] == b"b")
    unit_type, flags, payload = units[index]
    digest_at = 2 + 1 + 2 + 4 + 1
    units[index] = (unit_type, flags, payload[:digest_at] + bytes(DIGEST_SIZE) + payload[digest_at + DIGEST_SIZE:])
    yielded = []
    with pytest.raises(nu.ChecksumError, match="'b'"):
        for tensor in iter_decoded(_reseal(units, header)):
            yielded.append(tensor.name)
    assert "b" not in yielded


def test_attached_files_are_covered_by_the_stream_digest():
    from nncodec_unify.codec.encoder import encode_to_file
    import io

    buffer = io.BytesIO()
    encode_to_file(MODEL, buffer, attachments=[AttachedFile("config.json", b'{"a": 1}')])
    data = buffer.getvalue()
    assert data[8:10] == bytes((4, 0))  # attached files need no minor version in 4.0
    assert nu.decode_tensors(data).files[0].content == b'{"a": 1}'
    header, units = _split(data)
    index = next(i for i, u in enumerate(units) if u[0] == UnitType.ATTACHED_FILE)
    unit_type, flags, payload = units[index]
    units[index] = (unit_type, flags, payload.replace(b'"a": 1', b'"a": 2'))
    with pytest.raises(nu.ChecksumError) as caught:
        nu.decode(_frame(units + [_units(data)[-1]], header))
    assert caught.value.element == "stream_end" or caught.value.element == "stream_digest"


def test_workers_write_the_same_digests():
    one = nu.encode_with_report(MODEL).data
    two = nu.encode_with_report(MODEL, workers=2).data
    assert one == two


def test_streams_grow_by_32_bytes_per_tensor_and_78_per_stream():
    plain = nu.encode(MODEL, config=nu.EncoderConfig(digests=False))
    assert len(nu.encode(MODEL)) == len(plain) + 32 * len(MODEL) + 78  # STREAM_END: 6 + 68 + 4


# ---------------------------------------------------------------------------------------------
# command line


def test_verify_command(tmp_path, stream, capsys):
    good = tmp_path / "m.nnu"
    good.write_bytes(stream)
    digest = nu.decode_tensors(stream).model_digest.hex()
    assert main(["verify", str(good)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "OK, format 4.0" in out and digest in out
    assert main(["verify", str(good), "--json"]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert result["model_digest"] == digest and result["digests_verified"] and result["tensors"] == len(MODEL)
    assert main(["verify", str(good), "-q", "--model-digest", digest.upper()]) == EXIT_OK
    assert capsys.readouterr().out == ""
    assert main(["verify", str(good), "--model-digest", "0" * 64]) == EXIT_FAILURES
    captured = capsys.readouterr()
    assert "expected 000" in captured.err and "OK" not in captured.out
    assert main(["verify", str(good), "--model-digest", "xyz"]) == 2


def test_verify_rejects_a_forged_stream_in_one_line_and_writes_nothing(tmp_path, stream, capsys):
    header, units = _split(stream)
    index = next(i for i, (t, _, p) in enumerate(units) if t == UnitType.TENSOR)
    unit_type, flags, payload = units[index]
    digest_at = int.from_bytes(payload[:2], "little") + 2 + 2 + 4 * payload[int.from_bytes(payload[:2], "little") + 3] + 1
    units[index] = (unit_type, flags, payload[:digest_at] + bytes(DIGEST_SIZE) + payload[digest_at + DIGEST_SIZE:])
    bad = tmp_path / "bad.nnu"
    bad.write_bytes(_reseal(units, header))
    before = set(tmp_path.iterdir())
    assert main(["verify", str(bad)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "content_digest" in err
    assert set(tmp_path.iterdir()) == before
    assert main(["decode", str(bad), str(tmp_path / "out.safetensors")]) == EXIT_BAD_INPUT
    assert not (tmp_path / "out.safetensors").exists()
    capsys.readouterr()
    assert main(["decode", str(bad), str(tmp_path / "out.safetensors"), "--no-verify"]) == EXIT_OK


def test_verify_says_when_a_stream_has_no_digests(tmp_path, capsys):
    legacy = tmp_path / "old.nnu"
    legacy.write_bytes(nu.encode(MODEL, config=nu.EncoderConfig(digests=False)))
    assert main(["verify", str(legacy)]) == EXIT_OK
    assert "carries no digests" in capsys.readouterr().out
    assert main(["verify", str(legacy), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["digests_verified"] is False


def test_encode_and_info_print_the_model_digest(tmp_path, capsys):
    from safetensors.numpy import save_file

    save_file({k: v for k, v in MODEL.items() if k not in ("scalar",)}, tmp_path / "m.safetensors")
    assert main(["encode", str(tmp_path / "m.safetensors"), str(tmp_path / "m.nnu"), "--json",
                 "--report", str(tmp_path / "r.json")]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    stream = (tmp_path / "m.nnu").read_bytes()
    assert summary["model_digest"] == nu.decode_tensors(stream).model_digest.hex()
    report = json.loads((tmp_path / "r.json").read_text())
    decoded = {t.name: t.content_digest.hex() for t in nu.decode_tensors(stream).tensors}
    assert {r["name"]: r["content_digest"] for r in report["tensor_reports"]} == decoded
    assert main(["info", str(tmp_path / "m.nnu")]) == EXIT_OK
    assert summary["model_digest"] in capsys.readouterr().out
    assert main(["encode", str(tmp_path / "m.safetensors"), str(tmp_path / "o.nnu"), "--json", "--no-digests"]) == 0
    assert json.loads(capsys.readouterr().out)["model_digest"] is None
