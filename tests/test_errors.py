"""Malformed streams raise BitstreamError naming what and where (issue 2, items 4-5)."""

from __future__ import annotations

import tracemalloc
import zlib

import numpy as np
import pytest

import nncodec_unify as nu
from nncodec_unify import BitstreamError, Limits
from nncodec_unify.codec.bitio import ByteWriter
from nncodec_unify.codec.format import MAGIC, CodingMode, DType, UnitType
from nncodec_unify.codec.syntax import (
    ModelHeader,
    QuantParams,
    TensorHeader,
    write_model_header,
    write_quant_params,
    write_tensor_header,
    write_unit,
)

MODEL = {
    "w": (np.arange(60, dtype=np.float32).reshape(6, 10) - 30) / 64,
    "b": np.linspace(-1, 1, 10, dtype=np.float32),
    "i": np.arange(4, dtype=np.int32),
}


@pytest.fixture(scope="module")
def stream() -> bytes:
    return nu.encode(MODEL)


def _stream_of(units: list[tuple[int, bytes, bool]], *, version=(3, 0)) -> bytes:
    """A stream of the given units, framed with correct CRCs. Format 3.0 by default: the
    container rules tested with it are those of every version, and a 3.0 stream needs no
    digests (4.0 streams are built by :func:`_stream_v4`)."""
    writer = ByteWriter()
    writer.bytes(MAGIC)
    writer.u8(version[0])
    writer.u8(version[1])
    writer.u16(0)
    for unit_type, payload, ancillary in units:
        write_unit(writer, unit_type, payload, ancillary=ancillary)
    return writer.getvalue()


def _model_header(count: int) -> bytes:
    writer = ByteWriter()
    write_model_header(writer, ModelHeader(count))
    return writer.getvalue()


def _raw_tensor(name: str, values: np.ndarray, dtype: DType = DType.INT8) -> bytes:
    writer = ByteWriter()
    write_tensor_header(writer, TensorHeader(name, dtype, values.shape, CodingMode.RAW))
    writer.bytes(values.tobytes())
    return writer.getvalue()


def test_every_truncation_is_rejected(stream):
    for length in range(len(stream)):
        with pytest.raises(BitstreamError):
            nu.decode(stream[:length])


def test_every_flipped_byte_is_rejected(stream):
    # format 4.0: the stream digest covers the file header too, version_minor included (§5.8)
    for offset in range(len(stream)):
        corrupted = bytearray(stream)
        corrupted[offset] ^= 0x41
        with pytest.raises(BitstreamError):
            nu.decode(bytes(corrupted))


def test_every_flipped_byte_of_a_3_0_stream_is_rejected_or_harmless():
    stream = nu.encode(MODEL, config=nu.EncoderConfig(digests=False))
    assert stream[8:10] == bytes((3, 0))
    original = nu.decode(stream)
    for offset in range(len(stream)):
        corrupted = bytearray(stream)
        corrupted[offset] ^= 0x41
        if offset == 9:  # version_minor: a newer minor version is read like this one (§4.1)
            decoded = nu.decode(bytes(corrupted))
            assert all(decoded[k].tobytes() == original[k].tobytes() for k in original)
            continue
        with pytest.raises(BitstreamError):
            nu.decode(bytes(corrupted))


def test_trailing_bytes_are_rejected(stream):
    with pytest.raises(BitstreamError, match="bytes after the stream_end unit"):
        nu.decode(stream + b"\x00")
    legacy = nu.encode(MODEL, config=nu.EncoderConfig(digests=False))
    with pytest.raises(BitstreamError, match="payload_length|unit_type|trailing|remain"):
        nu.decode(legacy + b"\x00")


def test_bad_magic_says_so():
    with pytest.raises(BitstreamError, match="magic"):
        nu.decode(b"PK\x03\x04" + bytes(20))


def test_unknown_major_version_is_rejected_and_newer_minor_read():
    units = [(UnitType.MODEL_HEADER, _model_header(1), False), (UnitType.TENSOR, _raw_tensor("a", np.ones(2, np.int8)), False)]
    for major in (1, 6):  # format 1.0 streams are not read by this 2.x-5.x decoder, nor a future 6.0
        with pytest.raises(nu.UnsupportedVersionError, match=f"major version {major}"):
            nu.decode(_stream_of(units, version=(major, 0)))
    assert nu.decode(_stream_of(units, version=(2, 7)))["a"].tolist() == [1, 1]
    assert nu.decode(_stream_of(units, version=(3, 9)))["a"].tolist() == [1, 1]


def test_reserved_header_flags_are_rejected(stream):
    corrupted = bytearray(stream)
    corrupted[11] = 1
    with pytest.raises(BitstreamError, match="header_flags"):
        nu.decode(bytes(corrupted))


def test_duplicate_names_are_rejected():
    tensor = _raw_tensor("a", np.ones(2, np.int8))
    units = [(UnitType.MODEL_HEADER, _model_header(2), False), (UnitType.TENSOR, tensor, False),
             (UnitType.TENSOR, tensor, False)]
    with pytest.raises(BitstreamError, match="duplicate tensor name 'a'"):
        nu.decode(_stream_of(units))


def test_unknown_units_are_skipped_if_ancillary_and_rejected_if_critical():
    base = [(UnitType.MODEL_HEADER, _model_header(1), False), (UnitType.TENSOR, _raw_tensor("a", np.ones(2, np.int8)), False)]
    assert "a" in nu.decode(_stream_of(base + [(200, b"metadata", True)]))
    with pytest.raises(BitstreamError, match="unknown critical unit_type 200"):
        nu.decode(_stream_of(base + [(200, b"metadata", False)]))


def test_tensor_count_must_match():
    units = [(UnitType.MODEL_HEADER, _model_header(2), False), (UnitType.TENSOR, _raw_tensor("a", np.ones(2, np.int8)), False)]
    with pytest.raises(nu.TruncatedError, match="declares 2"):
        nu.decode(_stream_of(units))


def test_raw_length_must_match_the_shape():
    writer = ByteWriter()
    write_tensor_header(writer, TensorHeader("a", DType.INT32, (3,), CodingMode.RAW))
    writer.bytes(bytes(8))
    units = [(UnitType.MODEL_HEADER, _model_header(1), False), (UnitType.TENSOR, writer.getvalue(), False)]
    with pytest.raises(BitstreamError, match="raw_data"):
        nu.decode(_stream_of(units))


def test_crc_mismatch_names_the_unit_crc(stream):
    corrupted = bytearray(stream)
    corrupted[-1] ^= 1
    with pytest.raises(nu.ChecksumError, match="unit_crc"):
        nu.decode(bytes(corrupted))


def test_limits_are_checked_before_allocating():
    huge = TensorHeader("a", DType.FLOAT32, (1 << 20, 1 << 20), CodingMode.RAW)
    writer = ByteWriter()
    write_tensor_header(writer, huge)
    units = [(UnitType.MODEL_HEADER, _model_header(1), False), (UnitType.TENSOR, writer.getvalue(), False)]
    with pytest.raises(nu.LimitExceededError, match="elements"):
        nu.decode(_stream_of(units))
    small = _stream_of([(UnitType.MODEL_HEADER, _model_header(1), False),
                        (UnitType.TENSOR, _raw_tensor("abc", np.ones(100, np.int8)), False)])
    with pytest.raises(nu.LimitExceededError, match="exceed 50 bytes"):
        nu.decode(small, limits=Limits(max_total_output_bytes=50))
    with pytest.raises(nu.LimitExceededError, match="name_length"):
        nu.decode(small, limits=Limits(max_name_length=2))
    two = _stream_of([(UnitType.MODEL_HEADER, _model_header(2), False),
                      (UnitType.TENSOR, _raw_tensor("a", np.ones(1, np.int8)), False),
                      (UnitType.TENSOR, _raw_tensor("b", np.ones(1, np.int8)), False)])
    with pytest.raises(nu.LimitExceededError, match="tensor_count"):
        nu.decode(two, limits=Limits(max_tensor_count=1))


def test_errors_carry_element_and_offset(stream):
    corrupted = bytearray(stream)
    corrupted[8] = 9
    with pytest.raises(BitstreamError) as info:
        nu.decode(bytes(corrupted))
    assert info.value.element == "version_major" and info.value.offset == 8


def test_crc_covers_header_and_payload(stream):
    # the first unit starts at byte 12: type, flags, u32 length, payload, u32 crc
    length = int.from_bytes(stream[14:18], "little")
    assert int.from_bytes(stream[18 + length:22 + length], "little") == zlib.crc32(stream[12:18 + length])


def test_column_offsets_for_a_matrix_without_rows_are_rejected_before_any_allocation():
    """§6.10: a 0 x (2**32 - 1) matrix has no elements for the limits to bound, so it may not
    declare a plane of 2**32 - 1 column offsets."""
    writer = ByteWriter()
    write_tensor_header(writer, TensorHeader("empty", DType.FLOAT32, (0, 2**32 - 1), CodingMode.DENSE))
    write_quant_params(writer, QuantParams(-32, 2))
    writer.u8(1)  # offset_mode: column offsets
    writer.u32(2**32 - 1)  # column_offsets.value_count, then a constant plane: no words
    writer.bytes(bytes([0, 0, 1, 1]))
    writer.u16(1)
    writer.u32(0)
    writer.u32(0)
    units = [(UnitType.MODEL_HEADER, _model_header(1), False), (UnitType.TENSOR, writer.getvalue(), False)]
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError) as info:
            nu.decode(_stream_of(units))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.element == "offset_mode" and peak < 1 << 20


def test_integer_tensors_need_step_1_and_levels_in_their_range():
    """§6.1: qp 0 for integer dtypes; §7.1.1: levels must fit the dtype."""
    from fuzzing import field_map, fix_crcs

    data = nu.encode({"counts": np.arange(300, dtype=np.int16).reshape(10, 30) - 100})
    fields = {f.element: f for f in field_map(data)}
    as_int8 = bytearray(data)
    as_int8[fields["dtype"].offset] = DType.INT8  # levels -100..199 do not fit int8
    with pytest.raises(BitstreamError) as info:
        nu.decode(fix_crcs(bytes(as_int8)))
    assert info.value.element == "levels"
    as_uint8 = bytearray(data)
    as_uint8[fields["dtype"].offset] = DType.UINT8  # negative levels do not fit uint8
    with pytest.raises(BitstreamError, match="range of uint8"):
        nu.decode(fix_crcs(bytes(as_uint8)))
    other_step = bytearray(data)
    other_step[fields["qp"].offset] = 0xFC  # qp 252: a valid step, but not 1
    with pytest.raises(BitstreamError) as info:
        nu.decode(fix_crcs(bytes(other_step)))
    assert info.value.element == "qp"
