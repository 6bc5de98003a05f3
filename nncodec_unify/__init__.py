"""nncodec_unify: micro-structured weight unification and pruning, and a codec for the result.

The package has two halves: ``nncodec_unify.codec`` (the format, decoder and encoder:
numpy and constriction only, what a device needs) and ``nncodec_unify.method`` (the
unification/pruning method and its training, torch side). The public API below is the
codec's; the decode path (``decode``, ``decode_tensors``) never imports torch.
"""

from .codec.checkpoint import DecodedFiles, EncodedFile, decode_file, decode_to_file, encode_file
from .codec.config import EncoderConfig, TensorRule
from .codec.decoder import DecodedModel, DecodedTensor, decode, decode_tensors
from .codec.encoder import EncodeResult, TensorReport, encode, encode_with_report
from .codec.errors import (
    BitstreamError,
    ChecksumError,
    EncodeError,
    LimitExceededError,
    NncodecError,
    OutputExistsError,
    TruncatedError,
    UnsupportedVersionError,
)
from .codec.format import VERSION_MAJOR, VERSION_MINOR, BlockKind, CodingMode, DType, Limits
from .codec.integrity import model_digest_of

__version__ = "0.5.0"

__all__ = [
    "BitstreamError", "BlockKind", "ChecksumError", "CodingMode", "DType", "DecodedFiles", "DecodedModel",
    "DecodedTensor", "EncodeError", "EncodeResult", "EncodedFile", "EncoderConfig", "LimitExceededError", "Limits",
    "NncodecError", "OutputExistsError", "TensorReport", "TensorRule", "TruncatedError", "UnsupportedVersionError",
    "VERSION_MAJOR", "VERSION_MINOR", "decode", "decode_file", "decode_tensors", "decode_to_file", "encode", "encode_file",
    "encode_with_report", "model_digest_of",
]
