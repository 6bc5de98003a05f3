"""nncodec_unify: micro-structured weight unification and pruning, and a codec for the result.

The decode path (``decode``, ``decode_tensors``) needs only numpy and constriction; torch is
imported lazily, and only on the encoder and training side.
"""

from .checkpoint import decode_file, encode_file
from .config import EncoderConfig, TensorRule
from .decoder import DecodedModel, DecodedTensor, decode, decode_tensors
from .encoder import EncodeResult, TensorReport, encode, encode_with_report
from .errors import (
    BitstreamError,
    ChecksumError,
    EncodeError,
    LimitExceededError,
    NncodecError,
    TruncatedError,
    UnsupportedVersionError,
)
from .format import VERSION_MAJOR, VERSION_MINOR, BlockKind, CodingMode, DType, Limits

__version__ = "0.3.0"

__all__ = [
    "BitstreamError", "BlockKind", "ChecksumError", "CodingMode", "DType", "DecodedModel",
    "DecodedTensor", "EncodeError", "EncodeResult", "EncoderConfig", "LimitExceededError", "Limits",
    "NncodecError", "TensorReport", "TensorRule", "TruncatedError", "UnsupportedVersionError",
    "VERSION_MAJOR", "VERSION_MINOR", "decode", "decode_file", "decode_tensors", "encode", "encode_file",
    "encode_with_report",
]
