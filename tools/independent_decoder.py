#!/usr/bin/env python3
"""An independent decoder for nncodec_unify streams of formats 2.x, 3.x, 4.x and 5.x, written from
``spec/bitstream.md`` alone.

It imports neither ``nncodec_unify`` nor ``constriction``: the range decoder, the probability
tables, the CRC-32 and the reconstruction are implemented here exactly as the spec describes
them, function by function in the spec's order, so that where this decoder and the reference
decoder agree, the spec is complete. It is written for clarity, not speed (the range decoder
is a plain Python loop).

    python tools/independent_decoder.py STREAM            # list tensors with their SHA-256
    python tools/independent_decoder.py --suite conformance/   # check a conformance suite

Every rejection is a :class:`DecodeError` with the spec's ``category`` and ``element`` (§3.6).
Streams of any other major version, 1.0 included, are ``unsupported_version`` (§4.1, §10).
A 2.x stream is a 3.x stream whose quant_params lack quant_flags (§6.1). A 4.x stream adds a
content_digest to every tensor_header, which is always checked against the decoded tensor (§7.4),
and ends with a STREAM_END unit (§5.8); 2.x and 3.x streams carry no digests (§4.1 table). A 5.x
stream ends every tensor_header with alias names (§5.2): the tensor is presented under its name,
then under each alias name in the order stored, with the same values (``Tensor.alias_of``), and
the model digest has a record per presented name.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# §3.6 errors


class DecodeError(Exception):
    """A rejected stream: ``category`` is one of the five of §3.6, ``element`` the spec's name."""

    def __init__(self, category: str, element: str, message: str):
        super().__init__(f"{category} at {element}: {message}")
        self.category = category
        self.element = element


def malformed(element: str, message: str) -> DecodeError:
    return DecodeError("malformed", element, message)


# ---------------------------------------------------------------------------------------------
# §8 limits

DEFAULT_LIMITS = {
    "max_tensor_count": 1 << 20,
    "max_name_length": 1024,
    "max_ndim": 8,
    "max_elements_per_tensor": 1 << 32,
    "max_total_output_bytes": 1 << 36,
    "max_alphabet_size": 1024,
}


def limit_error(element: str, message: str) -> DecodeError:
    return DecodeError("limit", element, message)


# ---------------------------------------------------------------------------------------------
# §3.2, §3.5 descriptors, read from a window; reading past its end is `truncated`


class Window:
    def __init__(self, data: bytes, start: int, end: int):
        self.data, self.pos, self.end = data, start, end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int, element: str) -> bytes:
        if n > self.end - self.pos:
            raise DecodeError("truncated", element, f"needs {n} bytes, {self.end - self.pos} remain")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self, element: str) -> int:
        return self.take(1, element)[0]

    def u16(self, element: str) -> int:
        return int.from_bytes(self.take(2, element), "little")

    def i16(self, element: str) -> int:
        return int.from_bytes(self.take(2, element), "little", signed=True)

    def u32(self, element: str) -> int:
        return int.from_bytes(self.take(4, element), "little")


# §3.3 bit packing: MSB first, zero padding


class BitReader:
    def __init__(self, data: bytes):
        self.data, self.bit = data, 0

    def read(self, width: int) -> int:
        value = 0
        for _ in range(width):
            byte = self.data[self.bit >> 3]
            value = (value << 1) | ((byte >> (7 - (self.bit & 7))) & 1)
            self.bit += 1
        return value


def padding_is_zero(data: bytes, used_bits: int) -> bool:
    if used_bits % 8 == 0:
        return True
    return data[used_bits // 8] & ((1 << (8 - used_bits % 8)) - 1) == 0


def ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b


# ---------------------------------------------------------------------------------------------
# Appendix A: CRC-32


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# §5.2 dtypes: name, is float, item size

DTYPES = {
    1: ("float32", True, 4), 2: ("float16", True, 2), 3: ("bfloat16", True, 2), 4: ("float64", True, 8),
    5: ("int8", False, 1), 6: ("int16", False, 2), 7: ("int32", False, 4), 8: ("int64", False, 8),
    9: ("uint8", False, 1), 10: ("bool", False, 1), 11: ("uint16", False, 2), 12: ("uint32", False, 4),
    13: ("uint64", False, 8),
}
# §7.1.1 the range of each integer dtype: the values a level of a DENSE or UNIFIED tensor may take
INTEGER_RANGES = {
    "int8": (-(1 << 7), (1 << 7) - 1), "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1),
    "uint8": (0, (1 << 8) - 1), "uint16": (0, (1 << 16) - 1), "uint32": (0, (1 << 32) - 1),
    "uint64": (0, (1 << 64) - 1),
}
RAW, DENSE, UNIFIED = 0, 1, 2
MODE_NAMES = {RAW: "raw", DENSE: "dense", UNIFIED: "unified"}
KIND_DENSE, KIND_UNIFIED, KIND_PRUNED = 0, 1, 2


@dataclasses.dataclass
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    coding_mode: str
    data: bytes  # §7.3 canonical bytes
    alias_of: str | None = None  # 5.x: the name of the tensor this alias name presents again (§5.2)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# ---------------------------------------------------------------------------------------------
# §4 container


MAGIC = b"\x89NNU\r\n\x1a\n"
VERSION_MAJORS = (2, 3, 4, 5)  # the formats this decoder implements, every minor version (§10)
DIGEST_SIZE = 32  # SHA-256 (Appendix A): content_digest, model_digest, stream_digest
STREAM_END_SIZE = 4 + 2 * DIGEST_SIZE  # §5.8: unit_count, model_digest, stream_digest
DQ_SEGMENT = 64  # §7.1.2: the state restarts every 64 positions of the scan
DQ_NEXT_STATE = ((0, 2), (2, 0), (1, 3), (3, 1))  # §7.1.2: [state][level parity]


def decode(data: bytes, limits: dict | None = None, files: list | None = None) -> list[Tensor]:
    """§4: the whole stream. Returns the tensors in stream order, each (5.x) followed by its
    alias names (§4.3); appends each attached file (§5.7) to ``files`` as (path, content)."""
    lim = dict(DEFAULT_LIMITS)
    lim.update(limits or {})
    data = bytes(data)
    stream = Window(data, 0, len(data))
    major, minor = read_file_header(stream)
    attachments = (major, minor) >= (3, 1)  # unit type 3 is an attached file from format 3.1 on (§5.7)
    stream_end = major >= 4  # unit type 4 is STREAM_END, required last, from format 4.0 on (§5.8)
    paths: set[str] = set()
    tensor_count = None
    tensors: list[Tensor] = []  # every presented name (§4.3)
    tensor_units = 0
    records: list[bytes] = []  # §5.8 tensor_record of every presented name, in the order presented
    names: set[bytes] = set()  # every name and (5.x) alias name read so far: one namespace (§5.2)
    output_bytes = 0
    unit_count = 0  # units read after the file header (§5.8 unit_count)
    ended = False  # a STREAM_END unit was read
    while stream.remaining:
        if ended:  # §4.3 rule 0: applied when the next unit would start, before anything of it is read
            raise malformed("stream_end", "bytes after the STREAM_END unit")
        unit_start = stream.pos
        unit_type, ancillary, payload = read_unit(stream, data)
        if unit_type == 1 and not ancillary:  # §4.3 rule 1
            if tensor_count is not None:
                raise malformed("unit_type", "a second model_header")
            tensor_count = read_model_header(payload, lim)
        elif tensor_count is None:  # rule 2
            raise malformed("unit_type", "the first unit must be a critical model_header")
        elif unit_type == 2 and not ancillary:  # rule 3
            if tensor_units == tensor_count:
                raise malformed("unit_type", "more tensor units than tensor_count")
            header = read_tensor_header(payload, lim, major)
            check_names(header, names)
            # §5.2, §8: an alias counts as a copy
            output_bytes += (1 + len(header["aliases"])) * header["element_count"] * DTYPES[header["dtype"]][2]
            if output_bytes > lim["max_total_output_bytes"]:
                raise limit_error("dims", "total output size exceeds max_total_output_bytes")
            tensor = read_tensor_payload(payload, header, lim, major)
            if major >= 4:  # §7.4, after every other check on the tensor
                verify_content(tensor, header["content_digest"])
                records += header["records"]
            tensor_units += 1
            tensors.append(tensor)
            tensors += [dataclasses.replace(tensor, name=alias, alias_of=tensor.name)  # §4.3: right after it
                        for alias in header["aliases"]]
        elif unit_type == 3 and attachments:  # §4.3 rule 4, §5.7
            if not ancillary:
                raise malformed("unit_flags", "an attached_file unit must be ancillary")
            path = read_attached_file_path(payload)
            if path in paths:
                raise malformed("path", f"a second attached file {path!r}")
            paths.add(path)
            content = payload.take(payload.remaining, "content")
            output_bytes += len(content)  # the content counts as output (§8)
            if files is not None:
                files.append((path, content))
            if output_bytes > lim["max_total_output_bytes"]:
                raise limit_error("content", "total output size exceeds max_total_output_bytes")
        elif unit_type == 4 and stream_end:  # rule 5, §5.8
            if ancillary:
                raise malformed("unit_flags", "a STREAM_END unit must be critical")
            if tensor_units < tensor_count:
                raise DecodeError("truncated", "tensor_count",
                                  f"STREAM_END after {tensor_units} of {tensor_count} tensor units")
            read_stream_end(payload, unit_count, records, memoryview(data)[:unit_start])
            ended = True
        elif unit_type in (1, 2):  # rule 6
            raise malformed("unit_flags", "a known unit type marked ancillary")
        elif not ancillary:  # rule 7
            raise malformed("unit_type", f"unknown critical unit type {unit_type}")
        # rule 8: unknown ancillary unit, skipped
        unit_count += 1
    if tensor_count is None:
        raise DecodeError("truncated", "model_header", "no model_header unit")
    if tensor_units < tensor_count:
        raise DecodeError("truncated", "tensor_count", f"{tensor_units} of {tensor_count} tensor units")
    if stream_end and not ended:
        raise DecodeError("truncated", "stream_end", "no STREAM_END unit")
    return tensors


def read_file_header(stream: Window) -> tuple[int, int]:
    """§4.1: the magic number, then a version_major of 2, 3, 4 or 5 (any version_minor), then
    header_flags 0. Returns version_major and version_minor."""
    if stream.remaining < 8 or stream.take(8, "magic") != MAGIC:
        raise malformed("magic", "not an nncodec_unify stream")
    major = stream.u8("version_major")
    minor = stream.u8("version_minor")  # every minor version is accepted
    if major not in VERSION_MAJORS:
        raise DecodeError("unsupported_version", "version_major",
                          f"major version {major}, this decoder reads {VERSION_MAJORS}")
    if stream.u16("header_flags") != 0:
        raise malformed("header_flags", "reserved bits set")
    return major, minor


def read_attached_file_path(payload: Window) -> str:
    """§5.7: path_length, then the path (UTF-8, 1 to 8 '/'-separated components, none empty,
    '.' or '..', none holding a control character, backslash or colon); the content is the
    rest of the payload and is not needed to decode the tensors."""
    length = payload.u16("path_length")
    raw = payload.take(length, "path")
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed("path", "not UTF-8") from None
    parts = path.split("/")
    if not path or len(parts) > 8:
        raise malformed("path", "not 1 to 8 components")
    for part in parts:
        if part in ("", ".", "..") or any(ord(c) < 0x20 or ord(c) == 0x7F or c in "\\:" for c in part):
            raise malformed("path", f"component {part!r}")
    return path


def read_unit(stream: Window, data: bytes) -> tuple[int, bool, Window]:
    """§4.2: returns unit_type, ancillary, and the payload window (CRC checked)."""
    start = stream.pos
    unit_type = stream.u8("unit_type")
    flags = stream.u8("unit_flags")
    if flags & 0xFE:
        raise malformed("unit_flags", "reserved bits set")
    length = stream.u32("payload_length")
    if length + 4 > stream.remaining:
        raise DecodeError("truncated", "payload_length", "payload and CRC reach past the stream")
    payload_start = stream.pos
    stream.take(length, "payload")
    crc = stream.u32("unit_crc")
    if crc != crc32(data[start:payload_start + length]):
        raise DecodeError("checksum", "unit_crc", "CRC-32 mismatch")
    return unit_type, bool(flags & 1), Window(data, payload_start, payload_start + length)


# ---------------------------------------------------------------------------------------------
# §5 model and tensors


def read_model_header(payload: Window, lim: dict) -> int:
    """§5.1."""
    count = payload.u32("tensor_count")
    if count > lim["max_tensor_count"]:
        raise limit_error("tensor_count", f"{count} tensors")
    if payload.remaining:
        raise malformed("model_header", "trailing bytes")
    return count


def read_name(payload: Window, lim: dict, element: str) -> tuple[bytes, str]:
    """§5.2 ``name_length`` and ``name`` (``element`` "name"), or ``alias_name_length`` and
    ``alias_name`` (``element`` "alias_name"): 1 to max_name_length bytes, checked before they are
    read, of well-formed UTF-8. Returns the stored bytes (with their length field) and the name."""
    start = payload.pos
    length = payload.u16(f"{element}_length")
    if length == 0:
        raise malformed(f"{element}_length", "empty name")
    if length > lim["max_name_length"]:
        raise limit_error(f"{element}_length", f"{length} bytes")
    raw = payload.take(length, element)
    try:
        return payload.data[start:payload.pos], raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise malformed(element, "not well-formed UTF-8") from None


def check_names(header: dict, names: set[bytes]) -> None:
    """§5.2, after the tensor header: the name, then each alias name in order, is new in the
    stream's one namespace of names and alias names (compared as bytes); adds them to ``names``."""
    if header["raw_name"] in names:
        raise malformed("name", "the name of an earlier tensor, or an earlier alias name")
    names.add(header["raw_name"])
    for raw_alias in header["raw_aliases"]:
        if raw_alias in names:
            raise malformed("alias_name", "a name or alias name already read")
        names.add(raw_alias)


def read_tensor_header(payload: Window, lim: dict, major: int) -> dict:
    """§5.2. From format 4.0 the header ends with content_digest, from 5.0 then with the alias
    names. ``records`` are then the §5.8 tensor_records of the presented names: the header without
    coding_mode (and without the alias list), each field as stored, then for each alias the same
    with its alias_name_length and alias_name in place of name_length and name."""
    stored_name, name = read_name(payload, lim, "name")
    start = payload.pos
    dtype = payload.u8("dtype")
    if dtype not in DTYPES:
        raise malformed("dtype", f"reserved value {dtype}")
    ndim = payload.u8("ndim")
    if ndim > lim["max_ndim"]:
        raise limit_error("ndim", f"{ndim} dimensions")
    dims = tuple(payload.u32("dims") for _ in range(ndim))
    element_count = 1
    for d in dims:
        element_count *= d
    if element_count > lim["max_elements_per_tensor"]:
        raise limit_error("dims", f"{element_count} elements")
    extent = 1
    for d in dims:
        extent *= d if d else 1
    if extent > lim["max_elements_per_tensor"]:  # §8: an empty tensor's non-zero dims too
        raise limit_error("dims", f"non-zero dims multiply to {extent}")
    fields = payload.data[start:payload.pos]  # dtype … dims, as stored
    mode = payload.u8("coding_mode")
    if mode not in MODE_NAMES:
        raise malformed("coding_mode", f"reserved value {mode}")
    if mode != RAW and DTYPES[dtype][0] == "bool":
        raise malformed("coding_mode", f"{MODE_NAMES[mode].upper()} for dtype bool")
    header = {"name": name, "raw_name": stored_name[2:], "dtype": dtype, "dims": dims,
              "element_count": element_count, "mode": mode, "aliases": [], "raw_aliases": []}
    stored_names = [stored_name]
    if major >= 4:
        header["content_digest"] = payload.take(DIGEST_SIZE, "content_digest")
    if major >= 5:
        for _ in range(payload.u16("alias_count")):
            stored_alias, alias = read_name(payload, lim, "alias_name")
            stored_names.append(stored_alias)
            header["raw_aliases"].append(stored_alias[2:])
            header["aliases"].append(alias)
    if major >= 4:
        header["records"] = [stored + fields + header["content_digest"] for stored in stored_names]
    return header


def verify_content(tensor: Tensor, content_digest: bytes) -> None:
    """§7.4: the SHA-256 of the decoded tensor's canonical bytes (§7.3) is its content_digest."""
    if hashlib.sha256(tensor.data).digest() != content_digest:
        raise DecodeError("checksum", "content_digest",
                          f"tensor {tensor.name!r} does not decode to its content_digest")


def read_stream_end(payload: Window, unit_count: int, records: list[bytes], before: bytes | memoryview) -> None:
    """§5.8: the three fields are read, then checked in order: that the payload ends, then
    unit_count, model_digest and stream_digest. ``unit_count`` is the number of units before
    this one, ``records`` the tensor_record of every tensor read, ``before`` every byte of the
    stream before this unit."""
    stored_count = payload.u32("unit_count")
    model_digest = payload.take(DIGEST_SIZE, "model_digest")
    stream_digest = payload.take(DIGEST_SIZE, "stream_digest")
    if payload.remaining:
        raise malformed("stream_end", f"{STREAM_END_SIZE + payload.remaining} bytes, {STREAM_END_SIZE} expected")
    if stored_count != unit_count:
        raise malformed("unit_count", f"{stored_count}, but {unit_count} units precede STREAM_END")
    if hashlib.sha256(b"".join(records)).digest() != model_digest:
        raise DecodeError("checksum", "model_digest", "the tensors read do not give the model_digest")
    if hashlib.sha256(before).digest() != stream_digest:
        raise DecodeError("checksum", "stream_digest", "the stream before STREAM_END does not give the stream_digest")


def read_tensor_payload(payload: Window, header: dict, lim: dict, major: int) -> Tensor:
    """§5.2 tensor_payload, §5.3."""
    dtype_name, _, item_size = DTYPES[header["dtype"]]
    rows, cols = matrix_shape(header["dims"])
    if header["mode"] == RAW:
        data = read_raw_payload(payload, header, item_size)
    else:
        integer = dtype_name in INTEGER_RANGES
        qp, density, dependent = read_quant_params(payload, major)
        if integer and qp != 0:  # §6.1, after the range checks
            raise malformed("qp", f"qp {qp} for dtype {dtype_name}: an integer tensor has step 1 (qp 0)")
        if integer and dependent:  # §6.1, after the qp check
            raise malformed("quant_flags", f"dependent quantization for dtype {dtype_name}")
        if header["mode"] == DENSE:
            levels = read_dense_payload(payload, rows, cols, lim)
        else:
            levels = read_unified_payload(payload, rows, cols, lim)
        if integer:  # §7.1.1: once the payload has been read, before its trailing bytes
            low, high = INTEGER_RANGES[dtype_name]
            if any(not low <= level <= high for level in levels):
                raise malformed("levels", f"a level outside the range of {dtype_name} ({low}..{high})")
        if payload.remaining:
            raise malformed("tensor_payload", "trailing bytes")
        if integer:
            data = integer_bytes(levels, dtype_name, item_size)
        else:
            data = reconstruct(dependent_multiples(levels) if dependent else levels, qp, density, dtype_name)
    return Tensor(header["name"], dtype_name, header["dims"], MODE_NAMES[header["mode"]], data)


def read_raw_payload(payload: Window, header: dict, item_size: int) -> bytes:
    """§5.4."""
    size = header["element_count"] * item_size
    if payload.remaining != size:
        raise malformed("raw_data", f"{payload.remaining} bytes, {size} expected")
    raw = payload.take(size, "raw_data")
    if DTYPES[header["dtype"]][0] == "bool" and any(b > 1 for b in raw):
        raise malformed("raw_data", "a bool byte is neither 0 nor 1")
    return raw


class Grid:
    """Every position of a rows x cols grid in scan order (§2), as a sequence that is never built
    as a list: the column_offsets plane of an empty matrix (0 x 2**32 - 1) has 2**32 - 1
    positions, and a stream that gives it another value_count is rejected without listing them."""

    def __init__(self, rows: int, cols: int):
        self.rows, self.cols = rows, cols

    def __len__(self) -> int:
        return self.rows * self.cols

    def __iter__(self):
        if self.rows == 0 or self.cols == 0:  # without looping over the other side
            return iter(())
        return ((i, j) for i in range(self.rows) for j in range(self.cols))


def scan(rows: int, cols: int, keep=None) -> Grid | list[tuple[int, int]]:
    """The positions of a rows x cols grid in scan order (§2), optionally only those ``keep``s.

    An empty grid yields nothing without looping over its other side, which may be 2**32 - 1.
    """
    if keep is None:
        return Grid(rows, cols)
    if rows == 0 or cols == 0:
        return []
    return [(i, j) for i in range(rows) for j in range(cols) if keep(i, j)]


def read_dense_payload(payload: Window, rows: int, cols: int, lim: dict) -> list[int]:
    """§5.5: levels of the matrix in row-major order."""
    return read_dense_levels(payload, rows, cols, scan(rows, cols), lim)


def read_dense_levels(payload: Window, rows: int, cols: int, positions: Grid | list[tuple[int, int]],
                      lim: dict) -> list[int]:
    """dense_offsets, dense_levels, dense_signs (§5.5, §5.6, §6.10): the levels of the dense
    ``positions`` (in scan order), each its residual plus its column's offset."""
    offsets = read_dense_offsets(payload, rows, cols, lim)
    magnitudes = level_plane(payload, "dense_levels", rows, cols, positions, lim)
    residuals = apply_signs(payload, "dense_signs", magnitudes)
    if offsets is None:
        return residuals  # magnitudes are below 2**31 (§6.4): no level to check
    levels = [residual + offsets[j] for (_, j), residual in zip(positions, residuals, strict=True)]
    if any(abs(level) > (1 << 31) - 1 for level in levels):  # §6.10, checked after dense_signs
        raise malformed("column_offsets", "a residual plus its column offset lies beyond ±(2**31 - 1)")
    return levels


def apply_signs(payload: Window, section: str, magnitudes: list[int]) -> list[int]:
    """Signs of the non-zero values (§6.8)."""
    nonzero = [i for i, m in enumerate(magnitudes) if m]
    negative = sign_section(payload, section, len(nonzero))
    levels = list(magnitudes)
    for i, neg in zip(nonzero, negative, strict=True):
        if neg:
            levels[i] = -levels[i]
    return levels


def read_unified_payload(payload: Window, rows: int, cols: int, lim: dict) -> list[int]:
    """§5.6: levels of the matrix in row-major order."""
    block_rows = payload.u8("block_rows")
    block_cols = payload.u8("block_cols")
    if block_rows == 0:
        raise malformed("block_rows", "zero")
    if block_cols == 0:
        raise malformed("block_cols", "zero")
    grid_rows, grid_cols = ceil_div(rows, block_rows), ceil_div(cols, block_cols)
    kinds_flat = level_plane(payload, "block_map", grid_rows, grid_cols, scan(grid_rows, grid_cols), lim)
    if any(k > 2 for k in kinds_flat):
        raise malformed("block_map", "block kind above 2")
    kind = {position: k for position, k in zip(scan(grid_rows, grid_cols), kinds_flat, strict=True)}
    unified_blocks = scan(grid_rows, grid_cols, lambda r, c: kind[(r, c)] == KIND_UNIFIED)
    stored = level_plane(payload, "unified_magnitudes", grid_rows, grid_cols, unified_blocks, lim)
    if any(v > (1 << 31) - 2 for v in stored):
        raise malformed("unified_magnitudes", "magnitude above 2**31 - 1")
    block_magnitude = {block: v + 1 for block, v in zip(unified_blocks, stored, strict=True)}

    def kind_of(r: int, c: int) -> int:
        return kind[(r // block_rows, c // block_cols)]

    unified_elements = scan(rows, cols, lambda r, c: kind_of(r, c) == KIND_UNIFIED)
    negative = sign_section(payload, "unified_signs", len(unified_elements))
    levels = [0] * (rows * cols)
    for (r, c), neg in zip(unified_elements, negative, strict=True):
        m = block_magnitude[(r // block_rows, c // block_cols)]
        levels[r * cols + c] = -m if neg else m
    dense_elements = scan(rows, cols, lambda r, c: kind_of(r, c) == KIND_DENSE)
    dense = read_dense_levels(payload, rows, cols, dense_elements, lim)  # offsets: dense blocks only
    for (r, c), level in zip(dense_elements, dense, strict=True):
        levels[r * cols + c] = level
    return levels


# ---------------------------------------------------------------------------------------------
# §6.10 dense_offsets

OFFSET_NONE, OFFSET_COLUMN = 0, 1


def read_dense_offsets(payload: Window, rows: int, cols: int, lim: dict) -> list[int] | None:
    """§6.10: the offset of every matrix column, or None for offset_mode 0 (every offset 0)."""
    mode = payload.u8("offset_mode")
    if mode > OFFSET_COLUMN:
        raise malformed("offset_mode", f"reserved value {mode}")
    if mode == OFFSET_NONE:
        return None
    if rows == 0:
        raise malformed("offset_mode", "column offsets for a matrix without rows")
    codes = level_plane(payload, "column_offsets", 1, cols, scan(1, cols), lim)
    return [unzigzag(v) for v in codes]


def unzigzag(v: int) -> int:
    """An even code v stands for v / 2, an odd one for -(v + 1) / 2: 0, 1, 2, 3 -> 0, -1, 1, -2."""
    return v // 2 if v % 2 == 0 else -(v + 1) // 2


# ---------------------------------------------------------------------------------------------
# §6.1 quantization parameters, §6.2 matrix view


def read_quant_params(payload: Window, major: int) -> tuple[int, int, bool]:
    """§6.1: qp, qp_density and (formats 3.x, 4.x and 5.x) whether the tensor is dependently quantized."""
    qp = payload.i16("qp")
    density = payload.u8("qp_density")
    if density > 4:
        raise malformed("qp_density", f"{density} > 4")
    exponent = (qp >> density) - density  # Python's >> is floor division by 2**density
    if not -126 <= exponent <= 100:
        raise malformed("qp", f"step exponent {exponent} outside -126..100")
    if major < 3:
        return qp, density, False
    flags = payload.u8("quant_flags")
    if flags > 1:
        raise malformed("quant_flags", f"reserved bits set in {flags}")
    return qp, density, flags == 1


def step_of(qp: int, density: int) -> float:
    mantissa = (1 << density) + (qp % (1 << density))
    return float(mantissa) * 2.0 ** ((qp >> density) - density)  # exact in binary64 and binary32


def matrix_shape(dims: tuple[int, ...]) -> tuple[int, int]:
    if len(dims) == 0:
        return 1, 1
    if len(dims) == 1:
        return 1, dims[0]
    cols = 1
    for d in dims[1:]:
        cols *= d
    return dims[0], cols


# ---------------------------------------------------------------------------------------------
# §6.4 binarization


def magnitude_alphabet(q: int, m: int) -> int:
    return (1 << q) + (31 - q) * (1 << m)


def symbol_base_and_width(s: int, q: int, m: int) -> tuple[int, int]:
    if s < (1 << q):
        return s, 0
    k = s - (1 << q)
    e = q + (k >> m)
    width = e - m
    return ((1 << m) + (k % (1 << m))) << width, width


# ---------------------------------------------------------------------------------------------
# §6.6 frequency tables and §6.6.1 probability tables


def frequency_table(payload: Window, element: str, max_alphabet: int, lim: dict) -> list[int] | None:
    """Returns the CDF ``cdf[0..n]``, or None for a one-symbol table."""
    n = payload.u16(f"{element}.alphabet_size")
    if not 1 <= n <= max_alphabet:
        raise malformed(f"{element}.alphabet_size", f"{n} outside 1..{max_alphabet}")
    if n > lim["max_alphabet_size"]:
        raise limit_error(f"{element}.alphabet_size", f"{n} symbols")
    if n == 1:
        return None
    bits = payload.u8(f"{element}.frequency_bits")
    if not 1 <= bits <= 24:
        raise malformed(f"{element}.frequency_bits", f"{bits} outside 1..24")
    packed = payload.take(ceil_div(n * bits, 8), f"{element}.frequencies")
    if not padding_is_zero(packed, n * bits):
        raise malformed(f"{element}.frequencies", "padding bits set")
    reader = BitReader(packed)
    f = [reader.read(bits) for _ in range(n)]
    if not any(f):
        raise malformed(f"{element}.frequencies", "all frequencies are zero")
    total = (1 << 24) - n
    big = sum(f)
    w = [fi * total // big for fi in f]
    k = f.index(max(f))
    w[k] += total - sum(w)
    cdf = [0]
    for wi in w:
        cdf.append(cdf[-1] + wi + 1)
    assert cdf[-1] == 1 << 24
    return cdf


# ---------------------------------------------------------------------------------------------
# §6.9 range decoder

MASK64 = (1 << 64) - 1


class RangeDecoder:
    def __init__(self, words: list[int], element: str):
        self.words, self.element = words, element
        self.initialised = False
        self.next_word = 0
        self.reads = 0

    def read_word(self) -> int:
        self.reads += 1
        if self.next_word < len(self.words):
            self.next_word += 1
            return self.words[self.next_word - 1]
        return 0

    def _initialise(self) -> None:
        self.initialised = True
        self.lower = 0
        self.range = MASK64
        self.point = self.read_word() << 32
        self.point |= self.read_word()

    def step(self, cdf: list[int]) -> int:
        if not self.initialised:
            self._initialise()
        scale = self.range >> 24
        quantile = ((self.point - self.lower) & MASK64) // scale
        if quantile >= 1 << 24:
            raise malformed(f"{self.element}.words", "quantile outside the probability range")
        lo, hi = 0, len(cdf) - 1  # cdf[lo] <= quantile < cdf[hi]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cdf[mid] <= quantile:
                lo = mid
            else:
                hi = mid
        s = lo
        self.lower = (self.lower + scale * cdf[s]) & MASK64
        self.range = scale * (cdf[s + 1] - cdf[s])
        if self.range < 1 << 32:
            self.lower = (self.lower << 32) & MASK64
            self.range <<= 32
            self.point = ((self.point << 32) & MASK64) | self.read_word()
        return s

    def symbols(self, count: int, cdf: list[int] | None) -> list[int]:
        """§6.5.1 "decode n symbols with table T"."""
        if count == 0:
            return []
        if cdf is None:
            return [0] * count
        return [self.step(cdf) for _ in range(count)]

    def end_check(self) -> None:
        """§6.9.4, after the plane's last decoding step: a decoder never initialised has no words;
        otherwise every word was read (reads past the end are allowed: they read zeros) and the
        point lies less than 2**33 - 1 above ``lower``. Raises ``malformed`` at ``P.word_count``."""
        element = f"{self.element}.word_count"
        if not self.initialised:
            if self.words:
                raise malformed(element, f"{len(self.words)} words, but no symbol was range-coded")
            return
        if self.reads < len(self.words):
            raise malformed(element, f"{len(self.words) - self.reads} of {len(self.words)} words left unread")
        if (self.point - self.lower) & MASK64 >= (1 << 33) - 1:
            raise malformed(element, "the point lies too far above lower after the last symbol")


# ---------------------------------------------------------------------------------------------
# §6.5 level_plane, §6.7 raw bits


def level_plane(payload: Window, plane: str, rows: int, cols: int, positions: Grid | list[tuple[int, int]],
                lim: dict) -> list[int]:
    """§6.5: the values of the plane's masked ``positions`` (given in scan order)."""
    value_count = payload.u32(f"{plane}.value_count")
    if value_count != len(positions):
        raise malformed(f"{plane}.value_count", f"{value_count}, the shape implies {len(positions)}")
    if value_count == 0:
        return []
    q = payload.u8(f"{plane}.direct_bits")
    if q > 8:
        raise malformed(f"{plane}.direct_bits", f"{q} > 8")
    m = payload.u8(f"{plane}.mantissa_bits")
    if m > min(4, q):
        raise malformed(f"{plane}.mantissa_bits", f"{m} > {min(4, q)}")
    row_class_count = payload.u8(f"{plane}.row_class_count")
    if not 1 <= row_class_count <= 64:
        raise malformed(f"{plane}.row_class_count", f"{row_class_count} outside 1..64")
    col_class_count = payload.u8(f"{plane}.col_class_count")
    if not 1 <= col_class_count <= 64:
        raise malformed(f"{plane}.col_class_count", f"{col_class_count} outside 1..64")
    row_table = (frequency_table(payload, f"{plane}.row_class_table", row_class_count, lim)
                 if row_class_count > 1 else None)
    col_table = (frequency_table(payload, f"{plane}.col_class_table", col_class_count, lim)
                 if col_class_count > 1 else None)
    context_count = row_class_count + col_class_count - 1
    alphabet = magnitude_alphabet(q, m)
    tables = [frequency_table(payload, f"{plane}.magnitude_table[{c}]", alphabet, lim)
              for c in range(context_count)]
    word_count = payload.u32(f"{plane}.word_count")
    if 4 * word_count > payload.remaining:
        raise DecodeError("truncated", f"{plane}.word_count", "words reach past the payload")
    raw_words = payload.take(4 * word_count, f"{plane}.words")
    words = [int.from_bytes(raw_words[4 * i:4 * i + 4], "little") for i in range(word_count)]
    raw_byte_count = payload.u32(f"{plane}.raw_byte_count")
    if raw_byte_count > payload.remaining:
        raise DecodeError("truncated", f"{plane}.raw_byte_count", "raw bits reach past the payload")
    raw_bits = payload.take(raw_byte_count, f"{plane}.raw_bits")

    # §6.5.1 decoding process
    decoder = RangeDecoder(words, plane)
    row_class = decoder.symbols(rows, row_table) if row_class_count > 1 else [0] * rows
    col_class = decoder.symbols(cols, col_table) if col_class_count > 1 else [0] * cols
    symbols = [0] * value_count
    for c, indices in enumerate(coding_order(positions, row_class, col_class, context_count)):
        for index, s in zip(indices, decoder.symbols(len(indices), tables[c]), strict=True):
            symbols[index] = s
    decoder.end_check()

    # §6.7 raw bits: escape positions by (symbol, scan index)
    values = [0] * value_count
    escapes = []
    for index, s in enumerate(symbols):
        base, width = symbol_base_and_width(s, q, m)
        values[index] = base
        if s >= (1 << q):
            escapes.append((s, index, width))
    escapes.sort()
    total_bits = sum(width for _, _, width in escapes)
    if raw_byte_count != ceil_div(total_bits, 8):
        raise malformed(f"{plane}.raw_byte_count", f"{raw_byte_count} bytes for {total_bits} raw bits")
    if not padding_is_zero(raw_bits, total_bits):
        raise malformed(f"{plane}.raw_bits", "padding bits set")
    reader = BitReader(raw_bits)
    for _, index, width in escapes:
        values[index] += reader.read(width)
    return values


def coding_order(positions: Grid | list[tuple[int, int]], row_class: list[int], col_class: list[int],
                 context_count: int) -> list[list[int]]:
    """§6.5.1 step 3: for each context ``c``, the indices into ``positions`` (the masked positions
    in scan order) of the positions with context ``c``, in coding order: by row class ascending,
    and in scan order among positions of the same row class."""
    by_context: list[list[tuple[int, int]]] = [[] for _ in range(context_count)]
    for index, (i, j) in enumerate(positions):
        by_context[row_class[i] + col_class[j]].append((row_class[i], index))
    return [[index for _, index in sorted(keyed)] for keyed in by_context]


# ---------------------------------------------------------------------------------------------
# §6.8 sign_section


def sign_section(payload: Window, section: str, bit_count: int) -> list[bool]:
    byte_count = payload.u32(f"{section}.sign_byte_count")
    if byte_count != ceil_div(bit_count, 8):
        raise malformed(f"{section}.sign_byte_count", f"{byte_count} bytes for {bit_count} signs")
    packed = payload.take(byte_count, f"{section}.sign_bits")
    if not padding_is_zero(packed, bit_count):
        raise malformed(f"{section}.sign_bits", "padding bits set")
    reader = BitReader(packed)
    return [reader.read(1) == 1 for _ in range(bit_count)]


# ---------------------------------------------------------------------------------------------
# §7 reconstruction and §7.3 canonical bytes


def integer_bytes(levels: list[int], dtype: str, item_size: int) -> bytes:
    """§7.1.1, §7.3: each element of an integer tensor is its level, in the dtype's little-endian
    encoding of ``item_size`` bytes (every level was checked to lie in the dtype's range)."""
    signed = INTEGER_RANGES[dtype][0] < 0
    return b"".join(level.to_bytes(item_size, "little", signed=signed) for level in levels)


def dependent_multiples(levels: list[int]) -> list[int]:
    """§7.1.2: each level L, in scan order, as the multiple of the step its state reads: 2L
    in states 0 and 1, 2L - sign(L) in states 2 and 3; the state starts at 0 every 64 positions
    and then follows DQ_NEXT_STATE by the parity of |L|."""
    multiples = []
    state = 0
    for index, level in enumerate(levels):
        if index % DQ_SEGMENT == 0:
            state = 0
        sign = (level > 0) - (level < 0)
        multiples.append(2 * level - (sign if state >= 2 else 0))
        state = DQ_NEXT_STATE[state][abs(level) & 1]
    return multiples


def reconstruct(levels: list[int], qp: int, density: int, dtype: str) -> bytes:
    """§7.1: float32(level) * float32(step), one binary32 rounding, then the dtype's rounding."""
    # int -> binary64 is exact (|level| < 2**32); binary64 -> binary32 rounds to nearest even.
    x = np.array(levels, dtype=np.float64).astype(np.float32)
    step = np.float32(step_of(qp, density))
    with np.errstate(over="ignore"):
        # x * step is exact in binary64; one rounding to binary32 gives the binary32 product.
        y = (x.astype(np.float64) * np.float64(step)).astype(np.float32)
        if dtype == "float32":
            return y.astype("<f4").tobytes()
        if dtype == "float64":
            return y.astype("<f8").tobytes()
        if dtype == "float16":
            return y.astype("<f2").tobytes()
    # bfloat16: round the binary32 pattern to its upper 16 bits, nearest, ties to even
    b = y.view(np.uint32).astype(np.uint64)
    bits = (b + 0x7FFF + ((b >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    return bits.astype("<u2").tobytes()


# ---------------------------------------------------------------------------------------------
# conformance suite runner


def check_suite(directory: Path, *, verbose: bool = True) -> int:
    """Check every entry of ``valid/manifest.json`` and ``invalid/manifest.json``; returns failures."""
    failures = 0
    for group in ("valid", "invalid"):
        manifest = json.loads((directory / group / "manifest.json").read_text(encoding="utf-8"))
        for entry in manifest["streams"]:
            problem = check_entry(directory / group, entry)
            failures += problem is not None
            if verbose:
                print(f"{'FAIL' if problem else 'ok  '} {group}/{entry['file']}" + (f": {problem}" if problem else ""))
    return failures


def check_entry(folder: Path, entry: dict) -> str | None:
    data = (folder / entry["file"]).read_bytes()
    files: list = []
    try:
        tensors = decode(data, entry.get("limits"), files)
    except DecodeError as exc:
        if "error" not in entry:
            return f"rejected: {exc}"
        want = entry["error"]
        if (exc.category, exc.element) != (want["category"], want["element"]):
            return f"expected {want['category']} at {want['element']}, got {exc}"
        return None
    if "error" in entry:
        return f"accepted, expected {entry['error']['category']} at {entry['error']['element']}"
    got = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "sha256": t.sha256} for t in tensors]
    want = [{k: t[k] for k in ("name", "dtype", "shape", "sha256")} for t in entry["tensors"]]
    if got != want:
        for g, w in zip(got, want, strict=False):
            if g != w:
                return f"tensor {w['name']!r}: expected {w}, got {g}"
        return f"{len(got)} tensors decoded, {len(want)} expected"
    got_files = [{"path": path, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
                 for path, content in files]
    if got_files != entry.get("attached_files", []):
        return f"attached files: expected {entry.get('attached_files', [])}, got {got_files}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a stream, or with --suite a conformance directory")
    parser.add_argument("--suite", action="store_true", help="check a conformance suite")
    args = parser.parse_args(argv)
    if args.suite:
        failures = check_suite(Path(args.path))
        print(f"{failures} failure(s)")
        return 1 if failures else 0
    try:
        tensors = decode(Path(args.path).read_bytes())
    except DecodeError as exc:
        print(f"rejected: {exc}")
        return 1
    for t in tensors:
        alias = f"\talias of {t.alias_of}" if t.alias_of is not None else ""
        print(f"{t.name}\t{t.dtype}{list(t.shape)}\t{t.coding_mode}\t{t.sha256}{alias}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
