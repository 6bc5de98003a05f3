"""Coding options: how each tensor is coded (mode, qp, block shape), chosen by name pattern."""

from __future__ import annotations

import dataclasses
import fnmatch

import numpy as np

from .errors import EncodeError
from .format import DEPENDENT_MAJOR, FLOAT_DTYPES, INTEGRITY_MAJOR, PLAIN_MAJOR, CodingMode, DType
from .quant import DEFAULT_QP_DENSITY, qp_is_valid

DEFAULT_QP = -32  # step 2**-8 at density 2
DEFAULT_VECTOR_QP = -56  # step 2**-14: 1-D tensors (biases, norms) are tiny and sensitive
DEFAULT_BLOCK = (4, 4)
DEFAULT_RDO_LAMBDA = 0.12  # c in lambda = c * step**2; ln 2 / 6 is the high-rate slope (rdo.py)
DEFAULT_DQ_LAMBDA = 0.12  # the same for the trellis of dependent quantization (trellis.py)
MAX_BLOCK_SIDE = 255


@dataclasses.dataclass(frozen=True)
class TensorRule:
    """Overrides for tensors whose name matches ``pattern`` (a shell-style glob, ``*`` etc.).

    ``None`` leaves that option to the defaults. Later rules win over earlier ones.
    """

    pattern: str
    mode: CodingMode | None = None
    qp: int | None = None
    block: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class TensorCoding:
    """How one tensor is coded, resolved from an :class:`EncoderConfig`."""

    mode: CodingMode
    qp: int
    qp_density: int
    block: tuple[int, int]
    explicit_mode: bool
    rdo_lambda: float = 0.0  # c in lambda = c * step**2; 0: nearest levels
    rdo_blocks: bool = False  # UNIFIED mode: block kinds chosen by rate-distortion cost
    dependent: bool = False  # dependent (trellis) quantization of the dense levels (§7.1.2)
    stream_major: int = PLAIN_MAJOR  # the stream's major version: its quant_params syntax

    @property
    def digests(self) -> bool:
        """Whether the tensor header carries a content digest (formats 4.0 and 5.0, spec §5.2)."""
        return self.stream_major >= INTEGRITY_MAJOR


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Options of :func:`nncodec_unify.encode`.

    Defaults: float tensors with >= 2 dims are coded UNIFIED at ``qp`` in ``block`` blocks
    (DENSE when at most 1 % of the blocks come out pruned or unified, unless a rule asks for a mode);
    1-D and 0-dim float tensors DENSE at the finer ``vector_qp``. Integer tensors take the same
    modes losslessly (step 1, any ``qp`` ignored) and fall back to RAW when that is no larger
    or their values exceed 31 bits; bool tensors are RAW.
    A float tensor that cannot be quantized (nan/inf, levels out of range) falls back to RAW
    unless a rule asked for its mode explicitly, which is then an :class:`EncodeError`.
    ``use_contexts=False`` codes every plane with one context and no column offsets: faster
    to encode, a little larger.

    ``rdo`` (default on; off means plain rounding to the nearest level, scalar levels, so
    with ``digests=False`` a 2.0 stream) picks each float level by rate-distortion cost,
    ``D + lambda * R`` with ``lambda = rdo_lambda * step**2``, instead of rounding to the
    nearest (the error of a weight may then reach a whole step, or the weight itself where
    zero is cheaper);
    ``rdo_blocks`` also chooses each UNIFIED block's kind (dense, unified, pruned) that way.
    Small float tensors are stored RAW when that is no larger (unless a rule asked for a mode).

    ``dependent`` (default on) quantizes float tensors dependently (spec §7.1.2): a trellis
    search with ``lambda = dependent_lambda * step**2`` picks levels that two interleaved
    quantizers read, about 3 % fewer bytes than scalar levels at equal error. Off
    (``--no-dq``), tensors are quantized by scalar levels. Tensors whose values lie on the
    grid are coded losslessly either way. Only with ``digests=False`` (``--no-digests``) does
    this choice set the format: 3.0 with dependent quantization (which needs ``rdo``), 2.0
    (which every 2.x decoder reads) with scalar levels; with digests the stream is 4.0 or 5.0
    either way (see :attr:`stream_major`).

    ``digests`` (default on) makes the stream format 4.0, or 5.0 when the tensors hold tied
    weights (coded once, the other names as aliases, spec §5.2): each tensor carries the
    SHA-256 of its decoded bytes, which the decoder checks, and a final STREAM_END unit binds
    the units' order and every byte (spec §5.8, §7.4); 0.02 % larger on all-MiniLM-L6-v2.
    Off (``--no-digests``), the stream is 2.0 or 3.0 as above (3.1 with attached files), for
    decoders older than 4.0, and tied weights are coded once per name.
    """

    qp: int = DEFAULT_QP
    vector_qp: int = DEFAULT_VECTOR_QP
    qp_density: int = DEFAULT_QP_DENSITY
    block: tuple[int, int] = DEFAULT_BLOCK
    rules: tuple[TensorRule, ...] = ()
    use_contexts: bool = True
    rdo: bool = True
    rdo_lambda: float = DEFAULT_RDO_LAMBDA
    rdo_blocks: bool = True
    dependent: bool = True
    dependent_lambda: float = DEFAULT_DQ_LAMBDA
    digests: bool = True

    @property
    def stream_major(self) -> int:
        """The major version the encoder writes (spec §10): 4 with digests (the encoder
        raises it to 5 for a model with tied weights); without, 3 when tensors may use
        dependent quantization, else 2, which every 2.x decoder reads (the encoder also
        writes 2 when the rules code every tensor of the model RAW: :meth:`raw_by_rules`)."""
        if self.digests:
            return INTEGRITY_MAJOR
        return DEPENDENT_MAJOR if self.dependent and self.rdo else PLAIN_MAJOR

    def raw_by_rules(self, name: str) -> bool:
        """Whether the rules code tensor ``name`` RAW whatever its dtype and shape (the last
        matching rule that sets a mode sets RAW)."""
        mode = None
        for rule in self.rules:
            if rule.mode is not None and fnmatch.fnmatchcase(name, rule.pattern):
                mode = rule.mode
        return mode == CodingMode.RAW

    def __post_init__(self) -> None:
        # Invalid options raise EncodeError (a ValueError) here, not a TypeError deep in the
        # encoder or, worse, a stream with an undefined coding_mode.
        if not _is_int(self.qp_density):
            raise EncodeError(f"qp_density must be an integer, got {self.qp_density!r}")
        for field in ("qp", "vector_qp"):
            value = getattr(self, field)
            if not _is_int(value) or not qp_is_valid(value, self.qp_density):
                raise EncodeError(f"{field} {value!r} is outside the format's range "
                                  f"at qp_density {self.qp_density}")
        _check_block(self.block)
        for field in ("use_contexts", "rdo", "rdo_blocks", "dependent", "digests"):
            if not isinstance(getattr(self, field), (bool, np.bool_)):  # "no" would read as True
                raise EncodeError(f"{field} must be True or False, got {getattr(self, field)!r}")
        for field in ("rdo_lambda", "dependent_lambda"):
            value = getattr(self, field)
            if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool) \
                    or not 0 <= float(value) <= 100:
                raise EncodeError(f"{field} must be a number in 0..100, got {value!r}")
        if not isinstance(self.rules, tuple) or not all(isinstance(r, TensorRule) for r in self.rules):
            raise EncodeError(f"rules must be a tuple of TensorRule, got {self.rules!r}")
        for rule in self.rules:
            if not isinstance(rule.pattern, str):
                raise EncodeError(f"rule pattern must be a string, got {rule.pattern!r}")
            if rule.mode is not None and not isinstance(rule.mode, CodingMode):
                raise EncodeError(f"rule {rule.pattern!r}: mode must be a CodingMode, got {rule.mode!r}")
            if rule.qp is not None and (not _is_int(rule.qp) or not qp_is_valid(rule.qp, self.qp_density)):
                raise EncodeError(f"rule {rule.pattern!r}: qp {rule.qp!r} is outside the format's range")
            if rule.block is not None:
                _check_block(rule.block)

    def same_rules(self, name: str, other: str) -> bool:
        """Whether the same rules match ``name`` and ``other``: then one tensor under either
        name gets the same coding (tied names are coded once only then)."""
        return all(fnmatch.fnmatchcase(name, rule.pattern) == fnmatch.fnmatchcase(other, rule.pattern)
                   for rule in self.rules)

    def coding_for(self, name: str, dtype: DType, ndim: int) -> TensorCoding:
        """Resolve the coding of tensor ``name`` from the defaults and the matching rules."""
        is_float = dtype in FLOAT_DTYPES
        if dtype == DType.BOOL:
            mode = CodingMode.RAW
        elif ndim >= 2:
            mode = CodingMode.UNIFIED
        else:
            mode = CodingMode.DENSE
        qp = self.qp if ndim >= 2 else self.vector_qp
        block, explicit = self.block, False
        for rule in self.rules:
            if not fnmatch.fnmatchcase(name, rule.pattern):
                continue
            if rule.mode is not None:
                mode, explicit = rule.mode, True
            if rule.qp is not None:
                qp = rule.qp
            if rule.block is not None:
                block = rule.block
        if dtype == DType.BOOL and mode != CodingMode.RAW:
            mode, explicit = CodingMode.RAW, False  # bool has no coded mode
        if not is_float:
            qp = 0  # integers are coded losslessly: step 1 (§6.1)
        rdo_lambda = float(self.rdo_lambda) if self.rdo and is_float else 0.0
        dependent = self.dependent and self.rdo and is_float and mode != CodingMode.RAW
        if dependent:
            rdo_lambda = float(self.dependent_lambda)
        return TensorCoding(mode, qp, self.qp_density, block, explicit, rdo_lambda, self.rdo_blocks, dependent,
                            self.stream_major)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_block(block: tuple[int, int]) -> None:
    if (not isinstance(block, (tuple, list)) or len(block) != 2
            or not all(_is_int(side) and 1 <= side <= MAX_BLOCK_SIDE for side in block)):
        raise EncodeError(f"block shape {block!r} must be two integers in 1..{MAX_BLOCK_SIDE}")
