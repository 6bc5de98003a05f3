"""Rate control: find the qp that meets a size, bits-per-parameter or error target.

The search moves the default qps (``qp`` and ``vector_qp`` together, keeping their gap, or
``qp`` alone with ``keep_vector_qp``); qps that rules set for particular tensors stay as given,
and a target that no searched tensor can move (every tensor's qp set by a rule; an error
target without a float tensor of 2 or more dimensions whose qp is searched) is refused. Stream size falls and error grows
monotonically with qp in practice, so the answer is a boundary: the finest qp whose stream
fits a size target, or the coarsest qp whose error stays within an error target. A first
encode predicts the answer (about one bit per quantized parameter per 4 qp, error in
proportion to the step), then neighbours are tried until the boundary is bracketed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

from .config import EncoderConfig
from .encoder import EncodeResult, encode_with_report
from .errors import EncodeError
from .format import FLOAT_DTYPES
from .quant import qp_is_valid
from .syntax import AttachedFile


@dataclasses.dataclass(frozen=True)
class RateTarget:
    """Exactly one of: ``size_bytes`` (the stream at most this long), ``bits_per_param``
    (8 x stream bytes / all elements at most this), ``rmse`` (root mean squared error over the
    elements of float tensors with >= 2 dimensions at most this)."""

    size_bytes: int | None = None
    bits_per_param: float | None = None
    rmse: float | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("size_bytes", "bits_per_param", "rmse") if getattr(self, name) is not None]
        if len(given) != 1:
            raise EncodeError(f"give exactly one rate target, got {', '.join(given) or 'none'}")
        value = getattr(self, given[0])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise EncodeError(f"{given[0]} target must be a positive number, got {value!r}")

    def describe(self) -> str:
        if self.size_bytes is not None:
            return f"at most {self.size_bytes:,} bytes"
        if self.bits_per_param is not None:
            return f"at most {self.bits_per_param:g} bits/parameter"
        return f"RMSE at most {self.rmse:g}"


@dataclasses.dataclass(frozen=True)
class Trial:
    """One encode of the search: its qp, stream bytes, bits per parameter and RMSE."""

    qp: int
    vector_qp: int
    size_bytes: int
    bits_per_param: float
    rmse: float

    def meets(self, target: RateTarget) -> bool:
        if target.size_bytes is not None:
            return self.size_bytes <= target.size_bytes
        if target.bits_per_param is not None:
            return self.bits_per_param <= target.bits_per_param
        return self.rmse <= target.rmse


@dataclasses.dataclass(frozen=True)
class RateControlResult:
    """The chosen encode (``result``, ``config``), that trial, and every trial in order."""

    result: EncodeResult
    config: EncoderConfig
    chosen: Trial
    trials: tuple[Trial, ...]

    def to_dict(self) -> dict:
        return {"qp": self.chosen.qp, "vector_qp": self.chosen.vector_qp, "bytes": self.chosen.size_bytes,
                "bits_per_param": self.chosen.bits_per_param, "rmse": self.chosen.rmse,
                "trials": [dataclasses.asdict(trial) for trial in self.trials]}


_MAX_TRIALS = 40  # a bisection over the whole qp range needs about 16


def encode_to_target(tensors: Mapping[str, object], target: RateTarget, *, config: EncoderConfig | None = None,
                     progress: Callable[[str], None] | None = None, workers: int = 1,
                     keep_vector_qp: bool = False, attachments: Sequence[AttachedFile] = (),
                     tensor_progress: Callable[[int, int, str], None] | None = None) -> RateControlResult:
    """Encode ``tensors`` at the qp that meets ``target`` best (see the module docstring).

    ``config`` gives everything but the default qps, and the search starts from its ``qp``;
    ``vector_qp`` follows at ``config``'s gap, or stays as ``config`` has it with
    ``keep_vector_qp``. ``attachments`` (a model folder's files) are carried in every trial,
    so a size target counts them. ``progress(line)`` hears of each trial,
    ``tensor_progress(done, total, name)`` of each tensor within it. Raises :class:`EncodeError`
    when no qp in the format's range meets the target (the message names the closest
    reachable figure), or when the searched qps move nothing the target measures.
    """
    config = EncoderConfig() if config is None else config
    gap = config.vector_qp - config.qp
    trials: dict[int, tuple[Trial, EncodeResult]] = {}

    def vector_qp_for(qp: int) -> int:
        return config.vector_qp if keep_vector_qp else qp + gap

    def valid(qp: int) -> bool:
        return qp_is_valid(qp, config.qp_density) and qp_is_valid(vector_qp_for(qp), config.qp_density)

    def attempt(qp: int) -> Trial:
        if qp not in trials:
            if len(trials) >= _MAX_TRIALS:
                raise EncodeError(f"rate control: no answer after {_MAX_TRIALS} encodes")
            trial_config = dataclasses.replace(config, qp=qp, vector_qp=vector_qp_for(qp))
            result = encode_with_report(tensors, config=trial_config, measure_error=True, workers=workers,
                                        attachments=attachments, progress=tensor_progress)
            trials[qp] = (_measure(qp, vector_qp_for(qp), result), result)
            if progress is not None:
                trial = trials[qp][0]
                progress(f"rate control: qp {qp}: {trial.size_bytes:,} bytes, {trial.bits_per_param:.3f} "
                         f"bits/parameter, RMSE {trial.rmse:.4g}")
        return trials[qp][0]

    if not valid(config.qp):
        raise EncodeError(f"rate control: the starting qp {config.qp} (vector qp {vector_qp_for(config.qp)}) "
                          "is outside the format's range")
    first = attempt(config.qp)
    _check_searchable(trials[config.qp][1], target, config, keep_vector_qp)
    # u = direction * qp: meeting the target is monotone in u, and the answer is the lowest u
    # that meets it (the finest qp within a size, the coarsest within an error)
    direction = 1 if target.rmse is None else -1

    def meets(u: int) -> bool:
        return attempt(direction * u).meets(target)

    def usable(u: int) -> bool:
        return valid(direction * u)

    start = direction * _edge(config.qp + _predicted_shift(first, target, trials[config.qp][1]), valid, config.qp)
    if meets(start):  # search down for a u that fails
        hi, distance = start, 1
        while usable(start - distance) and meets(start - distance):
            hi, distance = start - distance, distance * 2
        lo = start - distance
        if not usable(lo):  # every finer setting meets too: the finest valid one is the answer
            lo = _edge(start - distance, usable, hi)
            if meets(lo):
                hi = lo
                lo = hi - 1
    else:  # search up for a u that meets
        lo, distance = start, 1
        while True:
            if not usable(start + distance):
                edge = _edge(start + distance, usable, lo)
                if edge == lo or not meets(edge):
                    closest = min((t for t, _ in trials.values()), key=lambda t: _distance(t, target))
                    raise EncodeError(f"rate control: no qp meets the target ({target.describe()}); the closest "
                                      f"was qp {closest.qp}: {closest.size_bytes:,} bytes, RMSE {closest.rmse:.4g}")
                hi = edge
                break
            if meets(start + distance):
                hi = start + distance
                break
            lo, distance = start + distance, distance * 2
    while hi - lo > 1 and usable(lo):  # bisect: lo fails, hi meets
        middle = (lo + hi) // 2
        lo, hi = (lo, middle) if meets(middle) else (middle, hi)
    qp = direction * hi
    chosen, result = trials[qp]
    ordered = tuple(t for t, _ in trials.values())
    return RateControlResult(result, dataclasses.replace(config, qp=qp, vector_qp=vector_qp_for(qp)), chosen, ordered)


def _check_searchable(result: EncodeResult, target: RateTarget, config: EncoderConfig, keep_vector_qp: bool) -> None:
    """Raise EncodeError where moving the searched qps changes nothing the target measures:
    every quantized tensor has its qp from a rule, or (an error target) no float tensor of 2
    or more dimensions has its qp searched."""
    moved = dataclasses.replace(config, qp=config.qp + 1,
                                vector_qp=config.vector_qp + (0 if keep_vector_qp else 1))

    def searched(report) -> bool:
        ndim = len(report.shape)
        return (report.qp is not None and report.dtype in FLOAT_DTYPES
                and config.coding_for(report.name, report.dtype, ndim).qp
                != moved.coding_for(report.name, report.dtype, ndim).qp)

    followers = [report for report in result.reports if searched(report)]
    if not followers:
        raise EncodeError("rate control: no tensor's qp is searched (rules set every quantized tensor's qp), "
                          "so no target can be met by it")
    if target.rmse is not None and not any(len(report.shape) >= 2 for report in followers):
        raise EncodeError("rate control: an error target measures float tensors of 2 or more dimensions, and "
                          "none has its qp searched here")


def _edge(u: int, usable: Callable[[int], bool], inside: int) -> int:
    """The usable value nearest to ``u`` on the way back to ``inside`` (usable): a qp or a
    signed qp, whichever the predicate ``usable`` takes. Far-off values (a prediction from an
    absurd target) are first brought within the format's qp range, the rest is walked."""
    u = max(-65536, min(65536, u))  # beyond every qp the format allows (±32768 plus a gap)
    while not usable(u) and u != inside:
        u += 1 if u < inside else -1
    return u


def _measure(qp: int, vector_qp: int, result: EncodeResult) -> Trial:
    elements = sum(math.prod(report.shape) for report in result.reports)
    squared = counted = 0.0
    for report in result.reports:
        if report.dtype in FLOAT_DTYPES and len(report.shape) >= 2:
            squared += report.squared_error
            counted += math.prod(report.shape)
    rmse = math.sqrt(squared / counted) if counted else 0.0
    return Trial(qp, vector_qp, len(result.data), 8.0 * len(result.data) / max(elements, 1), rmse)


def _predicted_shift(trial: Trial, target: RateTarget, result: EncodeResult) -> int:
    """qp change that should reach the target, from one trial (high-rate rules of thumb)."""
    if target.rmse is not None:
        if trial.rmse <= 0:
            return 0
        return int(round(4 * math.log2(target.rmse / trial.rmse)))
    quantized = sum(math.prod(r.shape) for r in result.reports if r.qp is not None and r.dtype in FLOAT_DTYPES)
    if quantized == 0:
        return 0
    wanted = target.size_bytes if target.size_bytes is not None else \
        target.bits_per_param * trial.size_bytes / trial.bits_per_param / 1.0
    surplus_bits = 8.0 * (trial.size_bytes - wanted)
    return int(round(4 * surplus_bits / quantized))


def _distance(trial: Trial, target: RateTarget) -> float:
    if target.size_bytes is not None:
        return abs(trial.size_bytes - target.size_bytes)
    if target.bits_per_param is not None:
        return abs(trial.bits_per_param - target.bits_per_param)
    return abs(math.log(max(trial.rmse, 1e-300) / target.rmse))
