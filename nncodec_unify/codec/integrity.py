"""Digests of format 4.0 (spec §5.8, §7.3, §7.4): what lets a decoder prove its own result.

A tensor's *content digest* is the SHA-256 of its canonical bytes; the *model digest* hashes
every tensor's record (name, dtype, shape, content digest) in stream order; the *stream
digest* hashes every byte before the STREAM_END unit. SHA-256 because conformance already
hashes canonical bytes with it, it is in every standard library, and CPUs with SHA
instructions (x86 SHA-NI, ARMv8 crypto) hash about 1 GB/s on one core.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from .format import DType
from .tensors import find_ties, float32_to_bfloat16_bits, to_numpy


def canonical_bytes(array: np.ndarray, dtype: DType) -> memoryview:
    """Spec §7.3: the elements in C order, little-endian, in the stored dtype; bfloat16 (which
    decoders return widened to float32) as its 16-bit patterns, bool one byte each. A view of
    ``array`` when it is already laid out so (no copy of a large tensor)."""
    if dtype == DType.BFLOAT16:  # widened exactly: the low 16 bits are zero
        array = float32_to_bfloat16_bits(array).astype("<u2", copy=False)
    else:
        array = np.ascontiguousarray(array)
        if not _little_endian(array.dtype):
            array = array.astype(array.dtype.newbyteorder("<"))
    return memoryview(array.reshape(-1).view(np.uint8))


def _little_endian(dtype: np.dtype) -> bool:
    """Whether elements of ``dtype`` are laid out little-endian (or are single bytes). A
    native type reports its order as "=", so "not '>'" would pass big-endian bytes on a
    big-endian machine."""
    return dtype.newbyteorder("<") == dtype


_PIECE = 1 << 20  # elements converted at a time by canonical_pieces


def canonical_pieces(array: np.ndarray, dtype: DType) -> Iterator[memoryview]:
    """:func:`canonical_bytes` as consecutive pieces: one view when ``array`` is laid out so
    already, else converted 2**20 elements at a time (bfloat16, big-endian), so that a large
    tensor is never copied whole. (Safetensors stores exactly these bytes.)"""
    array = np.asarray(array)
    if array.size == 0 or (dtype != DType.BFLOAT16 and array.flags.c_contiguous and _little_endian(array.dtype)):
        yield canonical_bytes(array, dtype)
        return
    flat = array.reshape(-1)
    for start in range(0, flat.size, _PIECE):
        yield canonical_bytes(flat[start:start + _PIECE], dtype)


def content_digest(array: np.ndarray, dtype: DType) -> bytes:
    """The 32-byte SHA-256 of the canonical bytes of a tensor of stored type ``dtype``."""
    hasher = hashlib.sha256()
    for piece in canonical_pieces(array, dtype):
        hasher.update(piece)
    return hasher.digest()


def tensor_record(name: str, dtype: DType, shape: tuple[int, ...], digest: bytes) -> bytes:
    """§5.8 tensor_record: the tensor header without coding_mode, then the content digest."""
    encoded = name.encode("utf-8")
    return (struct.pack(f"<H{len(encoded)}sBB{len(shape)}I", len(encoded), encoded, int(dtype), len(shape), *shape)
            + digest)


def model_digest(records: Iterable[tuple[str, DType, tuple[int, ...], bytes]]) -> bytes:
    """§5.8 model_digest of ``(name, dtype, shape, content_digest)`` in stream order: a
    fingerprint of the decoded model, the same however it was coded."""
    hasher = hashlib.sha256()
    for name, dtype, shape, digest in records:
        hasher.update(tensor_record(name, dtype, shape, digest))
    return hasher.digest()


def model_digest_of(tensors: Mapping[str, object]) -> bytes:
    """The model digest (spec §5.8) of ``{name: array}`` in mapping order — numpy arrays or
    torch tensors, as :func:`nncodec_unify.encode` takes them. Equal to the digest a stream of
    these tensors carries when it codes them losslessly (RAW, or values on the grid).

    Of the tensors decoded from a stream ``s`` of format 4.0 or 5.0 it gives the digest ``s``
    carries, ``decode_tensors(s).model_digest`` (None for 2.x and 3.x streams, which carry
    none), so a deployment can pin a model — provided the tensors keep their stored dtypes:
    always for ``decode(s, framework="pt")``, but for ``decode(s)`` (numpy) only when ``s``
    holds no bfloat16 tensor, as :func:`~.decoder.decode` widens bfloat16 to float32 and the
    digest then hashes float32 values under dtype float32:

    >>> import numpy as np, nncodec_unify as nu
    >>> from nncodec_unify.codec.tensors import BFloat16Array
    >>> s = nu.encode({"w": np.ones((2, 2), np.float32)})
    >>> model_digest_of(nu.decode(s)) == nu.decode_tensors(s).model_digest
    True
    >>> s = nu.encode({"w": BFloat16Array(np.full((2, 2), 0x3F80, np.uint16))})  # bfloat16 ones
    >>> model_digest_of(nu.decode(s)) == nu.decode_tensors(s).model_digest
    False

    Tied weights are where a stream puts them (format 5.0): each alias right after the first
    name of its tensor."""
    ties = find_ties(tensors)
    records: dict[str, list] = {}  # first name -> its records, the aliases' after its own
    for name, value in tensors.items():
        if name in ties:
            continue
        array, dtype = to_numpy(name, value)
        records[name] = [(name, dtype, tuple(array.shape), content_digest(array, dtype))]
    for alias, target in ties.items():
        records[target].append((alias, *records[target][0][1:]))
    return model_digest(record for group in records.values() for record in group)
