"""Projection onto the unified/pruned set and least-cost block selection.

A tensor is viewed as a matrix (:func:`nncodec_unify.codec.blocks.matrix_shape`) and tiled
into blocks (:func:`nncodec_unify.codec.blocks.grid_shape`; edge blocks may be partial), the
same view the codec uses. Each block ``v`` of ``n`` weights becomes one of

* **pruned**: all zero; squared distance ``p_b = ||v||^2``;
* **unified**: ``sign(v) * mean(|v|)``, the nearest point with all magnitudes equal; squared
  distance ``u_b = n * Var(|v|) = ||v||^2 - (sum |v|)^2 / n``. A zero weight has no sign: it
  is given ``+``, so the block really is unified (both choices are equally near);
* **dense**: unchanged, distance 0.

Exact selection
---------------
Choosing ``P`` blocks to prune and ``U`` to unify at least total distance is solved exactly by
:func:`select_blocks` in ``O(N log N)``. Let ``d_b = p_b - u_b = (sum |v|)^2 / n >= 0``.
*Exchange argument:* if a pruned block ``i`` and a unified block ``j`` have ``d_i > d_j``,
swapping their roles changes the cost by ``(p_j + u_i) - (p_i + u_j) = d_j - d_i < 0``, so
some optimum prunes only blocks that come, in order of ``d``, before every unified block. For
blocks sorted by ``d`` and a split ``k``, the best choice prunes the ``P`` smallest ``p`` among
the first ``k`` and unifies the ``U`` smallest ``u`` among the rest; every such pair is
feasible, so the least of these costs over all ``k`` is the optimum. Two heap sweeps give the
running sums for every ``k``. (The obvious greedy order is not optimal; the tests compare
against brute force.)

Modes (:class:`Target`)
-----------------------
* ratios: ``prune_ratio`` and ``unify_ratio`` are fractions of **all** blocks of the tensor
  (``P = round(prune_ratio * N)``, ``U = round(unify_ratio * N)``, ``P + U <= N``);
* threshold: with ``unify_threshold = tau``, every block that is not pruned is unified when its
  relative unification loss ``u_b / p_b`` is at most ``tau``; the ``P`` pruned blocks are
  those that save the most (``p_b - c_b`` least, ``c_b`` the block's cost if not pruned), which
  is exact for that rule;
* global budget (:func:`plan_kinds` with ``budget=Target(...)``): the ratios count blocks over
  all selected tensors together and the exact selection runs on their union, so the budget is
  spread over layers by cost: by absolute squared distance (``normalize="none"``, the default:
  like global magnitude pruning, layers of small weights give more), or with each tensor's
  costs divided by its mean square weight (``normalize="rms"``: close to the same share in
  every layer, leaning towards layers whose weights are heavy-tailed). A normalization by each
  tensor's total energy was tried and dropped: it makes a block of a large layer look cheap
  because the layer is large, and pruned LeNet-5's biggest layer entirely.

Everything here is numpy, in float64, and deterministic: the same input gives the same
selection on every machine and every rank of a distributed job.

>>> import numpy as np
>>> w = np.array([[0.5, -0.5, 0.1, 0.0], [0.3, -0.7, 0.0, 0.2]], dtype=np.float32)
>>> kinds = select_kinds(w, Target(prune_ratio=0.5, unify_ratio=0.5, block=(2, 2)))
>>> [BlockKind(k).name for k in kinds.ravel()]
['UNIFIED', 'PRUNED']
>>> project(w, kinds, (2, 2)).tolist()
[[0.5, -0.5, 0.0, 0.0], [0.5, -0.5, 0.0, 0.0]]
"""

from __future__ import annotations

import dataclasses
import fnmatch
import heapq
import math
import operator
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from ..codec.blocks import block_sizes, expand_blocks, grid_shape, matrix_shape
from ..codec.format import BlockKind

__all__ = [
    "BlockCosts", "Target", "block_costs", "block_sums", "plan_kinds", "project", "project_arrays",
    "projection_cost", "select_blocks", "select_counts", "select_kinds", "select_threshold", "selected_targets",
]


@dataclasses.dataclass(frozen=True)
class Target:
    """What a tensor is driven towards: how many blocks are pruned and unified, in which blocks.

    ``prune_ratio`` and ``unify_ratio`` are fractions of all blocks (their sum at most 1). When
    ``unify_threshold`` is set it replaces ``unify_ratio``: every block not pruned whose relative
    unification loss ``n Var(|v|) / ||v||^2`` is at most the threshold is unified.
    """

    prune_ratio: float = 0.0
    unify_ratio: float = 0.0
    unify_threshold: float | None = None
    block: tuple[int, int] = (4, 4)

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune_ratio <= 1.0:
            raise ValueError(f"prune_ratio must be in [0, 1], got {self.prune_ratio}")
        if not 0.0 <= self.unify_ratio <= 1.0:
            raise ValueError(f"unify_ratio must be in [0, 1], got {self.unify_ratio}")
        if self.unify_threshold is None and self.prune_ratio + self.unify_ratio > 1.0 + 1e-12:
            raise ValueError(f"prune_ratio + unify_ratio must be at most 1, got "
                             f"{self.prune_ratio} + {self.unify_ratio}")
        if self.unify_threshold is not None and not 0.0 <= self.unify_threshold <= 1.0:
            raise ValueError(f"unify_threshold must be in [0, 1], got {self.unify_threshold}")
        try:
            block = tuple(operator.index(side) for side in self.block)  # numpy integers too, not floats
        except TypeError:
            raise ValueError(f"block must be two integers in 1..255, got {self.block!r}") from None
        if len(block) != 2 or not all(1 <= side <= 255 for side in block):
            raise ValueError(f"block must be two integers in 1..255, got {self.block!r}")
        object.__setattr__(self, "block", block)

    def counts(self, blocks: int) -> tuple[int, int]:
        """``(P, U)`` for a tensor of ``blocks`` blocks (``U`` is 0 in threshold mode)."""
        prune = min(blocks, math.floor(self.prune_ratio * blocks + 0.5))
        if self.unify_threshold is not None:
            return prune, 0
        return prune, min(blocks - prune, math.floor(self.unify_ratio * blocks + 0.5))


@dataclasses.dataclass(frozen=True)
class BlockCosts:
    """Per-block sums of one matrix, on its block grid (float64).

    ``abs_sum = sum |v|``, ``square_sum = sum v^2``, ``count = n`` (partial edge blocks count
    only their real elements).
    """

    abs_sum: np.ndarray
    square_sum: np.ndarray
    count: np.ndarray

    @property
    def prune(self) -> np.ndarray:
        """``p_b = ||v||^2``."""
        return self.square_sum

    @property
    def unify(self) -> np.ndarray:
        """``u_b = n Var(|v|) = ||v||^2 - (sum |v|)^2 / n``, clipped at 0 against rounding."""
        return np.maximum(self.square_sum - self.abs_sum ** 2 / self.count, 0.0)

    @property
    def mean_abs(self) -> np.ndarray:
        """The unified magnitude ``mean(|v|)`` of each block."""
        return self.abs_sum / self.count


def _as_matrix(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.reshape(matrix_shape(array.shape))


def block_sums(matrix: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """Sum of ``matrix`` over each block of the grid (edge blocks may be partial), float64."""
    rows, cols = matrix.shape
    block_rows, block_cols = block
    grid_rows, grid_cols = grid_shape(rows, cols, block_rows, block_cols)
    if rows == 0 or cols == 0:
        return np.zeros((grid_rows, grid_cols))
    matrix = matrix.astype(np.float64, copy=False)
    summed = np.add.reduceat(matrix, np.arange(0, rows, block_rows), axis=0)
    return np.add.reduceat(summed, np.arange(0, cols, block_cols), axis=1)


def block_costs(array: np.ndarray, block: tuple[int, int], weights: np.ndarray | None = None) -> BlockCosts:
    """The :class:`BlockCosts` of ``array`` viewed as a matrix and tiled into ``block`` blocks.

    With ``weights`` (non-negative, broadcastable to the matrix view, e.g. one weight per
    column as ``(1, cols)``), the costs are those of the weighted distance
    ``sum w_j (v_j - v'_j)^2``: ``abs_sum = sum w|v|``, ``square_sum = sum w v^2`` and
    ``count = sum w``, so :attr:`BlockCosts.unify` and :attr:`BlockCosts.mean_abs` give the
    weighted unification cost and the weighted mean magnitude, which is the nearest common
    magnitude in that distance. Layer-wise calibration weighs each input column by its
    energy ``E[x_j^2]`` (:mod:`nncodec_unify.method.calibrate`).
    """
    matrix = _as_matrix(array).astype(np.float64)
    rows, cols = matrix.shape
    block_rows, block_cols = block
    if weights is None:
        count = block_sizes(rows, cols, block_rows, block_cols).astype(np.float64)
        return BlockCosts(block_sums(np.abs(matrix), block), block_sums(matrix * matrix, block), count)
    element_weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), matrix.shape)
    if not (element_weights >= 0).all():
        raise ValueError("weights must be non-negative (and not nan)")
    count = block_sums(element_weights, block)
    # a block whose weights are all zero costs nothing either way; count 1 keeps the division finite
    count = np.where(count > 0, count, 1.0)
    return BlockCosts(block_sums(element_weights * np.abs(matrix), block),
                      block_sums(element_weights * matrix * matrix, block), count)


def _running_smallest_sums(values: np.ndarray, keep: int) -> np.ndarray:
    """``out[k]`` = sum of the ``keep`` smallest of ``values[:k]`` (``inf`` while ``k < keep``)."""
    out = np.full(values.size + 1, np.inf)
    if keep == 0:
        out[:] = 0.0
        return out
    heap: list[float] = []  # max-heap through negation
    total = 0.0
    for k, value in enumerate(values.tolist(), start=1):
        if len(heap) < keep:
            heapq.heappush(heap, -value)
            total += value
        elif value < -heap[0]:
            total += value + heapq.heapreplace(heap, -value)
        if len(heap) == keep:
            out[k] = total
    return out


def _smallest(indices: np.ndarray, values: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` entries of ``indices`` whose ``values`` are least (ties: earlier first)."""
    if keep == 0:
        return indices[:0]
    order = np.argsort(values[indices], kind="stable")
    return indices[order[:keep]]


def select_blocks(prune_cost: np.ndarray, unify_cost: np.ndarray, n_prune: int, n_unify: int) -> np.ndarray:
    """Exact least-cost choice of ``n_prune`` pruned and ``n_unify`` unified blocks.

    ``prune_cost`` and ``unify_cost`` are flat arrays (``unify_cost <= prune_cost``, a dense
    block costs 0). Returns a flat uint8 array of :class:`BlockKind` values minimising
    ``sum(prune_cost[pruned]) + sum(unify_cost[unified])``. See the module docstring for why
    the split sweep is exact; ties are broken by position, so the result is deterministic.

    >>> kinds = select_blocks(np.array([4.0, 1.0, 9.0]), np.array([0.0, 1.0, 1.0]), 1, 1)
    >>> [BlockKind(k).name for k in kinds]
    ['UNIFIED', 'PRUNED', 'DENSE']
    """
    prune_cost = np.asarray(prune_cost, dtype=np.float64).ravel()
    unify_cost = np.asarray(unify_cost, dtype=np.float64).ravel()
    total = prune_cost.size
    if unify_cost.size != total:
        raise ValueError("prune_cost and unify_cost must have the same size")
    if n_prune < 0 or n_unify < 0 or n_prune + n_unify > total:
        raise ValueError(f"cannot choose {n_prune} pruned and {n_unify} unified blocks out of {total}")
    kinds = np.full(total, BlockKind.DENSE, dtype=np.uint8)
    order = np.argsort(prune_cost - unify_cost, kind="stable")
    prefix = _running_smallest_sums(prune_cost[order], n_prune)
    suffix = _running_smallest_sums(unify_cost[order][::-1], n_unify)[::-1]
    split = int(np.argmin(prefix + suffix))
    kinds[_smallest(order[:split], prune_cost, n_prune)] = BlockKind.PRUNED
    kinds[_smallest(order[split:], unify_cost, n_unify)] = BlockKind.UNIFIED
    return kinds


def select_threshold(prune_cost: np.ndarray, unify_cost: np.ndarray, n_prune: int, threshold: float) -> np.ndarray:
    """Prune ``n_prune`` blocks and unify every other block with ``u_b <= threshold * p_b``.

    The pruned blocks are those with the least ``p_b - c_b``, where ``c_b`` is what the block
    costs when not pruned (``u_b`` if it qualifies for unification, else 0): exact for the rule.
    """
    prune_cost = np.asarray(prune_cost, dtype=np.float64).ravel()
    unify_cost = np.asarray(unify_cost, dtype=np.float64).ravel()
    if not 0 <= n_prune <= prune_cost.size:
        raise ValueError(f"cannot prune {n_prune} blocks out of {prune_cost.size}")
    qualifies = unify_cost <= threshold * prune_cost
    kinds = np.where(qualifies, BlockKind.UNIFIED, BlockKind.DENSE).astype(np.uint8)
    saving = prune_cost - np.where(qualifies, unify_cost, 0.0)
    kinds[np.argsort(saving, kind="stable")[:n_prune]] = BlockKind.PRUNED
    return kinds


def select_kinds(array: np.ndarray, target: Target, weights: np.ndarray | None = None) -> np.ndarray:
    """The least-cost block kinds grid (uint8 :class:`BlockKind`) of one tensor for ``target``.

    ``weights`` makes the cost a weighted squared distance (see :func:`block_costs`).
    """
    costs = block_costs(array, target.block, weights)
    n_prune, n_unify = target.counts(costs.count.size)
    return select_counts(costs, n_prune, n_unify, target.unify_threshold)


def select_counts(costs: BlockCosts, n_prune: int, n_unify: int, unify_threshold: float | None = None) -> np.ndarray:
    """Block kinds grid for exactly ``n_prune`` pruned and ``n_unify`` unified blocks of ``costs``
    (or, with ``unify_threshold``, the threshold rule with ``n_prune`` pruned blocks)."""
    if unify_threshold is not None:
        flat = select_threshold(costs.prune, costs.unify, n_prune, unify_threshold)
    else:
        flat = select_blocks(costs.prune, costs.unify, n_prune, n_unify)
    return flat.reshape(costs.count.shape)


def project(array: np.ndarray, kinds: np.ndarray, block: tuple[int, int], weights: np.ndarray | None = None,
            ) -> np.ndarray:
    """``array`` projected onto the structure ``kinds``: same shape and dtype.

    Pruned blocks become 0, unified blocks ``sign(v) * mean(|v|)`` (sign of 0 taken as +;
    with ``weights`` the weighted mean, see :func:`block_costs`), dense blocks are unchanged.
    The magnitude is computed in float64 and rounded once to the array's dtype, so every
    element of a unified block has the same magnitude exactly.
    """
    array = np.asarray(array)
    matrix = _as_matrix(array)
    rows, cols = matrix.shape
    block_rows, block_cols = block
    if kinds.shape != grid_shape(rows, cols, block_rows, block_cols):
        raise ValueError(f"kinds grid {kinds.shape} does not match a {rows}x{cols} matrix in {block} blocks")
    magnitude = block_costs(array, block, weights).mean_abs.astype(array.dtype)
    element_kinds = expand_blocks(kinds, block_rows, block_cols, rows, cols)
    element_magnitude = expand_blocks(magnitude, block_rows, block_cols, rows, cols)
    signed = np.where(np.signbit(matrix) & (matrix != 0), -element_magnitude, element_magnitude)
    out = np.where(element_kinds == BlockKind.DENSE, matrix, signed)
    out = np.where(element_kinds == BlockKind.PRUNED, np.zeros((), dtype=array.dtype), out)
    return out.astype(array.dtype, copy=False).reshape(array.shape)


def projection_cost(array: np.ndarray, kinds: np.ndarray, block: tuple[int, int]) -> float:
    """Squared distance ``||array - project(array, kinds)||^2`` from the block costs (float64)."""
    costs = block_costs(array, block)
    return float(costs.prune[kinds == BlockKind.PRUNED].sum() + costs.unify[kinds == BlockKind.UNIFIED].sum())


def selected_targets(names: Sequence[str], shapes: Mapping[str, tuple[int, ...]], default: Target | None, *,
                     rules: Sequence[tuple[str, Target | None]] = (),
                     exclude_first_last: bool = False) -> dict[str, Target]:
    """Which tensors are constrained, and to what.

    By default (``default`` not None) every tensor with at least 2 dimensions gets ``default``;
    1-D and 0-dim tensors are left alone. ``rules`` are ``(glob pattern, Target or None)``
    pairs; later rules win; ``None`` leaves a matching tensor unconstrained and a Target
    constrains it (even a 1-D one). ``exclude_first_last`` leaves out the first and the last
    tensor, in ``names`` order, that the defaults would constrain (a network's input and
    output layers are usually the most sensitive). A rule whose pattern matches no name
    warns (UserWarning): a mistyped pattern would silently leave its layers as they were.
    """
    default_names = [name for name in names if len(shapes[name]) >= 2] if default is not None else []
    skipped = {default_names[0], default_names[-1]} if exclude_first_last and default_names else set()
    targets: dict[str, Target] = {}
    matched: set[str] = set()
    for name in names:
        target = default if name in default_names and name not in skipped else None
        for pattern, rule_target in rules:
            if fnmatch.fnmatchcase(name, pattern):
                target = rule_target
                matched.add(pattern)
        if target is not None:
            targets[name] = target
    for pattern in dict.fromkeys(pattern for pattern, _ in rules):
        if pattern not in matched:  # a typo would leave what it meant unconstrained, or constrained
            warnings.warn(f"rule {pattern!r} matches no tensor name", stacklevel=3)
    return targets


def plan_kinds(arrays: Mapping[str, np.ndarray], targets: Mapping[str, Target], *,
               budget: Target | None = None, normalize: str = "none",
               weights: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Block kinds grid for every tensor named in ``targets``.

    Per tensor by default, each at its own target's ratios. With a global ``budget`` its ratios
    (or threshold) apply to the total number of blocks of all these tensors (each keeps its own
    target's block shape, the per-tensor ratios are ignored) and the exact selection runs over
    the union of their blocks, comparing absolute squared distances (``normalize="none"``) or
    distances divided by each tensor's mean square weight (``"rms"``). ``weights`` maps names
    to non-negative element weights broadcastable to the tensor's matrix view: those tensors'
    distances are weighted (:func:`block_costs`); tensors not in it are unweighted.
    """
    weights = weights or {}
    if normalize not in ("none", "rms"):
        raise ValueError(f"normalize must be 'none' or 'rms', got {normalize!r}")
    names = [name for name in arrays if name in targets]

    def finite(name: str) -> np.ndarray:  # each array read once (``arrays`` may read it lazily)
        array = arrays[name]
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: holds NaN or infinite values; blocks cannot be chosen by cost")
        return array

    if budget is None:
        return {name: select_kinds(finite(name), targets[name], weights.get(name)) for name in names}
    if not names:
        return {}
    costs = {name: block_costs(finite(name), targets[name].block, weights.get(name)) for name in names}
    prunes, unifies = [], []
    for name in names:
        scale = 1.0
        if normalize == "rms":
            mean_square = float(costs[name].square_sum.sum() / costs[name].count.sum())
            scale = 1.0 / mean_square if mean_square > 0 else 1.0
        prunes.append(costs[name].prune.ravel() * scale)
        unifies.append(costs[name].unify.ravel() * scale)
    prune_all, unify_all = np.concatenate(prunes), np.concatenate(unifies)
    n_prune, n_unify = budget.counts(prune_all.size)
    if budget.unify_threshold is not None:
        # the threshold compares u_b with p_b of the same block: scaling does not change who qualifies
        flat = select_threshold(prune_all, unify_all, n_prune, budget.unify_threshold)
    else:
        flat = select_blocks(prune_all, unify_all, n_prune, n_unify)
    out, start = {}, 0
    for name in names:
        size = costs[name].count.size
        out[name] = flat[start:start + size].reshape(costs[name].count.shape)
        start += size
    return out


def project_arrays(arrays: Mapping[str, np.ndarray], targets: Mapping[str, Target], *,
                   budget: Target | None = None, normalize: str = "none",
                   weights: Mapping[str, np.ndarray] | None = None,
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Project every tensor named in ``targets`` (see :func:`plan_kinds`, whose ``weights`` also
    weight the unified magnitudes here); others pass unchanged.

    Returns ``(projected, kinds)``.
    """
    weights = weights or {}
    kinds = plan_kinds(arrays, targets, budget=budget, normalize=normalize, weights=weights)
    projected = {name: project(array, kinds[name], targets[name].block, weights.get(name)) if name in kinds else array
                 for name, array in arrays.items()}
    return projected, kinds
