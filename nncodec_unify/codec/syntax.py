"""Syntax structures of the bitstream: one frozen dataclass and a read/write pair each.

Readers validate every field against the spec (and the caller's :class:`Limits`) before
anything is allocated from it, and raise :class:`BitstreamError` naming the element. Section
numbers refer to ``spec/bitstream.md``.
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np

from .bitio import ByteReader, ByteWriter, pack_fields, padding_is_zero, unpack_fields
from .entropy import FrequencyTable
from .errors import BitstreamError, ChecksumError, LimitExceededError, TruncatedError, UnsupportedVersionError
from .format import (
    DTYPE_ITEMSIZE,
    MAGIC,
    MAX_CLASS_COUNT,
    MAX_DIRECT_BITS,
    MAX_FREQUENCY_BITS,
    MAX_MAGNITUDE_EXPONENT,
    MAX_MANTISSA_BITS,
    MAX_PATH_COMPONENTS,
    MAX_QP_DENSITY,
    DIGEST_SIZE,
    INTEGRITY_MAJOR,
    ALIAS_MAJOR,
    UNIT_CRC_SIZE,
    UNIT_FLAG_ANCILLARY,
    QUANT_FLAG_DEPENDENT,
    SUPPORTED_MAJORS,
    VERSION_MAJOR,
    VERSION_MINOR,
    CodingMode,
    DType,
    Limits,
)
from .memory import read_through
from .quant import qp_is_valid

# ---------------------------------------------------------------------------------------------
# §4.1 file_header


@dataclasses.dataclass(frozen=True)
class FileHeader:
    version_major: int = VERSION_MAJOR
    version_minor: int = VERSION_MINOR


def read_file_header(reader: ByteReader) -> FileHeader:
    """§4.1: magic, version_major, version_minor, header_flags (reserved, must be zero)."""
    if reader.remaining < len(MAGIC) or reader.bytes(len(MAGIC), "magic") != MAGIC:
        raise BitstreamError("not an nncodec_unify stream (bad magic number)", element="magic", offset=0)
    major = reader.u8("version_major")
    minor = reader.u8("version_minor")
    if major not in SUPPORTED_MAJORS:
        readable = ", ".join(f"{m}.x" for m in SUPPORTED_MAJORS[:-1]) + f" and {SUPPORTED_MAJORS[-1]}.x"
        raise UnsupportedVersionError(f"major version {major} is not supported (this decoder reads {readable})",
                                      element="version_major", offset=len(MAGIC))
    flags_at = reader.offset
    flags = reader.u16("header_flags")
    if flags != 0:
        raise BitstreamError(f"reserved bits set (value {flags:#06x}, must be 0)",
                             element="header_flags", offset=flags_at)
    return FileHeader(major, minor)


def write_file_header(writer: ByteWriter, header: FileHeader = FileHeader()) -> None:
    writer.bytes(MAGIC)
    writer.u8(header.version_major)
    writer.u8(header.version_minor)
    writer.u16(0)


# ---------------------------------------------------------------------------------------------
# §4.2 unit


@dataclasses.dataclass(frozen=True)
class Unit:
    """A unit as framed in the stream; ``payload_offset`` is absolute in the stream."""

    unit_type: int
    unit_flags: int
    payload_offset: int
    payload_length: int
    offset: int
    crc: int = 0  # unit_crc, as read_unit checked it

    @property
    def ancillary(self) -> bool:
        return bool(self.unit_flags & UNIT_FLAG_ANCILLARY)


def read_unit(reader: ByteReader, data: bytes) -> Unit:
    """§4.2: unit_type, unit_flags, payload_length, payload, unit_crc. Checks the CRC-32."""
    start = reader.offset
    unit_type = reader.u8("unit_type")
    flags_at = reader.offset
    flags = reader.u8("unit_flags")
    if flags & ~UNIT_FLAG_ANCILLARY:
        raise BitstreamError(f"reserved bits set (value {flags:#04x})", element="unit_flags", offset=flags_at)
    length_at = reader.offset
    length = reader.u32("payload_length")
    if length + UNIT_CRC_SIZE > reader.remaining:
        raise TruncatedError(
            f"declares {length} payload bytes but only {max(reader.remaining - UNIT_CRC_SIZE, 0)} "
            "remain before the CRC", element="payload_length", offset=length_at)
    payload_offset = reader.offset
    reader.view(length, "payload")
    crc_at = reader.offset
    crc = reader.u32("unit_crc")
    actual = 0
    for piece in read_through(data, start, payload_offset + length):  # a mapped unit's pages go behind it
        actual = zlib.crc32(piece, actual)
    if crc != actual:
        raise ChecksumError(f"CRC-32 mismatch (stored {crc:#010x}, computed {actual:#010x})",
                            element="unit_crc", offset=crc_at)
    return Unit(unit_type, flags, payload_offset, length, start, crc)


def unit_pieces(unit_type: int, payload: bytes, *, ancillary: bool = False) -> tuple[bytes, bytes, bytes]:
    """§4.2: a unit as its three pieces, to be written in order: the unit header, the payload
    itself (not copied) and the CRC-32 of the two."""
    header = ByteWriter()
    header.u8(unit_type)
    header.u8(UNIT_FLAG_ANCILLARY if ancillary else 0)
    header.u32(len(payload))
    head = header.getvalue()
    crc = ByteWriter()
    crc.u32(zlib.crc32(payload, zlib.crc32(head)))
    return head, payload, crc.getvalue()


def write_unit(writer: ByteWriter, unit_type: int, payload: bytes, *, ancillary: bool = False) -> None:
    for piece in unit_pieces(unit_type, payload, ancillary=ancillary):
        writer.bytes(piece)


# ---------------------------------------------------------------------------------------------
# §5.1 model_header


@dataclasses.dataclass(frozen=True)
class ModelHeader:
    tensor_count: int


def read_model_header(reader: ByteReader, limits: Limits) -> ModelHeader:
    at = reader.offset
    count = reader.u32("tensor_count")
    if count > limits.max_tensor_count:
        raise LimitExceededError(f"{count} tensors exceed the limit of {limits.max_tensor_count}",
                                 element="tensor_count", offset=at)
    reader.expect_end("model_header")
    return ModelHeader(count)


def write_model_header(writer: ByteWriter, header: ModelHeader) -> None:
    writer.u32(header.tensor_count)


# ---------------------------------------------------------------------------------------------
# §5.2 tensor_header


@dataclasses.dataclass(frozen=True)
class TensorHeader:
    name: str
    dtype: DType
    shape: tuple[int, ...]
    coding_mode: CodingMode
    content_digest: bytes | None = None  # §5.2, format 4.0: SHA-256 of the canonical bytes
    digest_offset: int | None = dataclasses.field(default=None, compare=False)  # where it was read
    aliases: tuple[str, ...] | None = None  # §5.2, format 5.0: other names of this tensor (tied weights)
    alias_offsets: tuple[int, ...] = dataclasses.field(default=(), compare=False)  # where each was read

    @property
    def element_count(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


def read_tensor_header(reader: ByteReader, limits: Limits, version_major: int = VERSION_MAJOR) -> TensorHeader:
    """§5.2 tensor_header, with the content_digest that ends it from format 4.0 on and the
    alias names after it from format 5.0 on."""
    name = _read_name(reader, limits, "name")
    at = reader.offset
    dtype_value = reader.u8("dtype")
    try:
        dtype = DType(dtype_value)
    except ValueError:
        raise BitstreamError(f"unknown value {dtype_value}", element="dtype", offset=at) from None
    at = reader.offset
    ndim = reader.u8("ndim")
    if ndim > limits.max_ndim:
        raise LimitExceededError(f"{ndim} dimensions exceed the limit of {limits.max_ndim}",
                                 element="ndim", offset=at)
    dims_at = reader.offset
    shape = tuple(reader.u32("dims") for _ in range(ndim))
    count = 1
    for dim in shape:
        count *= dim
    if count > limits.max_elements_per_tensor:
        raise LimitExceededError(
            f"shape {shape} has {count} elements, over the limit of {limits.max_elements_per_tensor}",
            element="dims", offset=dims_at)
    extent = math.prod(dim for dim in shape if dim)  # an empty tensor's other dims (§8)
    if extent > limits.max_elements_per_tensor:
        raise LimitExceededError(
            f"empty shape {shape}: its non-zero dims multiply to {extent}, over the limit of "
            f"{limits.max_elements_per_tensor}", element="dims", offset=dims_at)
    at = reader.offset
    mode_value = reader.u8("coding_mode")
    try:
        mode = CodingMode(mode_value)
    except ValueError:
        raise BitstreamError(f"unknown value {mode_value}", element="coding_mode", offset=at) from None
    if mode != CodingMode.RAW and dtype == DType.BOOL:
        raise BitstreamError(f"mode {mode.name} is not allowed for dtype {dtype.name}",
                             element="coding_mode", offset=at)
    if version_major < INTEGRITY_MAJOR:
        return TensorHeader(name, dtype, shape, mode)
    digest_at = reader.offset
    digest = reader.bytes(DIGEST_SIZE, "content_digest")
    if version_major < ALIAS_MAJOR:
        return TensorHeader(name, dtype, shape, mode, digest, digest_at)
    alias_count = reader.u16("alias_count")
    offsets = []
    aliases = []
    for _ in range(alias_count):
        offsets.append(reader.offset)
        aliases.append(_read_name(reader, limits, "alias_name"))
    return TensorHeader(name, dtype, shape, mode, digest, digest_at, tuple(aliases), tuple(offsets))


def _read_name(reader: ByteReader, limits: Limits, element: str) -> str:
    """§5.2 a name and its u16 length (elements ``name_length`` and ``name``, or
    ``alias_name_length`` and ``alias_name``): 1..max_name_length bytes of well-formed UTF-8."""
    at = reader.offset
    length = reader.u16(f"{element}_length")
    if length == 0:
        raise BitstreamError(f"{element.replace('_', ' ')} is empty", element=f"{element}_length", offset=at)
    if length > limits.max_name_length:
        raise LimitExceededError(f"{length} bytes exceed the limit of {limits.max_name_length}",
                                 element=f"{element}_length", offset=at)
    at = reader.offset
    raw = reader.bytes(length, element)
    try:
        return raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise BitstreamError(f"not valid UTF-8 (byte {exc.start})", element=element, offset=at) from None


def write_tensor_header(writer: ByteWriter, header: TensorHeader) -> None:
    _write_name(writer, header.name)
    writer.u8(header.dtype)
    writer.u8(len(header.shape))
    for dim in header.shape:
        writer.u32(dim)
    writer.u8(header.coding_mode)
    if header.content_digest is not None:  # format 4.0
        writer.bytes(header.content_digest)
    if header.aliases is not None:  # format 5.0
        writer.u16(len(header.aliases))
        for alias in header.aliases:
            _write_name(writer, alias)


def _write_name(writer: ByteWriter, name: str) -> None:
    encoded = name.encode("utf-8")
    writer.u16(len(encoded))
    writer.bytes(encoded)


# ---------------------------------------------------------------------------------------------
# §5.4 raw_payload


def read_raw_payload(reader: ByteReader, header: TensorHeader) -> memoryview:
    size = header.element_count * DTYPE_ITEMSIZE[header.dtype]
    if reader.remaining != size:
        raise BitstreamError(
            f"RAW payload holds {reader.remaining} bytes, shape {header.shape} of "
            f"{header.dtype.name} needs {size}", element="raw_data", offset=reader.offset)
    return reader.view(size, "raw_data")


# ---------------------------------------------------------------------------------------------
# §6.1 quantization parameters, §6.2 block shape


@dataclasses.dataclass(frozen=True)
class QuantParams:
    qp: int
    qp_density: int
    dependent: bool = False  # §7.1.2; only in streams of major version 3 and later


def read_quant_params(reader: ByteReader, version_major: int = VERSION_MAJOR) -> QuantParams:
    """§6.1; ``quant_flags`` is read only from streams of major version 3 and later."""
    at = reader.offset
    qp = reader.i16("qp")
    density_at = reader.offset
    density = reader.u8("qp_density")
    if density > MAX_QP_DENSITY:
        raise BitstreamError(f"qp_density {density} outside 0..{MAX_QP_DENSITY}", element="qp_density",
                             offset=density_at)
    if not qp_is_valid(qp, density):
        raise BitstreamError(f"qp {qp} with qp_density {density} is outside the allowed range",
                             element="qp", offset=at)
    if version_major < 3:
        return QuantParams(qp, density)
    flags_at = reader.offset
    flags = reader.u8("quant_flags")
    if flags & ~QUANT_FLAG_DEPENDENT:
        raise BitstreamError(f"reserved quant_flags bits set (value {flags:#04x})", element="quant_flags",
                             offset=flags_at)
    return QuantParams(qp, density, bool(flags & QUANT_FLAG_DEPENDENT))


def write_quant_params(writer: ByteWriter, params: QuantParams, version_major: int = VERSION_MAJOR) -> None:
    """§6.1 in the syntax of ``version_major`` (2 cannot carry dependent quantization)."""
    writer.i16(params.qp)
    writer.u8(params.qp_density)
    if version_major >= 3:
        writer.u8(QUANT_FLAG_DEPENDENT if params.dependent else 0)
    elif params.dependent:
        raise ValueError("dependent quantization needs a stream of major version 3")


def read_block_shape(reader: ByteReader) -> tuple[int, int]:
    at = reader.offset
    block_rows = reader.u8("block_rows")
    block_cols = reader.u8("block_cols")
    if block_rows == 0 or block_cols == 0:
        raise BitstreamError(f"block shape {block_rows}x{block_cols} has a zero side",
                             element="block_rows" if block_rows == 0 else "block_cols",
                             offset=at if block_rows == 0 else at + 1)
    return block_rows, block_cols


# ---------------------------------------------------------------------------------------------
# §6.6 frequency_table


def read_frequency_table(reader: ByteReader, max_alphabet: int, limits: Limits, element: str) -> FrequencyTable:
    """§6.6: alphabet_size u(16); if > 1: frequency_bits u(8), then the packed frequencies.

    ``max_alphabet`` is the largest alphabet the table's context allows.
    """
    at = reader.offset
    size = reader.u16(f"{element}.alphabet_size")
    if size == 0 or size > max_alphabet:
        raise BitstreamError(f"alphabet_size {size} outside 1..{max_alphabet}",
                             element=f"{element}.alphabet_size", offset=at)
    if size > limits.max_alphabet_size:
        raise LimitExceededError(f"alphabet_size {size} exceeds the limit of {limits.max_alphabet_size}",
                                 element=f"{element}.alphabet_size", offset=at)
    if size == 1:
        return FrequencyTable(np.ones(1, dtype=np.int64))
    at = reader.offset
    bits = reader.u8(f"{element}.frequency_bits")
    if not 1 <= bits <= MAX_FREQUENCY_BITS:
        raise BitstreamError(f"frequency_bits {bits} outside 1..{MAX_FREQUENCY_BITS}",
                             element=f"{element}.frequency_bits", offset=at)
    at = reader.offset
    used_bits = size * bits
    packed = reader.view(-(-used_bits // 8), f"{element}.frequencies")
    if not padding_is_zero(packed, used_bits):
        raise BitstreamError("padding bits are not zero", element=f"{element}.frequencies", offset=at)
    frequencies = unpack_fields(packed, size, bits).astype(np.int64)
    if not frequencies.any():
        raise BitstreamError("all frequencies are zero", element=f"{element}.frequencies", offset=at)
    return FrequencyTable(frequencies, bits)


def write_frequency_table(writer: ByteWriter, table: FrequencyTable) -> None:
    writer.u16(table.alphabet_size)
    if table.alphabet_size > 1:
        writer.u8(table.frequency_bits)
        writer.bytes(pack_fields(table.frequencies, table.frequency_bits))


# ---------------------------------------------------------------------------------------------
# §6.5 level_plane


def magnitude_alphabet_limit(direct_bits: int, mantissa_bits: int) -> int:
    """Number of magnitude symbols of a binarization: direct values plus escape buckets (§6.4)."""
    return (1 << direct_bits) + (MAX_MAGNITUDE_EXPONENT - direct_bits + 1) * (1 << mantissa_bits)


@dataclasses.dataclass(frozen=True, eq=False)
class LevelPlane:
    """The syntax of one plane of magnitudes (§6.5), before entropy decoding."""

    value_count: int
    direct_bits: int = 0
    mantissa_bits: int = 0
    row_class_table: FrequencyTable | None = None
    col_class_table: FrequencyTable | None = None
    row_class_count: int = 1
    col_class_count: int = 1
    magnitude_tables: tuple[FrequencyTable, ...] = ()
    words: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.uint32))  # "<u4", may be unaligned
    words_offset: int = 0
    raw_bits: bytes | memoryview = b""
    raw_bits_offset: int = 0

    @property
    def context_count(self) -> int:
        return self.row_class_count + self.col_class_count - 1


def read_level_plane(reader: ByteReader, expected_count: int, limits: Limits, element: str) -> LevelPlane:
    """§6.5. ``expected_count`` is the number of values the shape and block map imply."""
    at = reader.offset
    count = reader.u32(f"{element}.value_count")
    if count != expected_count:
        raise BitstreamError(f"value_count {count} contradicts the {expected_count} values the shape implies",
                             element=f"{element}.value_count", offset=at)
    if count == 0:
        return LevelPlane(0)
    at = reader.offset
    direct_bits = reader.u8(f"{element}.direct_bits")
    if direct_bits > MAX_DIRECT_BITS:
        raise BitstreamError(f"direct_bits {direct_bits} outside 0..{MAX_DIRECT_BITS}",
                             element=f"{element}.direct_bits", offset=at)
    at = reader.offset
    mantissa_bits = reader.u8(f"{element}.mantissa_bits")
    if mantissa_bits > min(MAX_MANTISSA_BITS, direct_bits):
        raise BitstreamError(f"mantissa_bits {mantissa_bits} outside 0..{min(MAX_MANTISSA_BITS, direct_bits)}",
                             element=f"{element}.mantissa_bits", offset=at)
    class_counts = []
    for field in ("row_class_count", "col_class_count"):
        at = reader.offset
        value = reader.u8(f"{element}.{field}")
        if not 1 <= value <= MAX_CLASS_COUNT:
            raise BitstreamError(f"{field} {value} outside 1..{MAX_CLASS_COUNT}",
                                 element=f"{element}.{field}", offset=at)
        class_counts.append(value)
    row_classes, col_classes = class_counts
    row_table = (read_frequency_table(reader, row_classes, limits, f"{element}.row_class_table")
                 if row_classes > 1 else None)
    col_table = (read_frequency_table(reader, col_classes, limits, f"{element}.col_class_table")
                 if col_classes > 1 else None)
    alphabet = magnitude_alphabet_limit(direct_bits, mantissa_bits)
    tables = tuple(read_frequency_table(reader, alphabet, limits, f"{element}.magnitude_table[{c}]")
                   for c in range(row_classes + col_classes - 1))
    at = reader.offset
    word_count = reader.u32(f"{element}.word_count")
    if word_count * 4 > reader.remaining:
        raise TruncatedError(f"declares {word_count} words but only {reader.remaining} bytes remain",
                             element=f"{element}.word_count", offset=at)
    words_offset = reader.offset
    # a view of the stream: copied only when unaligned (or on a big-endian machine)
    words = np.frombuffer(reader.view(4 * word_count, f"{element}.words"), dtype="<u4")  # a view: no copy
    at = reader.offset
    raw_count = reader.u32(f"{element}.raw_byte_count")
    if raw_count > reader.remaining:
        raise TruncatedError(f"declares {raw_count} bytes but only {reader.remaining} remain",
                             element=f"{element}.raw_byte_count", offset=at)
    raw_offset = reader.offset
    raw = reader.view(raw_count, f"{element}.raw_bits")
    return LevelPlane(count, direct_bits, mantissa_bits, row_table, col_table, row_classes, col_classes,
                      tables, words, words_offset, raw, raw_offset)


def write_level_plane(writer: ByteWriter, plane: LevelPlane) -> None:
    writer.u32(plane.value_count)
    if plane.value_count == 0:
        return
    writer.u8(plane.direct_bits)
    writer.u8(plane.mantissa_bits)
    writer.u8(plane.row_class_count)
    writer.u8(plane.col_class_count)
    for table in (plane.row_class_table, plane.col_class_table):
        if table is not None:
            write_frequency_table(writer, table)
    for table in plane.magnitude_tables:
        write_frequency_table(writer, table)
    writer.u32(plane.words.size)
    writer.array(plane.words.astype("<u4", copy=False))  # no copy: the plane's words are not changed
    writer.u32(len(plane.raw_bits))
    writer.bytes(plane.raw_bits)


# ---------------------------------------------------------------------------------------------
# §6.8 sign_section


def read_sign_section(reader: ByteReader, bit_count: int, element: str) -> np.ndarray:
    """§6.8: sign_byte_count u(32) then the sign bits (1 = negative), MSB first. Returns them
    as a uint8 array of 0/1."""
    return np.unpackbits(np.frombuffer(read_packed_signs(reader, bit_count, element), dtype=np.uint8),
                         count=bit_count)


def read_packed_signs(reader: ByteReader, bit_count: int, element: str) -> memoryview:
    """:func:`read_sign_section`, checked the same way, but the sign bits left packed."""
    at = reader.offset
    byte_count = reader.u32(f"{element}.sign_byte_count")
    expected = -(-bit_count // 8)
    if byte_count != expected:
        raise BitstreamError(f"sign_byte_count {byte_count} contradicts the {bit_count} signs expected "
                             f"({expected} bytes)", element=f"{element}.sign_byte_count", offset=at)
    at = reader.offset
    packed = reader.view(byte_count, f"{element}.sign_bits")
    if not padding_is_zero(packed, bit_count):
        raise BitstreamError("padding bits are not zero", element=f"{element}.sign_bits", offset=at)
    return packed


def write_sign_section(writer: ByteWriter, negative: np.ndarray | bytes) -> None:
    """A sign section (§6.8) of the boolean flags ``negative``, or of those flags already
    packed (``bytes``, as ``np.packbits`` packs them)."""
    packed = negative if isinstance(negative, bytes) else np.packbits(negative.astype(np.uint8)).tobytes()
    writer.u32(len(packed))
    writer.bytes(packed)


# ---------------------------------------------------------------------------------------------
# §5.7 attached_file (format 3.1)


@dataclasses.dataclass(frozen=True)
class AttachedFile:
    """A file carried beside the tensors (a model's config.json, tokenizer files): ``path``
    relative, '/'-separated, checked by :func:`check_attachment_path`; ``content`` its bytes."""

    path: str
    content: bytes


def check_attachment_path(path: str) -> str:
    """Why ``path`` may not name an attached file (§5.7), or "" when it may."""
    components = path.split("/")
    if not path or len(components) > MAX_PATH_COMPONENTS:
        return f"a path of 1 to {MAX_PATH_COMPONENTS} components is required"
    for component in components:
        if component in ("", ".", ".."):
            return f"component {component!r} is empty, '.' or '..'"
        if any(ord(c) < 0x20 or ord(c) == 0x7F or c in "\\:" for c in component):
            return "a component holds a control character, a backslash or a colon"
    return ""


def read_attached_file(reader: ByteReader) -> AttachedFile:
    at = reader.offset
    length = reader.u16("path_length")
    raw = reader.bytes(length, "path")
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BitstreamError("path is not valid UTF-8", element="path", offset=at + 2) from None
    problem = check_attachment_path(path)
    if problem:
        raise BitstreamError(f"attached file path {path!r}: {problem}", element="path", offset=at + 2)
    return AttachedFile(path, bytes(reader.bytes(reader.remaining, "content")))


def write_attached_file(writer: ByteWriter, file: AttachedFile) -> None:
    encoded = file.path.encode("utf-8")
    writer.u16(len(encoded))
    writer.bytes(encoded)
    writer.bytes(file.content)


# ---------------------------------------------------------------------------------------------
# §5.8 stream_end (format 4.0)


@dataclasses.dataclass(frozen=True)
class StreamEnd:
    unit_count: int
    model_digest: bytes
    stream_digest: bytes


def read_stream_end(reader: ByteReader) -> StreamEnd:
    """§5.8: unit_count, model_digest, stream_digest, and nothing after them. The caller
    compares them with what it read."""
    unit_count = reader.u32("unit_count")
    model_digest = reader.bytes(DIGEST_SIZE, "model_digest")
    stream_digest = reader.bytes(DIGEST_SIZE, "stream_digest")
    reader.expect_end("stream_end")
    return StreamEnd(unit_count, model_digest, stream_digest)


def write_stream_end(writer: ByteWriter, end: StreamEnd) -> None:
    writer.u32(end.unit_count)
    writer.bytes(end.model_digest)
    writer.bytes(end.stream_digest)
