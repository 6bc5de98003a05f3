"""Conversion of user tensors (numpy arrays, torch tensors) to the stream's element types.

Torch is never imported here: a torch tensor is recognised by its type's module and converted
through its own methods, so this module serves the torch-free decode path too. bfloat16 values
are carried as float32 arrays holding the exact widened values (§7.3).
"""

from __future__ import annotations

import dataclasses
import sys
import typing

import numpy as np

from .errors import EncodeError
from .format import DTYPE_NUMPY, DType

_NUMPY_TO_DTYPE = {np.dtype(v).newbyteorder("="): k for k, v in DTYPE_NUMPY.items() if k != DType.BFLOAT16}
_NUMPY_TO_DTYPE[np.dtype(np.float32)] = DType.FLOAT32


@dataclasses.dataclass(frozen=True)
class BFloat16Array:
    """bfloat16 values held as their uint16 bit patterns (numpy has no bfloat16 type), as
    read from a safetensors file without torch."""

    bits: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.bits.shape

    @property
    def size(self) -> int:
        return self.bits.size


def to_numpy(name: str, value) -> tuple[np.ndarray, DType]:
    """A C-contiguous native-endian numpy array and the stream dtype for ``value``.

    Accepts numpy arrays, numpy scalars, :class:`BFloat16Array` and torch tensors (any device;
    bfloat16 included, widened exactly to float32).
    """
    source, dtype = to_source(name, value)
    if isinstance(source, BFloat16Array):
        return bfloat16_bits_to_float32(source.bits), dtype
    return source, dtype


def to_source(name: str, value) -> tuple[np.ndarray | BFloat16Array, DType]:
    """:func:`to_numpy` without widening bfloat16: its bit patterns stay a
    :class:`BFloat16Array` of C-contiguous native uint16 (a view where the value allows), for
    a caller that widens a piece at a time or only for as long as it needs the values."""
    if isinstance(value, BFloat16Array):
        bits = np.asarray(value.bits)
        if bits.dtype.kind not in "ui" or bits.dtype.itemsize != 2:  # a float or a wider int would be cast
            raise EncodeError(f"tensor {name!r}: BFloat16Array bits must be 16-bit integers (uint16), "
                              f"got {bits.dtype}")
        return BFloat16Array(np.asarray(bits.view(np.uint16) if bits.dtype.kind == "i" else bits, dtype=np.uint16,
                                        order="C")), DType.BFLOAT16  # 0-dim kept
    if type(value).__module__.split(".")[0] == "torch":
        return _torch_source(name, value)
    array = np.asarray(value)
    dtype = _NUMPY_TO_DTYPE.get(array.dtype.newbyteorder("="))
    if dtype is None:
        raise EncodeError(f"tensor {name!r}: dtype {array.dtype} is not supported "
                          "(float16/32/64, bfloat16, int8-64, uint8-64 and bool are)")
    return np.asarray(array, dtype=array.dtype.newbyteorder("="), order="C"), dtype


def _torch_source(name: str, tensor) -> tuple[np.ndarray | BFloat16Array, DType]:
    tensor = tensor.detach().cpu()
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()
    dtype_name = str(tensor.dtype).removeprefix("torch.")
    if dtype_name == "bfloat16":
        bits = tensor.view(tensor.new_empty(0, dtype=_int16_of(tensor)).dtype).numpy().view(np.uint16)
        return BFloat16Array(bits), DType.BFLOAT16
    try:
        array = tensor.numpy()
    except (TypeError, RuntimeError) as exc:
        raise EncodeError(f"tensor {name!r}: dtype {tensor.dtype} is not supported ({exc})") from None
    return to_source(name, array)


def _int16_of(tensor):
    import torch  # only reached with a torch tensor in hand

    return torch.int16


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) exactly to float32 (one new array, no temporary)."""
    widened = np.asarray(bits).astype(np.uint32)
    widened <<= 16
    return widened.view(np.float32)


def float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """Bit patterns (native uint16, ``values``' shape) of float32 values that are exact
    bfloat16 values: the high half of each element, copied once (no 32-bit temporary)."""
    values = np.asarray(values, dtype=np.float32, order="C")  # ascontiguousarray would make 0-dim 1-D
    halves = values.reshape(-1).view(np.uint16).reshape(-1, 2)
    return np.ascontiguousarray(halves[:, 1 if sys.byteorder == "little" else 0]).reshape(values.shape)


def storage_key(value) -> tuple | None:
    """What identifies the elements a tensor reads: the address of its first element, its
    shape, strides and element type. Two values with equal keys are one tensor under two
    names (tied weights, such as a language model's input and output embeddings). None for
    an empty tensor and for anything whose memory is not known (a meta tensor, a list).

    An address identifies memory only while the value is alive: compare keys of values that
    are all held, such as those of a dict.
    """
    if isinstance(value, BFloat16Array):
        key = storage_key(value.bits)
        return None if key is None else ("bfloat16", *key)
    if type(value).__module__.split(".")[0] == "torch":
        try:
            if value.numel() == 0 or value.device.type == "meta":
                return None
            return ("torch", str(value.device), value.data_ptr(), tuple(value.shape), tuple(value.stride()),
                    str(value.dtype))
        except (AttributeError, RuntimeError, TypeError):
            return None
    if isinstance(value, np.ndarray) and value.size:
        return ("numpy", value.__array_interface__["data"][0], value.shape, value.strides, value.dtype.str)
    return None


@typing.runtime_checkable
class DeclaresTies(typing.Protocol):
    """A lazily read mapping of tensors that knows which names share a tensor: ``ties`` is
    ``{alias: first name}`` (a lazy projection of a tied model is one)."""

    @property
    def ties(self) -> dict[str, str]: ...


def find_ties(tensors) -> dict[str, str]:
    """``{alias: target}`` for the tensors of the dict ``tensors`` that are an earlier
    tensor under another name (equal :func:`storage_key`): each alias maps to the first name
    of its storage. Only a dict is searched, because its values are alive while it is; a
    lazily read mapping (a safetensors file, whose format has no shared tensors) has none,
    unless it declares them (:class:`DeclaresTies`)."""
    if not isinstance(tensors, dict):
        return dict(tensors.ties) if isinstance(tensors, DeclaresTies) else {}
    first: dict[tuple, str] = {}
    ties: dict[str, str] = {}
    for name, value in tensors.items():
        key = storage_key(value)
        if key is None:
            continue
        if key in first:
            ties[name] = first[key]
        else:
            first[key] = name
    return ties
