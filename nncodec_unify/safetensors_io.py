"""Reading and writing ``.safetensors`` files with numpy alone (no torch).

The format is an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the data. The ``safetensors`` package's numpy API cannot hold
bfloat16 (numpy has no such type) and turns 0-dim arrays into 1-D ones, and its torch API
imports torch, which a device's decode-only install does not have; so the codec reads and
writes the format itself. Reading memory-maps the file: a tensor's bytes are read when it is
converted, one tensor at a time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .errors import NncodecError
from .format import DType
from .tensors import BFloat16Array, float32_to_bfloat16_bits

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


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray | BFloat16Array]:
    """The tensors of a safetensors file, by name in file order: read-only numpy arrays mapped
    from the file (0-dim shapes kept), bfloat16 ones as :class:`BFloat16Array`.

    Raises :class:`SafetensorsError` naming the file and the problem for a malformed file.
    """
    path = Path(path)
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
    data = (np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(size - start,))
            if size > start else np.zeros(0, dtype=np.uint8))
    tensors: dict[str, np.ndarray | BFloat16Array] = {}
    for name, info in header.items():
        if name == METADATA:
            continue
        tensors[name] = _tensor(path, name, info, data)
    return tensors


def _tensor(path: Path, name: str, info: object, data: np.ndarray) -> np.ndarray | BFloat16Array:
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise SafetensorsError(f"{where}: entry lacks dtype, shape or data_offsets")
    kind, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if kind not in _NUMPY_OF:
        raise SafetensorsError(f"{where}: dtype {kind!r} is not supported")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise SafetensorsError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data.size):
        raise SafetensorsError(f"{where}: data_offsets {offsets!r} lie outside the file's data")
    dtype = np.dtype(_NUMPY_OF[kind])
    if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize:
        raise SafetensorsError(f"{where}: {offsets[1] - offsets[0]} bytes for shape {shape} of {kind}")
    array = data[offsets[0]:offsets[1]].view(dtype).reshape(shape)
    return BFloat16Array(array) if kind == "BF16" else array


def write_safetensors(file, tensors: Iterable[tuple[str, np.ndarray, DType]],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write ``(name, array, dtype)`` triples to the open binary ``file`` as safetensors.

    ``array`` holds the values in the numpy type of ``dtype``; bfloat16 as float32 arrays of
    exact bfloat16 values (as the decoder returns them). Shapes are kept exactly, 0-dim
    included. ``metadata`` goes to the header (``{"format": "pt"}`` by default, which
    ``transformers`` expects). Tensors are written in the given order.
    """
    entries = list(tensors)
    header: dict[str, object] = {METADATA: dict(metadata or {"format": "pt"})}
    offset = 0
    for name, array, dtype in entries:
        if name == METADATA:
            raise SafetensorsError(f"a tensor is named {METADATA!r}, which safetensors reserves")
        length = array.size * np.dtype(_NUMPY_OF[_NAME_OF[dtype]]).itemsize
        header[name] = {"dtype": _NAME_OF[dtype], "shape": list(array.shape), "data_offsets": [offset, offset + length]}
        offset += length
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    file.write(len(encoded).to_bytes(8, "little"))
    file.write(encoded)
    for _, array, dtype in entries:
        file.write(_little_endian_bytes(array, dtype))


def _little_endian_bytes(array: np.ndarray, dtype: DType) -> bytes:
    if dtype == DType.BFLOAT16:
        return float32_to_bfloat16_bits(array).astype("<u2").tobytes()
    target = np.dtype(_NUMPY_OF[_NAME_OF[dtype]])
    return np.asarray(array, dtype=target).tobytes()
