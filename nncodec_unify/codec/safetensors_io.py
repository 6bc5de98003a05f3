"""Reading and writing ``.safetensors`` files with numpy alone (no torch).

The format is an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the data. The ``safetensors`` package's numpy API cannot hold
bfloat16 (numpy has no such type) and turns 0-dim arrays into 1-D ones, and its torch API
imports torch, which a device's decode-only install does not have; so the codec reads and
writes the format itself. Reading is lazy: the file is memory-mapped and a tensor is a view of
it, so an encoder taking tensors one at a time holds one tensor, not the model.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from .errors import NncodecError
from .format import DType
from .integrity import canonical_bytes, canonical_pieces
from .memory import FileMapping, map_file
from .tensors import BFloat16Array

# safetensors dtype names <-> the stream's dtypes and numpy's little-endian types
_NUMPY_OF = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
             "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_NAME_OF = {DType.FLOAT64: "F64", DType.FLOAT32: "F32", DType.FLOAT16: "F16", DType.BFLOAT16: "BF16",
            DType.INT64: "I64", DType.INT32: "I32", DType.INT16: "I16", DType.INT8: "I8", DType.UINT64: "U64",
            DType.UINT32: "U32", DType.UINT16: "U16", DType.UINT8: "U8", DType.BOOL: "BOOL"}
_MAX_HEADER = 100 << 20  # the safetensors package's own limit
METADATA = "__metadata__"


class SafetensorsError(NncodecError, ValueError):
    """A file that is not a well-formed safetensors file."""


class UnsupportedDtypeError(SafetensorsError):
    """A tensor of a dtype the codec does not code (float8, say): the file may be well formed."""


class SafetensorsFile(Mapping):
    """The tensors of a safetensors file by name, in file order, each a read-only view of the
    memory-mapped file (numpy arrays, 0-dim shapes kept; bfloat16 as :class:`BFloat16Array`).

    Nothing is read until a tensor's values are used, and the system may drop the pages
    again (:func:`~nncodec_unify.codec.memory.release_pages`): an encoder that takes the
    tensors one at a time holds about one tensor. The header is validated whole when the file
    is opened; a file that shrinks afterwards is reported when a tensor is looked up (one
    truncated while a tensor is being read would end the process with SIGBUS, as with any
    memory-mapped file: do not rewrite a model while it is being encoded).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._entries, self._data_start = _read_header(self.path)
        self._size = self._data_start + max((start + length for _, _, start, length in self._entries.values()),
                                            default=0)
        self._mapping: FileMapping | bytes | None = None

    def __getitem__(self, name: str) -> np.ndarray | BFloat16Array:
        dtype, shape, start, length = self._entries[name]
        if self._mapping is None:
            try:
                with open(self.path, "rb") as file:
                    self._mapping = map_file(file) if self._size else b""
            except (OSError, ValueError) as exc:
                raise SafetensorsError(f"{self.path}: cannot map the file ({exc})") from None
        # a mapped file that shrinks would crash the process on access (SIGBUS), not raise;
        # size() asks the mapped file itself, not whatever the path names now
        if len(self._mapping) < self._size or (self._size and self._mapping.size() < self._size):
            raise SafetensorsError(f"{self.path}: tensor {name!r} is cut short (the file changed?)")
        count = math.prod(shape)
        if count == 0:
            array = np.empty(shape, dtype=np.dtype(_NUMPY_OF[dtype]))
            return BFloat16Array(array) if dtype == "BF16" else array
        array = np.frombuffer(self._mapping, dtype=np.dtype(_NUMPY_OF[dtype]), count=count,
                              offset=self._data_start + start).reshape(shape)
        return BFloat16Array(array) if dtype == "BF16" else array

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]


def read_safetensors(path: str | os.PathLike) -> SafetensorsFile:
    """The tensors of a safetensors file (see :class:`SafetensorsFile`). Raises
    :class:`SafetensorsError` naming the file and the problem for a malformed file."""
    return SafetensorsFile(path)


def _read_header(path: Path) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], int]:
    """Each tensor's (dtype name, shape, data offset, byte length) and where the data begin."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        header_length = int.from_bytes(prefix, "little")
        if header_length > min(_MAX_HEADER, size - 8):
            raise SafetensorsError(f"{path}: header length {header_length} exceeds the file")
        try:
            header = json.loads(file.read(header_length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SafetensorsError(f"{path}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    start = 8 + header_length
    entries = {}
    for name, info in header.items():
        if name != METADATA:
            entries[name] = _entry(path, name, info, size - start)
    return entries, start


def _entry(path: Path, name: str, info: object, data_size: int) -> tuple[str, tuple[int, ...], int, int]:
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise SafetensorsError(f"{where}: entry lacks dtype, shape or data_offsets")
    kind, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if kind not in _NUMPY_OF:
        raise UnsupportedDtypeError(f"{where}: dtype {kind!r} is not supported (only {', '.join(_NUMPY_OF)})")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise SafetensorsError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size):
        raise SafetensorsError(f"{where}: data_offsets {offsets!r} lie outside the file's data")
    if offsets[1] - offsets[0] != math.prod(shape) * np.dtype(_NUMPY_OF[kind]).itemsize:
        raise SafetensorsError(f"{where}: {offsets[1] - offsets[0]} bytes for shape {shape} of {kind}")
    return kind, tuple(shape), offsets[0], offsets[1] - offsets[0]


def write_safetensors(file, tensors: Iterable[tuple[str, np.ndarray, DType]],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write ``(name, array, dtype)`` triples to the open binary ``file`` as safetensors.

    ``array`` holds the values in the numpy type of ``dtype``; bfloat16 as float32 arrays of
    exact bfloat16 values (as the decoder returns them). Shapes are kept exactly, 0-dim
    included. ``metadata`` goes to the header (``{"format": "pt"}`` by default, which
    ``transformers`` expects). Tensors are written in the given order.
    """
    entries = list(tensors)
    write_safetensors_header(file, [(name, array.shape, dtype) for name, array, dtype in entries], metadata)
    for _, array, dtype in entries:
        for piece in tensor_pieces(array, dtype):
            file.write(piece)


def write_safetensors_header(file, entries: Iterable[tuple[str, tuple[int, ...], DType]],
                             metadata: Mapping[str, str] | None = None) -> list[int]:
    """The header for tensors ``(name, shape, dtype)`` whose data will follow in this order,
    each as :func:`tensor_bytes` gives it: lets a writer stream tensors one at a time.
    Returns where each tensor's data starts in the file, header included."""
    header: dict[str, object] = {METADATA: dict(metadata or {"format": "pt"})}
    offset = 0
    starts = []
    for name, shape, dtype in entries:
        if name == METADATA:
            raise SafetensorsError(f"a tensor is named {METADATA!r}, which safetensors reserves")
        length = math.prod(shape) * np.dtype(_NUMPY_OF[_NAME_OF[dtype]]).itemsize
        header[name] = {"dtype": _NAME_OF[dtype], "shape": list(shape), "data_offsets": [offset, offset + length]}
        starts.append(offset)
        offset += length
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    file.write(len(encoded).to_bytes(8, "little"))
    file.write(encoded)
    return [8 + len(encoded) + start for start in starts]


def write_tensor_at(places: Iterable[tuple[str, int]], array: np.ndarray, dtype: DType, *,
                    crc32: bool = False) -> int | None:
    """Write a tensor's data as :func:`tensor_bytes` gives it into existing files, at each
    distinct ``(path, offset)`` of ``places``, with positional writes: other processes may be
    writing other parts of those files meanwhile. A piece at a time (bfloat16 converted piece
    by piece). Returns the CRC-32 of the data with ``crc32``, else None."""
    crc = 0 if crc32 else None
    for number, (path, offset) in enumerate(dict.fromkeys(places)):
        handle = os.open(path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        try:
            for piece in tensor_pieces(array, dtype):
                piece = memoryview(piece).cast("B")
                if crc is not None and number == 0:
                    crc = zlib.crc32(piece, crc)
                while piece:
                    written = os.pwrite(handle, piece, offset)
                    offset += written
                    piece = piece[written:]
        finally:
            os.close(handle)
    return crc


def tensor_bytes(array: np.ndarray, dtype: DType) -> memoryview:
    """A tensor's data as safetensors stores it, which is its canonical bytes (spec §7.3:
    little-endian; bfloat16 as its bit patterns): a view of ``array`` when it is already laid
    out so, not a copy of a large tensor."""
    return canonical_bytes(_in_stored_type(array, dtype), dtype)


def tensor_pieces(array: np.ndarray, dtype: DType) -> Iterator[memoryview]:
    """:func:`tensor_bytes` as consecutive pieces, converted a piece at a time where they need
    converting (bfloat16's bit patterns, a big-endian array): a large tensor is never copied
    whole."""
    return canonical_pieces(_in_stored_type(array, dtype), dtype)


def _in_stored_type(array: np.ndarray, dtype: DType) -> np.ndarray:
    """``array`` as numbers of ``dtype``'s numpy type (bfloat16: float32), converted only if
    it holds another type."""
    numbers = np.dtype(np.float32 if dtype == DType.BFLOAT16 else _NUMPY_OF[_NAME_OF[dtype]])
    array = np.asarray(array)
    return array if array.dtype.newbyteorder("=") == numbers.newbyteorder("=") else array.astype(numbers)
