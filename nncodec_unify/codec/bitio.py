"""Bounds-checked little-endian byte reader and writer (spec §3.2 descriptors).

Every read names the syntax element it reads, so a short stream raises a
:class:`TruncatedError` that says which element was cut and where.
"""

from __future__ import annotations

import struct

import numpy as np

from .errors import BitstreamError, TruncatedError

_U16 = struct.Struct("<H")
_I16 = struct.Struct("<h")
_U32 = struct.Struct("<I")


class ByteReader:
    """Reads spec descriptors from ``data[start:end]``; offsets are absolute in ``data``, or,
    when ``data`` is a piece of a stream that starts at stream offset ``origin``, in the
    stream (a worker process decoding one payload reports where an error is in the file)."""

    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None, *, origin: int = 0):
        self._data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        self._pos = start
        self._end = len(data) if end is None else end
        self._origin = origin

    @property
    def offset(self) -> int:
        """Absolute offset of the next unread byte."""
        return self._origin + self._pos

    def skip_to_end(self) -> None:
        """Consume the rest of the window unread (another reader interprets it)."""
        self._pos = self._end

    @property
    def remaining(self) -> int:
        """Bytes left before the end of this reader's window."""
        return self._end - self._pos

    def _take(self, n: int, element: str) -> int:
        if n < 0 or n > self._end - self._pos:
            raise TruncatedError(
                f"needs {n} bytes but only {self._end - self._pos} remain",
                element=element, offset=self.offset,
            )
        start = self._pos
        self._pos += n
        return start

    def u8(self, element: str) -> int:
        """u(8): one unsigned byte."""
        return self._data[self._take(1, element)]

    def u16(self, element: str) -> int:
        """u(16): unsigned, little-endian."""
        return _U16.unpack_from(self._data, self._take(2, element))[0]

    def i16(self, element: str) -> int:
        """i(16): two's complement, little-endian."""
        return _I16.unpack_from(self._data, self._take(2, element))[0]

    def u32(self, element: str) -> int:
        """u(32): unsigned, little-endian."""
        return _U32.unpack_from(self._data, self._take(4, element))[0]

    def bytes(self, n: int, element: str) -> bytes:
        """b(n): ``n`` raw bytes."""
        start = self._take(n, element)
        return bytes(self._data[start:start + n])

    def view(self, n: int, element: str) -> memoryview:
        """b(n) without copying."""
        start = self._take(n, element)
        return memoryview(self._data)[start:start + n]

    def expect_end(self, element: str) -> None:
        """Raise unless every byte of the window was consumed (no trailing data)."""
        if self._pos != self._end:
            raise BitstreamError(
                f"{self._end - self._pos} unexpected trailing bytes", element=element,
                offset=self.offset,
            )


class ByteWriter:
    """Appends spec descriptors to a growing buffer."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _append(self, b: bytes) -> None:
        self._parts.append(b)
        self._size += len(b)

    def u8(self, value: int) -> None:
        self._append(bytes((value,)))

    def u16(self, value: int) -> None:
        self._append(_U16.pack(value))

    def i16(self, value: int) -> None:
        self._append(_I16.pack(value))

    def u32(self, value: int) -> None:
        self._append(_U32.pack(value))

    def bytes(self, value: bytes | bytearray | memoryview) -> None:
        self._append(bytes(value))

    def array(self, values: np.ndarray) -> None:
        """The bytes of a C-contiguous array, appended without copying them: the array must
        not change until :meth:`getvalue`."""
        self._append(memoryview(np.ascontiguousarray(values)).cast("B"))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def pack_fields(values: np.ndarray, width: int) -> bytes:
    """Pack unsigned ``values`` as ``width``-bit fields, most significant bit first (§3.3).

    The last byte is padded with zero bits.
    """
    if width == 0 or values.size == 0:
        return b""
    values = np.asarray(values, dtype=np.uint64).ravel()
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    bits = ((values[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.ravel()).tobytes()


def unpack_fields(data: bytes | memoryview, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_fields`: ``count`` fields of ``width`` bits as uint64.

    The caller has checked that ``data`` holds exactly ``ceil(count * width / 8)`` bytes.
    """
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.uint64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * width)
    if width == 1:
        return bits.astype(np.uint64)
    weights = np.left_shift(np.uint64(1), np.arange(width - 1, -1, -1, dtype=np.uint64))
    return bits.reshape(count, width).astype(np.uint64) @ weights


def padding_is_zero(data: bytes | memoryview, used_bits: int) -> bool:
    """Whether the bits after the first ``used_bits`` of ``data`` are all zero (§3.3)."""
    if used_bits % 8 == 0:
        return True
    last = data[used_bits // 8]
    return last & ((1 << (8 - used_bits % 8)) - 1) == 0


class BitPacker:
    """Packs bits that arrive in pieces, most significant first: :meth:`getvalue` is
    ``np.packbits`` of their concatenation (the last byte zero-padded), while memory holds
    the packed bytes and fewer than 8 pending bits, not the concatenation."""

    def __init__(self):
        self._parts: list[bytes] = []
        self._pending = np.zeros(0, dtype=np.uint8)

    def add(self, bits: np.ndarray) -> None:
        """Append the 0/1 (or boolean) values of ``bits``, flat."""
        bits = np.concatenate([self._pending, bits.reshape(-1).astype(np.uint8, copy=False)])
        whole = bits.size - bits.size % 8
        self._parts.append(np.packbits(bits[:whole]).tobytes())
        self._pending = bits[whole:]

    def getvalue(self) -> bytes:
        return b"".join(self._parts) + np.packbits(self._pending).tobytes()


def unpack_bits(data: bytes | memoryview, start: int, count: int) -> np.ndarray:
    """Bits ``start`` to ``start + count`` of ``data`` (MSB first) as a uint8 array of 0/1,
    unpacking only the bytes that hold them."""
    first = start // 8
    octets = np.frombuffer(data, dtype=np.uint8, count=-(-(start + count) // 8) - first, offset=first)
    return np.unpackbits(octets, count=start % 8 + count)[start % 8:]
