"""Post-training unification and pruning: project the weights without any training data.

For users who have a trained model and no data: every selected weight tensor is projected onto
the unified/pruned structure at least squared distance (:mod:`nncodec_unify.method.unify`), and
the distortion this caused is reported. Encoding the result with the same block shape then codes
the chosen blocks as pruned or unified (the encoder derives block kinds from the levels).

What ``nncodec encode IN OUT --prune-ratio P --unify-ratio U --unify-threshold T --block RxC
--global-budget`` does, with the whole model in memory (the CLI itself calls
:func:`project_lazily`, the same projection one tensor at a time)::

    from nncodec_unify.method.posttrain import project_tensors
    projected, report = project_tensors(tensors, prune_ratio=P, unify_ratio=U, unify_threshold=T,
                                        block=(R, C), global_budget=True)
    for line in report.lines():
        print(line, file=sys.stderr)
    data = encode(projected, config=EncoderConfig(block=(R, C), ...))

Signature::

    project_tensors(tensors: Mapping[str, np.ndarray], *, prune_ratio: float = 0.0,
                    unify_ratio: float = 0.0, unify_threshold: float | None = None,
                    block: tuple[int, int] = (4, 4), global_budget: bool = False,
                    normalize: str = "none", exclude: Sequence[str] = (),
                    only: Sequence[str] | None = None, exclude_first_last: bool = False,
                    ) -> tuple[dict[str, np.ndarray], ProjectionReport]

* ``prune_ratio``, ``unify_ratio``: fractions of **all** blocks of each tensor to prune and to
  unify (sum at most 1); with ``global_budget`` fractions of all blocks of all selected tensors
  together, spread over layers by cost (absolute squared distance; ``normalize="rms"``
  divides each tensor's costs by its mean square weight instead).
* ``unify_threshold``: replaces ``unify_ratio``: unify every block that is not pruned whose
  relative unification loss ``n Var(|v|) / ||v||^2`` is at most the threshold.
* Selected tensors: floating-point arrays with at least 2 dimensions, except those matching an
  ``exclude`` glob; ``only`` (globs) narrows the selection further; ``exclude_first_last``
  leaves out the first and the last of them in mapping order. Other tensors pass through
  unchanged (the same objects).
* Raises ``ValueError`` for invalid options (ratios out of range, a bad block shape) and for a
  selected tensor that holds nan or inf.

The returned dict keeps the input's order, shapes and dtypes. The report
(:class:`ProjectionReport`) has one :class:`TensorDistortion` per projected tensor and the
totals; ``report.to_dict()`` is JSON-serialisable, ``report.lines()`` gives a readable table.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..codec.format import BlockKind
from ..codec.memory import release_pages
from ..codec.tensors import find_ties
from .unify import Target, plan_kinds, project

__all__ = ["ProjectedTensors", "ProjectionReport", "TensorDistortion", "project_lazily", "project_tensors"]


@dataclasses.dataclass(frozen=True)
class TensorDistortion:
    """What the projection did to one tensor.

    ``squared_error = ||W' - W||^2`` and ``energy = ||W||^2`` (float64, after casting back to the
    tensor's dtype); ``blocks`` is ``(pruned, unified, dense)``.
    """

    name: str
    shape: tuple[int, ...]
    block: tuple[int, int]
    blocks: tuple[int, int, int]
    squared_error: float
    energy: float
    max_abs_error: float

    @property
    def relative_error(self) -> float:
        """``||W' - W|| / ||W||`` (0 for an all-zero tensor)."""
        return math.sqrt(self.squared_error / self.energy) if self.energy > 0 else 0.0

    @property
    def sqnr_db(self) -> float:
        """Signal-to-noise ratio ``10 log10(||W||^2 / ||W' - W||^2)`` in dB (inf when exact)."""
        if self.squared_error == 0:
            return math.inf
        return 10.0 * math.log10(self.energy / self.squared_error) if self.energy > 0 else -math.inf


@dataclasses.dataclass(frozen=True)
class ProjectionReport:
    """Distortion of a post-training projection, per tensor and in total."""

    tensors: tuple[TensorDistortion, ...]

    @property
    def squared_error(self) -> float:
        return sum(t.squared_error for t in self.tensors)

    @property
    def energy(self) -> float:
        return sum(t.energy for t in self.tensors)

    @property
    def relative_error(self) -> float:
        """``||W' - W|| / ||W||`` over all projected tensors together."""
        return math.sqrt(self.squared_error / self.energy) if self.energy > 0 else 0.0

    @property
    def blocks(self) -> tuple[int, int, int]:
        """Total ``(pruned, unified, dense)`` blocks."""
        return tuple(sum(t.blocks[i] for t in self.tensors) for i in range(3))  # type: ignore[return-value]

    def to_dict(self) -> dict:
        pruned, unified, dense = self.blocks
        return {
            "relative_error": self.relative_error,
            "squared_error": self.squared_error,
            "blocks": {"pruned": pruned, "unified": unified, "dense": dense},
            "tensors": [{"name": t.name, "shape": list(t.shape), "block": list(t.block),
                         "blocks": {"pruned": t.blocks[0], "unified": t.blocks[1], "dense": t.blocks[2]},
                         "relative_error": t.relative_error, "squared_error": t.squared_error,
                         "max_abs_error": t.max_abs_error} for t in self.tensors],
        }

    def lines(self) -> list[str]:
        """A small table: one line per tensor and a total line."""
        out = [f"{'tensor':<40} {'pruned':>8} {'unified':>8} {'dense':>8} {'rel.err':>8} {'SQNR dB':>8}"]
        for t in self.tensors:
            out.append(f"{t.name[:40]:<40} {t.blocks[0]:>8} {t.blocks[1]:>8} {t.blocks[2]:>8} "
                       f"{t.relative_error:>8.4f} {t.sqnr_db:>8.2f}")
        pruned, unified, dense = self.blocks
        total = 10 * math.log10(self.energy / self.squared_error) if self.squared_error > 0 else math.inf
        out.append(f"{'total':<40} {pruned:>8} {unified:>8} {dense:>8} {self.relative_error:>8.4f} {total:>8.2f}")
        return out


def _selected(tensors: Mapping[str, object], exclude: Sequence[str], only: Sequence[str] | None) -> list[str]:
    return [name for name, value in tensors.items() if _floating_matrix(value)
            and not any(fnmatch.fnmatchcase(name, p) for p in exclude)
            and (only is None or any(fnmatch.fnmatchcase(name, p) for p in only))]


def _floating_matrix(value) -> bool:
    """Whether ``value`` (a numpy array, a BFloat16Array or a torch tensor) is a floating-point
    tensor of at least 2 dimensions, judged on its shape and dtype without reading it."""
    from ..codec.tensors import BFloat16Array

    if isinstance(value, BFloat16Array):
        return len(value.shape) >= 2
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None:
        value = np.asarray(value)
        shape, dtype = value.shape, value.dtype
    if not isinstance(dtype, np.dtype):  # a torch dtype
        return len(shape) >= 2 and bool(getattr(dtype, "is_floating_point", False))
    return len(shape) >= 2 and np.issubdtype(dtype, np.floating)


def project_tensors(tensors: Mapping[str, np.ndarray], *, prune_ratio: float = 0.0, unify_ratio: float = 0.0,
                    unify_threshold: float | None = None, block: tuple[int, int] = (4, 4),
                    global_budget: bool = False, normalize: str = "none", exclude: Sequence[str] = (),
                    only: Sequence[str] | None = None, exclude_first_last: bool = False,
                    ) -> tuple[dict[str, np.ndarray], ProjectionReport]:
    """Project the selected tensors onto the unified/pruned structure; see the module docstring.

    >>> import numpy as np
    >>> w = np.array([[1.0, -3.0, 0.1, 0.2], [2.0, -2.0, -0.1, 0.0]], dtype=np.float32)
    >>> out, report = project_tensors({"w": w, "b": np.ones(2, np.float32)}, prune_ratio=0.5,
    ...                               unify_ratio=0.5, block=(2, 2))
    >>> out["w"].tolist()
    [[2.0, -2.0, 0.0, 0.0], [2.0, -2.0, 0.0, 0.0]]
    >>> report.blocks, round(report.relative_error, 4)
    ((1, 1, 0), 0.3377)
    """
    ties = find_ties(tensors)  # a tied weight is projected once (counted once in a budget) and stays tied
    projected = project_lazily(tensors, prune_ratio=prune_ratio, unify_ratio=unify_ratio,
                               unify_threshold=unify_threshold, block=block, global_budget=global_budget,
                               normalize=normalize, exclude=exclude, only=only,
                               exclude_first_last=exclude_first_last, ties=ties)
    out = {}
    for name in tensors:
        out[name] = out[ties[name]] if name in ties else projected[name]
    return out, projected.report()


def project_lazily(tensors: Mapping[str, object], *, prune_ratio: float = 0.0, unify_ratio: float = 0.0,
                   unify_threshold: float | None = None, block: tuple[int, int] = (4, 4),
                   global_budget: bool = False, normalize: str = "none", exclude: Sequence[str] = (),
                   only: Sequence[str] | None = None, exclude_first_last: bool = False,
                   read: Callable[[str, object], np.ndarray] | None = None,
                   restore: Callable[[str, np.ndarray], object] | None = None,
                   ties: Mapping[str, str] | None = None,
                   blocks: Mapping[str, tuple[int, int]] | None = None) -> ProjectedTensors:
    """:func:`project_tensors` for a model that does not fit in memory twice: the block
    kinds are planned reading one tensor at a time (holding one byte a block; a global budget
    also holds each block's costs), and a :class:`ProjectedTensors` projects each tensor when
    it is read. ``read(name, value)`` gives a value as a numpy array (by default
    ``np.asarray``; a bfloat16 tensor widened, say), ``restore(name, projected)`` the stored
    form back; ``ties`` (``{alias: name}``) name the aliases, which give their name's
    projection; ``blocks`` (``{name: (rows, cols)}``) gives tensors a block shape of their
    own (the one they will be coded with, e.g. ``--tensor-block``), the others taking
    ``block``. Options and errors as for :func:`project_tensors`."""
    if read is None and restore is None:
        read, restore = _widening_bfloat16()
    read = read or (lambda _name, value: np.asarray(value))
    target = Target(prune_ratio=prune_ratio, unify_ratio=unify_ratio, unify_threshold=unify_threshold,
                    block=tuple(block))
    blocks = {name: tuple(shape) for name, shape in (blocks or {}).items()}
    ties = dict(ties or {})
    readable = {name: value for name, value in tensors.items() if name not in ties}
    candidates = _selected(readable, exclude, only)  # on shape and dtype: nothing read
    names = candidates[1:-1] if exclude_first_last else candidates
    planned = _Reading({name: readable[name] for name in names}, read)
    targets = {name: dataclasses.replace(target, block=blocks[name]) if name in blocks else target for name in names}
    kinds = plan_kinds(planned, targets, budget=target if global_budget else None, normalize=normalize)
    planned.let_go()
    first_last = tuple(dict.fromkeys((candidates[0], candidates[-1]))) if exclude_first_last and candidates else ()
    return ProjectedTensors(tensors, kinds, {name: targets[name].block for name in names}, read=read,
                            restore=restore, ties=ties, first_last=first_last)


def _widening_bfloat16():
    """The default ``read`` and ``restore``: any tensor the encoder takes (numpy, torch, a
    BFloat16Array) read as a numpy array, bfloat16 widened exactly to float32, and a bfloat16
    tensor's projection given back as bfloat16 bits (:class:`BFloat16Array`), rounded to
    nearest even: its dtype is kept, as the encoder stores it."""
    from ..codec.quant import round_to_bfloat16
    from ..codec.tensors import BFloat16Array, float32_to_bfloat16_bits, to_numpy

    bfloat16: set[str] = set()

    def read(name: str, value) -> np.ndarray:
        array, dtype = to_numpy(name, value)
        if dtype.name == "BFLOAT16":
            bfloat16.add(name)
        return array

    def restore(name: str, projected: np.ndarray):
        if name not in bfloat16:
            return projected
        values = np.ascontiguousarray(projected, dtype=np.float32)
        return BFloat16Array(float32_to_bfloat16_bits(round_to_bfloat16(values)))

    return read, restore


class _Reading(Mapping):
    """``values`` read as numpy arrays on access (``read``), one at a time (plan_kinds reads
    each once); a tensor holding nan or inf is a ValueError naming it. The pages of a
    memory-mapped input tensor are let go when the next one is read (:meth:`let_go` for the
    last), so a pass over a mapped model leaves none of it resident."""

    def __init__(self, values: Mapping[str, object], read):
        self._values, self._read = values, read
        self._last: np.ndarray | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        self.let_go()
        self._last = self._read(name, self._values[name])
        if not np.isfinite(self._last).all():
            raise ValueError(f"tensor {name!r} holds nan or inf: it cannot be projected (exclude it)")
        return self._last

    def let_go(self) -> None:
        """Let the system drop the pages of the array read last, if it views a mapped file."""
        if self._last is not None:
            release_pages(self._last)
            self._last = None

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class ProjectedTensors(Mapping):
    """The tensors with each planned one projected when it is read, so that one projected
    tensor at a time is alive (the encoder reads them in turn), not a projected model; the
    distortion of each is recorded as it is projected (:meth:`report`). ``ties`` (``{alias:
    name}``) are declared to the encoder, which codes an alias once with its name
    (:func:`~nncodec_unify.codec.tensors.find_ties`); an alias gives the very projection its
    name gave last, or projects it again. ``blocks`` gives each planned tensor's block shape.
    Built by :func:`project_lazily`."""

    def __init__(self, tensors: Mapping[str, object], kinds: Mapping[str, np.ndarray],
                 blocks: Mapping[str, tuple[int, int]], *, read, restore=None, ties: Mapping[str, str] | None = None,
                 first_last: tuple[str, ...] = ()):
        self._tensors, self._kinds, self._blocks = tensors, dict(kinds), dict(blocks)
        self._read, self._restore = read, restore or (lambda _name, projected: projected)
        self._ties = dict(ties or {})
        self._targets = set(self._ties.values())
        self._last: tuple[str, object] | None = None  # a tied name's projection, for its aliases
        self._distortions: dict[str, TensorDistortion] = {}
        self._first_last = first_last

    @property
    def ties(self) -> dict[str, str]:
        """``{alias: name}``: the names that share a tensor (:class:`~nncodec_unify.codec.tensors.DeclaresTies`)."""
        return dict(self._ties)

    @property
    def first_last(self) -> tuple[str, ...]:
        """The tensors ``exclude_first_last`` left unprojected (empty without it)."""
        return self._first_last

    def __getitem__(self, name: str) -> object:
        source = self._ties.get(name, name)
        if self._last is not None and self._last[0] == source:
            return self._last[1]
        value = self._tensors[source]
        if source not in self._kinds:
            return value
        array = self._read(source, value)
        kinds = self._kinds[source]
        block = self._blocks[source]
        projected = project(array, kinds, block)
        self._distortions[source] = _distortion(source, array, projected, kinds, block)
        release_pages(array)  # a mapped input's pages: the projection is what is encoded
        result = self._restore(source, projected)
        if source in self._targets:
            self._last = (source, result)
        return result

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def report(self) -> ProjectionReport:
        """The distortion of every tensor projected so far, in the tensors' order."""
        return ProjectionReport(tuple(self._distortions[name] for name in self._tensors if name in self._distortions))


def _distortion(name: str, array: np.ndarray, projected: np.ndarray, kinds: np.ndarray,
                block: tuple[int, int]) -> TensorDistortion:
    counts = np.bincount(kinds.ravel(), minlength=3)
    squared_error = energy = largest = 0.0
    flat_array, flat_projected = array.reshape(-1), projected.reshape(-1)
    for start in range(0, flat_array.size, _PIECE):  # float64 a piece at a time, not three tensor-sized copies
        original = flat_array[start:start + _PIECE].astype(np.float64)
        difference = flat_projected[start:start + _PIECE].astype(np.float64) - original
        squared_error += float(np.dot(difference, difference))
        energy += float(np.dot(original, original))
        largest = max(largest, float(np.max(np.abs(difference))))
    return TensorDistortion(
        name, tuple(array.shape), block,
        (int(counts[BlockKind.PRUNED]), int(counts[BlockKind.UNIFIED]), int(counts[BlockKind.DENSE])),
        squared_error, energy, largest)


_PIECE = 1 << 18  # elements of the distortion's float64 pieces
