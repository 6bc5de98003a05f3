"""Integer qp <-> step size, and levels <-> values (spec §6.1, §7.1).

Only integers cross the bitstream. The step size is a small integer mantissa times a power of
two, exactly representable in float32, so the reconstruction ``float32(level) * float32(step)``
is one IEEE rounding and gives the same bits on every machine.
"""

from __future__ import annotations

import sys

import numpy as np

from .format import MAX_QP_DENSITY, MAX_STEP_EXPONENT, MIN_STEP_EXPONENT, DType

DEFAULT_QP_DENSITY = 2
MAX_LEVEL = (1 << 31) - 1  # §6.4: level magnitudes are below 2**31


def level_type(bound: float, narrowest: type = np.int8) -> type:
    """The narrowest signed integer type, no narrower than ``narrowest``, that holds levels of
    magnitude up to ``bound`` (both signs): int8, int16 or int32 (levels stay below 2**31).
    An unsigned ``narrowest`` (uint8, uint16) asks for magnitudes alone: uint8 or uint16
    where they hold ``bound``, else int32."""
    unsigned = np.dtype(narrowest).kind == "u"
    for dtype in ((np.uint8, np.uint16) if unsigned else (np.int8, np.int16)):
        if np.dtype(dtype).itemsize >= np.dtype(narrowest).itemsize and bound <= np.iinfo(dtype).max:
            return dtype
    return np.int32


def signed_type(dtype: type) -> type:
    """The signed integer type of the same width as the integer type ``dtype``."""
    return np.dtype(f"i{np.dtype(dtype).itemsize}").type


def step_exponent(qp: int, qp_density: int) -> int:
    """Binary exponent ``floor(qp / 2**d) - d`` of the step for ``qp`` at density ``d``."""
    return (qp >> qp_density) - qp_density


def qp_is_valid(qp: int, qp_density: int) -> bool:
    """Whether (qp, qp_density) names a step the format allows (§6.1)."""
    if not 0 <= qp_density <= MAX_QP_DENSITY or not -32768 <= qp <= 32767:
        return False
    return MIN_STEP_EXPONENT <= step_exponent(qp, qp_density) <= MAX_STEP_EXPONENT


def step_size(qp: int, qp_density: int = DEFAULT_QP_DENSITY) -> np.float32:
    """The step ``(2**d + (qp mod 2**d)) * 2**(floor(qp / 2**d) - d)`` as an exact float32.

    >>> float(step_size(-32)), float(step_size(-31)), float(step_size(0))
    (0.00390625, 0.0048828125, 1.0)
    """
    if not qp_is_valid(qp, qp_density):
        raise ValueError(f"qp {qp} at qp_density {qp_density} is outside the format's range")
    mantissa = (1 << qp_density) + (qp & ((1 << qp_density) - 1))
    return np.float32(np.ldexp(np.float64(mantissa), step_exponent(qp, qp_density)))


def qp_for_step(step: float, qp_density: int = DEFAULT_QP_DENSITY) -> int:
    """The largest qp whose step does not exceed ``step`` (so the error bound is kept).

    >>> qp_for_step(2.0 ** -8)
    -32
    """
    if not step > 0 or not np.isfinite(step):
        raise ValueError(f"step must be positive and finite, got {step}")
    exponent = int(np.floor(np.log2(step)))
    qp = ((exponent + qp_density + 1) << qp_density) + (1 << qp_density)
    while qp > -32768 and (not qp_is_valid(qp, qp_density) or step_size(qp, qp_density) > step):
        qp -= 1
    if not qp_is_valid(qp, qp_density):
        raise ValueError(f"step {step} is outside the format's range")
    return qp


def quantize(values: np.ndarray, step: np.float32, dtype=np.int64) -> np.ndarray:
    """Nearest levels (ties to even): ``rint(value / step)`` computed in float64.

    The caller checks the values are finite and the levels within the format's range (and
    within ``dtype``).
    """
    step = np.float64(step)
    if values.dtype in (np.float32, np.float16) and np.frexp(step)[0] == 0.5:
        # a power-of-two step scales float32 values exactly (the caller's range check rules
        # out overflow; underflow only reaches values that round to 0 either way)
        scaled = np.multiply(values.reshape(-1), np.float32(1.0 / step), dtype=np.float32)
        return np.rint(scaled, out=scaled).astype(dtype).reshape(values.shape)
    return np.rint(values.astype(np.float64) / step).astype(dtype)


def zigzag(values: np.ndarray) -> np.ndarray:
    """Signed integers as non-negative codes: 0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4, ... (§6.10)."""
    values = np.asarray(values, dtype=np.int64)
    return np.where(values >= 0, 2 * values, -2 * values - 1)


def unzigzag(codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`zigzag`: even codes ``2v`` are ``v``, odd codes ``2v + 1`` are ``-v - 1``."""
    codes = np.asarray(codes, dtype=np.int64)
    return (codes >> 1) ^ -(codes & 1)


def dequantize(levels: np.ndarray, step: np.float32, dtype: DType) -> np.ndarray:
    """Reconstruct values of ``dtype`` from integer levels (§7.1).

    ``float32(level) * float32(step)`` in IEEE float32 (round to nearest even, no fused
    multiply-add), then rounded to float16 or bfloat16, or widened to float64. bfloat16 is
    returned widened exactly to float32 (numpy has no bfloat16 type).
    """
    with np.errstate(over="ignore", under="ignore"):  # see to_output_type
        values = np.multiply(levels.astype(np.float32), np.float32(step), dtype=np.float32)
    return to_output_type(values, dtype)


def dequantize_magnitudes(magnitudes: np.ndarray, negative: np.ndarray, step: np.float32, dtype: DType) -> np.ndarray:
    """What :func:`dequantize` gives for the levels ``where(negative, -magnitudes, magnitudes)``.

    ``magnitudes`` are non-negative integers, ``negative`` a 0/1 uint8 array of the same shape.
    IEEE multiplication and round-to-nearest-even are symmetric in sign, so the product of
    the magnitude takes the level's sign by setting its sign bit: one pass instead of a
    negation and a product. Zero magnitudes must not be marked negative (no level is -0).
    """
    with np.errstate(over="ignore", under="ignore"):  # see to_output_type
        values = np.multiply(magnitudes, np.float32(step), dtype=np.float32)
    # the sign bit is the top bit of a float32's most significant byte
    top_byte = values.reshape(-1).view(np.uint8)[_FLOAT32_TOP_BYTE::4]
    top_byte |= np.left_shift(negative.reshape(-1), 7, dtype=np.uint8)
    return to_output_type(values, dtype)


def to_output_type(values: np.ndarray, dtype: DType) -> np.ndarray:
    """float32 reconstructions in the tensor's float type (§7.1): float32 as they are, float16
    and bfloat16 rounded to nearest even (bfloat16 returned widened to float32), float64
    widened. Underflow to subnormals or zero and overflow to infinity are defined results, so
    they must not raise under a caller's ``np.seterr(all="raise")``."""
    with np.errstate(over="ignore", under="ignore"):
        if dtype == DType.FLOAT32:
            return values
        if dtype == DType.FLOAT16:
            return values.astype(np.float16)
        if dtype == DType.FLOAT64:
            return values.astype(np.float64)
        if dtype == DType.BFLOAT16:
            return round_to_bfloat16(values)
    raise ValueError(f"dtype {dtype!r} is not a float type")


_FLOAT32_TOP_BYTE = 3 if sys.byteorder == "little" else 0


def round_to_bfloat16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), returned widened to float32.

    NaN stays NaN (quiet); infinities and overflow become infinities.
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = (bits[nan] >> 16) | 0x0040
    return (rounded.astype(np.uint32) << 16).view(np.float32)


# ---------------------------------------------------------------------------------------------
# §7.1.2 dependent quantization

DQ_SEGMENT = 64  # the state machine restarts in state 0 every 64 positions of the scan
DQ_NEXT_STATE = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], dtype=np.int8)  # [state][level parity]


def dependent_quantizers(magnitudes: np.ndarray) -> np.ndarray:
    """For the magnitudes of a dependently quantized scan (flat, in scan order): whether each
    position is read with quantizer 1 (states 2 and 3) rather than quantizer 0 (§7.1.2).

    The state starts at 0 at every position whose index is a multiple of ``DQ_SEGMENT`` and
    moves by ``DQ_NEXT_STATE[state][magnitude & 1]``. With the state's bits ``(q, b)``
    (``q`` selects the quantizer) the table is ``(q, b) -> (b ^ parity, q)``, so
    ``q[j + 1] = q[j - 1] ^ parity[j]``: within a segment the quantizer at an even position is
    the running XOR of the parities at the odd positions before it, and at an odd position
    that of the parities at the even positions up to it. No loop over positions.
    """
    count = magnitudes.size
    segments = -(-count // DQ_SEGMENT)
    parity = np.zeros(segments * DQ_SEGMENT, dtype=np.uint8)
    np.bitwise_and(magnitudes, 1, out=parity[:count], casting="unsafe")
    pairs = parity.reshape(segments, DQ_SEGMENT // 2, 2)  # (even position, odd position)
    second = np.empty(pairs.shape, dtype=np.uint8)
    second[:, 0, 0] = 0
    np.bitwise_xor.accumulate(pairs[:, :-1, 1], axis=1, out=second[:, 1:, 0])
    np.bitwise_xor.accumulate(pairs[:, :, 0], axis=1, out=second[:, :, 1])
    return second.reshape(-1)[:count].view(bool)


def exact_dependent_magnitudes(multiples: np.ndarray) -> np.ndarray | None:
    """The magnitudes of a dependently quantized scan (flat, scan order, starting at a segment's
    start) whose reconstruction multiples (:func:`dependent_magnitudes`) are exactly
    ``multiples`` (non-negative integers), int64; None when there are none. Each position's
    quantizer is set by the parities before it in its segment: quantizer 0 holds the even
    multiples, quantizer 1 the odd ones, both hold 0, so the magnitudes follow one by one (a
    tensor decoded from a dependently quantized stream has them: the ones it was coded with)."""
    count = multiples.size
    segments = -(-count // DQ_SEGMENT)
    grid = np.zeros((segments, DQ_SEGMENT), np.int64)
    grid.reshape(-1)[:count] = multiples.reshape(-1)
    out = np.empty_like(grid)
    quantizer = [np.zeros(segments, np.int64), np.zeros(segments, np.int64)]  # for the next even, odd position
    for position in range(DQ_SEGMENT):
        wanted, q = grid[:, position], quantizer[position % 2]
        if np.any((wanted != 0) & ((wanted & 1) != q)):  # an odd multiple under quantizer 0, or an even one under 1
            return None
        chosen = (wanted + q) >> 1  # 2m with quantizer 0, 2m - 1 with quantizer 1; 0 either way for 0
        out[:, position] = chosen
        quantizer[1 - position % 2] ^= chosen & 1
    return out.reshape(-1)[:count]


def dependent_magnitudes(magnitudes: np.ndarray) -> np.ndarray:
    """The reconstruction multiples of a dependently quantized scan's magnitudes ``m`` (flat,
    scan order): ``2m`` with quantizer 0, ``2m - 1`` with quantizer 1 (0 stays 0), int64."""
    doubled = 2 * magnitudes.astype(np.int64)
    doubled -= dependent_quantizers(magnitudes) & (magnitudes != 0)
    return doubled


def dequantize_dependent(magnitudes: np.ndarray, negative: np.ndarray, step: np.float32, dtype: DType) -> np.ndarray:
    """§7.1.2 reconstruction of a matrix's levels, given as flat magnitudes and 0/1 sign flags
    in scan order: each is read by the quantizer its state selects. A flat array of the
    output type."""
    second = dependent_quantizers(magnitudes)
    if magnitudes.size == 0 or int(magnitudes.max()) >= 1 << 23:
        multiples = dependent_magnitudes(magnitudes).astype(np.float32)  # rounds once, as §7.1
    else:
        # every 2m - q is below 2**24, so float32 holds it exactly; max(., 0) keeps 0 at 0
        multiples = magnitudes.astype(np.float32)
        multiples *= 2
        multiples -= second
        np.maximum(multiples, 0, out=multiples)
    return dequantize_magnitudes(multiples, negative, step, dtype)
