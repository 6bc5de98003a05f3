"""Constants of the bitstream format: magic, version, enumerations and limits.

Each value cites the section of ``spec/bitstream.md`` that defines it. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

# §4.1: PNG-style signature. 0x89 is not ASCII (catches 7-bit transports), CR LF and LF catch
# newline translation, 0x1A stops `type` on DOS-like systems.
MAGIC = b"\x89NNU\r\n\x1a\n"
VERSION_MAJOR = 5  # the newest major version this package reads and writes (§10)
VERSION_MINOR = 0
SUPPORTED_MAJORS = (2, 3, 4, 5)  # 2.x, 3.x and 4.x differ from 5.0 as the table in §4.1 says
# Without digests the encoder writes the lowest of these that its streams need (§10):
PLAIN_MAJOR = 2  # no tensor may use dependent quantization
DEPENDENT_MAJOR = 3  # quant_flags (§6.1): dependent quantization (§7.1.2)
INTEGRITY_MAJOR = 4  # content digests (§5.2, §7.4) and the STREAM_END unit (§5.8)
ALIAS_MAJOR = 5  # alias names in the tensor header (§5.2): tied weights coded once
QUANT_FLAG_DEPENDENT = 0x01  # §6.1 quant_flags bit 0: dependent quantization (§7.1.2)

FILE_HEADER_SIZE = len(MAGIC) + 4  # magic, major, minor, header_flags (§4.1)
UNIT_HEADER_SIZE = 6  # unit_type u8, unit_flags u8, payload_length u32 (§4.2)
UNIT_CRC_SIZE = 4

UNIT_FLAG_ANCILLARY = 0x01  # §4.2: a decoder that does not know the unit type skips it


class UnitType(enum.IntEnum):
    """§4.2 unit_type values. Other values are unknown (skipped if ancillary, else rejected)."""

    MODEL_HEADER = 1
    TENSOR = 2
    ATTACHED_FILE = 3  # §5.7, format 3.1: always ancillary
    STREAM_END = 4  # §5.8, format 4.0: critical, the last unit


ATTACHMENT_VERSION = (3, 1)  # the first version that defines ATTACHED_FILE units (§4.3 rule 4)
DIGEST_SIZE = 32  # SHA-256 (Appendix A): content_digest, model_digest, stream_digest
STREAM_END_SIZE = 4 + 2 * DIGEST_SIZE  # unit_count, model_digest, stream_digest (§5.8)
MAX_PATH_COMPONENTS = 8  # §5.7


class DType(enum.IntEnum):
    """§5.2 dtype values: the tensor's element type."""

    FLOAT32 = 1
    FLOAT16 = 2
    BFLOAT16 = 3
    FLOAT64 = 4
    INT8 = 5
    INT16 = 6
    INT32 = 7
    INT64 = 8
    UINT8 = 9
    BOOL = 10
    UINT16 = 11
    UINT32 = 12
    UINT64 = 13


# Bytes per element as stored in RAW mode (§5.4).
DTYPE_ITEMSIZE = {
    DType.FLOAT32: 4, DType.FLOAT16: 2, DType.BFLOAT16: 2, DType.FLOAT64: 8,
    DType.INT8: 1, DType.INT16: 2, DType.INT32: 4, DType.INT64: 8,
    DType.UINT8: 1, DType.BOOL: 1, DType.UINT16: 2, DType.UINT32: 4, DType.UINT64: 8,
}

# The numpy dtype a decoded tensor is returned in (§7.3). bfloat16 has no numpy type: it is
# widened exactly to float32; DecodedTensor.dtype keeps the stored type.
DTYPE_NUMPY = {
    DType.FLOAT32: np.dtype("<f4"), DType.FLOAT16: np.dtype("<f2"),
    DType.BFLOAT16: np.dtype("<f4"), DType.FLOAT64: np.dtype("<f8"),
    DType.INT8: np.dtype("i1"), DType.INT16: np.dtype("<i2"), DType.INT32: np.dtype("<i4"),
    DType.INT64: np.dtype("<i8"), DType.UINT8: np.dtype("u1"), DType.BOOL: np.dtype("?"),
    DType.UINT16: np.dtype("<u2"), DType.UINT32: np.dtype("<u4"), DType.UINT64: np.dtype("<u8"),
}

# Names used by the CLI, checkpoints and error messages.
DTYPE_NAMES = {
    DType.FLOAT32: "float32", DType.FLOAT16: "float16", DType.BFLOAT16: "bfloat16",
    DType.FLOAT64: "float64", DType.INT8: "int8", DType.INT16: "int16", DType.INT32: "int32",
    DType.INT64: "int64", DType.UINT8: "uint8", DType.BOOL: "bool", DType.UINT16: "uint16",
    DType.UINT32: "uint32", DType.UINT64: "uint64",
}
DTYPE_BY_NAME = {name: dtype for dtype, name in DTYPE_NAMES.items()}

FLOAT_DTYPES = frozenset({DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64})


class CodingMode(enum.IntEnum):
    """§5.3 coding_mode values."""

    RAW = 0
    DENSE = 1
    UNIFIED = 2


class BlockKind(enum.IntEnum):
    """§6.3 block kinds as coded in the block map.

    DENSE is 0 so that the map of an unstructured tensor is a constant plane, which costs no
    coded bits and no decoding work.
    """

    DENSE = 0
    UNIFIED = 1
    PRUNED = 2


class OffsetMode(enum.IntEnum):
    """§6.10 what is added to the dense levels: nothing, or one offset per matrix column."""

    NONE = 0
    COLUMN = 1


# §6.1 quantization: qp_density range and the range of the step's binary exponent, chosen so
# that every step is a normal, finite float32 and every product level*step is one rounding.
MAX_QP_DENSITY = 4
MIN_STEP_EXPONENT = -126
MAX_STEP_EXPONENT = 100

# §6.4 magnitude binarization.
MAX_DIRECT_BITS = 8
MAX_MANTISSA_BITS = 4
MAX_MAGNITUDE_EXPONENT = 30  # magnitudes are < 2**31
MAX_CLASS_COUNT = 64  # row_class_count / col_class_count (§6.5)

# §6.6 frequency tables.
PROBABILITY_BITS = 24
MAX_FREQUENCY_BITS = 24


@dataclasses.dataclass(frozen=True)
class Limits:
    """Decoder limits (§8). Each is checked before memory is allocated from a declared size.

    The defaults suit a desktop; a device integrator tightens them, e.g.
    ``Limits(max_total_output_bytes=64 << 20)``. A stream that exceeds a limit raises
    :class:`LimitExceededError`; it is not malformed, only too large for this decoder.
    """

    max_ndim: int = 8
    max_elements_per_tensor: int = 1 << 32
    max_total_output_bytes: int = 1 << 36
    max_name_length: int = 1024
    max_tensor_count: int = 1 << 20
    max_alphabet_size: int = 1024

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{field.name} must be a positive integer, got {value!r}")
        if self.max_ndim > 64:  # the format allows 255 (one byte); an integrator MAY tighten it (§8)
            raise ValueError("Limits.max_ndim cannot exceed 64 in this decoder (numpy arrays have at most 64 "
                             "dimensions)")
        if self.max_name_length > 65535:
            raise ValueError("Limits.max_name_length cannot exceed 65535 (the field is u16)")


DEFAULT_LIMITS = Limits()
