"""ADMM towards micro-structured unification and pruning, masked fine-tuning, snap to grid.

This module plugs into **your** training loop and owns no loop: it adds a penalty term or
gradient hooks to the loop you have. The recipe:

1. ``admm = ADMM(model, Target(prune_ratio=0.6, unify_ratio=0.3, block=(4, 4)))`` picks the
   constrained parameters (by default every parameter with >= 2 dimensions; ``rules`` override
   by name pattern, ``exclude_first_last`` leaves out the first and last layers) and sets
   ``Z = Proj(W)``, ``U = 0``.
2. Train with the augmented loss ``f(W) + sum rho/2 ||W - Z + U||^2``: either add
   ``admm.penalty()`` to the loss, or call ``admm.attach(optimizer)`` once, which adds
   ``rho (W - Z + U)`` to the gradients just before every ``optimizer.step()`` (the same
   update for SGD; within float rounding for Adam). Every few hundred steps, call
   ``admm.update()``: ``Z <- Proj(W + U)``, ``U <- U + W - Z``, then ``rho`` grows by
   ``rho_growth`` up to ``rho_max`` (the scaled dual ``U`` is rescaled by ``rho_old / rho_new``
   so that the dual ``rho U`` is unchanged, unless ``rescale_dual=False``).
3. ``structure = admm.hard_project()`` sets ``W = Proj(W)`` and returns the :class:`Structure`
   (kinds of every block, signs of every unified block).
4. Fine-tune with ``structure.attach(optimizer)``: pruned weights stay exactly zero, each
   unified block keeps its signs and trains one shared magnitude (gradient
   ``sum_j sign_j df/dw_j``), dense weights train freely. The structure is re-imposed after every
   step, so it holds exactly whatever the optimizer (momentum, Adam, weight decay) does.
   Optionally, ``GridTraining(model, config).attach(optimizer)`` (after the structure's) makes
   the fine-tuning quantization-aware: forward and backward on the codec's grid, updates on
   float shadows (straight-through).
5. ``state = snap_to_grid(model, config)`` rounds every float tensor of the state dict onto the
   codec's quantization grid in place and returns ``{name: array}``; then
   ``decode(encode(state, config=config))`` gives those arrays bit for bit, so the model you
   evaluate after snapping is exactly the model that decodes. (Rounding can turn a unified
   block of tiny magnitude into a pruned one, or a dense block into a unified one; the encoder
   derives kinds from the levels, so that costs nothing.)

Choosing ``rho``: it is the weight of the pull towards the set. With SGD a start of 1e-4 to 1e-2
is usual; with Adam, whose steps do not scale with the gradient, start at 0.05 to 0.5 (lower
starts collapsed the accuracy at the hard projection of LeNet-5 on MNIST; the digits demo uses
0.05, the Fashion-MNIST benchmark 0.2). Grow it by 1.1 to 2 per update.

Example (a few lines inside your own loop)::

    admm = ADMM(model, Target(prune_ratio=0.7, unify_ratio=0.25), rho=0.1, rho_max=10)
    admm.attach(optimizer)                     # or: loss = loss + admm.penalty()
    for step, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
        if step % 200 == 199:
            admm.update()
    structure = admm.hard_project()
    structure.attach(optimizer)                # fine-tune: the structure holds exactly
    ...                                        # train some more
    state = snap_to_grid(model, config)        # then encode(state, config=config)

Build the :class:`ADMM` and :class:`Structure` after moving the model to its device: their
tensors live on the parameters' devices.

Distributed: under ``DistributedDataParallel`` the parameters are identical on every rank
after each step, and the projection (numpy, float64, ties broken by position) is
deterministic, so ``Z`` and ``U`` stay identical without communication (with ``importance``,
pass every rank the same weights: compute them on the same batches). Pass the DDP-wrapped
or the bare module; names are those of the bare module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..codec.blocks import grid_shape, matrix_shape
from ..codec.config import EncoderConfig
from ..codec.format import BlockKind, CodingMode, DType
from ..codec.quant import MAX_LEVEL, dequantize, quantize, step_size
from ..codec.tensors import BFloat16Array
from .unify import Target, plan_kinds, project, selected_targets

__all__ = ["ADMM", "GridTraining", "Structure", "same_bits", "snap_to_grid", "structure_from_weights", "unwrap"]

_TORCH_TO_DTYPE = {torch.float32: DType.FLOAT32, torch.float16: DType.FLOAT16, torch.bfloat16: DType.BFLOAT16,
                   torch.float64: DType.FLOAT64}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside ``DistributedDataParallel`` / ``DataParallel``, else ``model``."""
    if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return model.module
    return model


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.cpu().numpy()


def _from_numpy(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=like.device, dtype=like.dtype)


class ADMM:
    """ADMM state for the constrained parameters of ``model``; see the module docstring.

    ``target`` applies to every parameter the defaults constrain (>= 2-D); ``rules`` are
    ``(glob, Target or None)`` pairs on parameter names, later ones winning (``None`` frees a
    parameter). With a global ``budget`` (a :class:`Target` whose ratios count all constrained
    blocks together), the blocks to prune and unify are chosen across layers by cost
    (:func:`nncodec_unify.method.unify.plan_kinds`); each parameter keeps its own target's block shape,
    and a rule's ``Target()`` (no pruning, no unification) keeps its parameter dense, outside
    the budget (as calibration does).

    ``importance`` maps constrained parameter names to non-negative weights broadcastable to
    the parameter's matrix view, e.g. one per input column as ``(1, cols)`` (the energy
    ``E[x_j^2]`` of the layer's inputs, :func:`nncodec_unify.method.calibrate.input_energies`): ADMM
    then runs in the weighted distance ``sum w (W - Z)^2`` (each tensor's weights scaled to mean
    1): the penalty and its gradient are weighted, and the projection chooses blocks and unified
    magnitudes by weighted cost, so blocks that feed strong inputs are kept first.
    """

    def __init__(self, model: torch.nn.Module, target: Target | None = None, *,
                 rules: Sequence[tuple[str, Target | None]] = (), exclude_first_last: bool = False,
                 budget: Target | None = None, normalize: str = "none",
                 importance: Mapping[str, np.ndarray] | None = None,
                 rho: float = 1e-3, rho_growth: float = 1.3, rho_max: float = 1.0,
                 rescale_dual: bool = True) -> None:
        if not rho > 0 or not rho_growth >= 1 or not rho_max >= rho:
            raise ValueError(f"need rho > 0, rho_growth >= 1 and rho_max >= rho; got {rho}, {rho_growth}, {rho_max}")
        for argument, value in (("target", target), ("budget", budget)):
            if value is not None and not isinstance(value, Target):
                raise TypeError(f"{argument} must be a Target or None, got {value!r}")
        self.model = unwrap(model)
        named = dict(self.model.named_parameters())
        default = target if target is not None else (budget if budget is not None else Target())
        self.targets = selected_targets(list(named), {n: tuple(p.shape) for n, p in named.items()}, default,
                                        rules=rules, exclude_first_last=exclude_first_last)
        self.params = {name: named[name] for name in self.targets}
        self.budget, self.normalize = budget, normalize
        self.rho, self.rho_growth, self.rho_max, self.rescale_dual = rho, rho_growth, rho_max, rescale_dual
        self.importance = self._element_weights(importance or {})
        if self.importance and torch.distributed.is_available() and torch.distributed.is_initialized():
            self.importance = self._from_rank_zero(self.importance)
        # float32 at least: a half-precision weight could overflow, or round away from the projection's metric
        self._penalty_weights = {
            name: torch.from_numpy(np.ascontiguousarray(w.reshape(self.params[name].shape))).to(
                device=self.params[name].device, dtype=torch.promote_types(self.params[name].dtype, torch.float32))
            for name, w in self.importance.items()}
        self.kinds: dict[str, np.ndarray] = {}
        with torch.no_grad():
            self.Z = self._project({name: p.detach() for name, p in self.params.items()})
            self.U = {name: torch.zeros_like(p) for name, p in self.params.items()}

    def _element_weights(self, importance: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``importance`` checked and broadcast to each matrix view, float64, scaled to mean 1."""
        out = {}
        for name, weights in importance.items():
            if name not in self.params:
                raise ValueError(f"importance names {name!r}, which is not a constrained parameter "
                                 f"(constrained: {', '.join(self.params) or 'none'})")
            shape = matrix_shape(tuple(self.params[name].shape))
            try:
                element = np.broadcast_to(np.asarray(weights, dtype=np.float64), shape)
            except ValueError:
                raise ValueError(f"importance of {name}: shape {np.shape(weights)} does not broadcast to its "
                                 f"matrix view {shape}") from None
            if not np.isfinite(element).all() or (element < 0).any() or not element.any():
                raise ValueError(f"importance of {name}: weights must be finite, non-negative and not all 0")
            out[name] = element / element.mean()
        return out

    def _from_rank_zero(self, importance: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rank 0's weights on every rank of the process group: energies measured on different
        devices or shards can differ in the last bits, and a tie decided differently would part
        the ranks' Z for good (every rank must name the same parameters)."""
        out = {}
        for name in sorted(importance):
            tensor = torch.from_numpy(np.ascontiguousarray(importance[name])).to(self.params[name].device)
            torch.distributed.broadcast(tensor, src=0)
            out[name] = tensor.cpu().numpy()
        return out

    def _project(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        arrays = {name: _to_numpy(t) for name, t in tensors.items()}
        # a rule's Target() (no pruning, no unification) keeps its tensor dense, outside a global
        # budget, as calibration's in_budget does
        kept = {name for name, target in self.targets.items()
                if not (target.prune_ratio or target.unify_ratio or target.unify_threshold is not None)}
        self.kinds = plan_kinds({n: a for n, a in arrays.items() if n not in kept}, self.targets, budget=self.budget,
                                normalize=self.normalize, weights=self.importance)
        self.kinds.update(plan_kinds({n: a for n, a in arrays.items() if n in kept}, self.targets))
        return {name: _from_numpy(project(arrays[name], self.kinds[name], self.targets[name].block,
                                          self.importance.get(name)), tensors[name])
                for name in tensors}

    def _weighted(self, name: str, difference: torch.Tensor) -> torch.Tensor:
        weights = self._penalty_weights.get(name)
        return difference if weights is None else difference * weights

    def penalty(self) -> torch.Tensor:
        """``sum rho/2 ||W - Z + U||^2`` over the constrained parameters (weighted by the
        importance, if any), differentiable in W."""
        total = torch.zeros(())
        for name, param in self.params.items():
            difference = param - self.Z[name] + self.U[name]
            total = total + (self._weighted(name, difference) * difference).sum()  # promotes to the widest dtype
        return 0.5 * self.rho * total

    @torch.no_grad()
    def add_penalty_grad_(self) -> None:
        """Add ``rho (W - Z + U)`` (times the importance, if any) to each constrained parameter's
        ``.grad`` (the penalty's gradient); a frozen parameter (``requires_grad`` False) is left
        alone, as it would be by the loss (a ``.grad`` set on it would make the optimizer step it)."""
        for name, param in self.params.items():
            if not param.requires_grad:
                continue
            term = (self.rho * self._weighted(name, param - self.Z[name] + self.U[name])).to(param.dtype)
            if param.grad is None:
                param.grad = term.clone()
            else:
                param.grad.add_(term)

    def attach(self, optimizer: torch.optim.Optimizer):
        """Make ``optimizer.step()`` include the penalty's gradient; returns a removable handle."""
        return optimizer.register_step_pre_hook(lambda *_: self.add_penalty_grad_())

    @torch.no_grad()
    def update(self) -> dict[str, float]:
        """One ADMM dual step: ``Z <- Proj(W + U)``, ``U <- U + W - Z``, then grow ``rho``.

        Returns ``primal`` (:meth:`distance`: ``||W - Z|| / ||W||`` over all constrained parameters, after the
        update) and ``rho`` (the new value).
        """
        self.Z = self._project({n: p.detach() + self.U[n] for n, p in self.params.items()})
        for name, param in self.params.items():
            self.U[name].add_(param - self.Z[name])
        primal = self.distance()
        new_rho = min(self.rho * self.rho_growth, self.rho_max)
        if self.rescale_dual and new_rho != self.rho:
            for u in self.U.values():
                u.mul_(self.rho / new_rho)
        self.rho = new_rho
        return {"primal": primal, "rho": self.rho}

    @torch.no_grad()
    def distance(self) -> float:
        """``||W - Z|| / ||W||`` over all constrained parameters, in the metric ADMM runs in
        (weighted by the importance, where given)."""
        num = den = 0.0
        for name, param in self.params.items():
            difference, value = (param - self.Z[name]).double(), param.double()
            num += float((self._weighted(name, difference) * difference).sum())
            den += float((self._weighted(name, value) * value).sum())
        return math.sqrt(num / den) if den > 0 else 0.0

    @torch.no_grad()
    def hard_project(self) -> Structure:
        """Set every constrained ``W`` to ``Proj(W)`` and return the resulting :class:`Structure`."""
        projected = self._project({n: p.detach() for n, p in self.params.items()})
        for name, param in self.params.items():
            param.copy_(projected[name])
        return Structure(self.model, self.kinds, {n: t.block for n, t in self.targets.items()})

    def state_dict(self) -> dict:
        """Z, U and rho, for checkpointing alongside the model and optimizer."""
        return {"Z": {n: z.clone() for n, z in self.Z.items()}, "U": {n: u.clone() for n, u in self.U.items()},
                "rho": self.rho}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore Z, U and rho from :meth:`state_dict` (copies: updates never write into ``state``)."""
        self.Z = {n: state["Z"][n].to(self.params[n], copy=True) for n in self.params}
        self.U = {n: state["U"][n].to(self.params[n], copy=True) for n in self.params}
        self.rho = float(state["rho"])


@dataclasses.dataclass
class _Masks:
    param: torch.nn.Parameter
    block: tuple[int, int]
    kinds: np.ndarray
    keep: torch.Tensor  # 1 on dense elements, else 0 (param's shape)
    sign: torch.Tensor  # +-1 on unified elements, else 0
    unified: torch.Tensor  # bool grid of unified blocks
    count: torch.Tensor  # elements per block (grid, float)


def _block_sum(matrix: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Per-block sums of a 2-D tensor (partial edge blocks padded with zeros); deterministic."""
    rows, cols = matrix.shape
    block_rows, block_cols = block
    grid_rows, grid_cols = -(-rows // block_rows), -(-cols // block_cols)
    padded = F.pad(matrix, (0, grid_cols * block_cols - cols, 0, grid_rows * block_rows - rows))
    return padded.reshape(grid_rows, block_rows, grid_cols, block_cols).sum(dim=(1, 3))


def _block_expand(grid: torch.Tensor, block: tuple[int, int], rows: int, cols: int) -> torch.Tensor:
    return grid.repeat_interleave(block[0], dim=0).repeat_interleave(block[1], dim=1)[:rows, :cols]


class Structure:
    """A fixed pattern of block kinds and unified signs, kept exactly during fine-tuning.

    ``kinds`` maps parameter names (of the bare module) to uint8 :class:`BlockKind` grids and
    ``blocks`` to block shapes. The signs of unified blocks are read from the current weights
    (zero counts as +), so build it right after the projection.
    """

    def __init__(self, model: torch.nn.Module, kinds: Mapping[str, np.ndarray],
                 blocks: Mapping[str, tuple[int, int]]) -> None:
        self.model = unwrap(model)
        named = dict(self.model.named_parameters())
        self.masks: dict[str, _Masks] = {}
        for name, grid in kinds.items():
            if name not in named:
                raise KeyError(f"{name}: not a parameter of the model (names are those of named_parameters())")
            param, block = named[name], tuple(blocks[name])
            rows, cols = matrix_shape(tuple(param.shape))
            grid = np.asarray(grid)
            if grid.shape != grid_shape(rows, cols, *block):
                raise ValueError(f"{name}: kinds grid {grid.shape} does not match a {rows}x{cols} matrix in {block} "
                                 f"blocks (needs {grid_shape(rows, cols, *block)})")
            if grid.size and (grid.min() < 0 or grid.max() > max(BlockKind)):
                raise ValueError(f"{name}: kinds grid holds values other than the block kinds 0..{max(BlockKind)}")
            grid_t = torch.from_numpy(np.asarray(grid, dtype=np.int64)).to(param.device)
            element = _block_expand(grid_t, block, rows, cols)
            with torch.no_grad():
                positive = torch.where(param.detach().reshape(rows, cols) < 0, -1.0, 1.0).to(param.dtype)
            sign = torch.where(element == BlockKind.UNIFIED, positive, torch.zeros_like(positive))
            ones = torch.ones(rows, cols, dtype=torch.float64, device=param.device)
            self.masks[name] = _Masks(
                param, block, np.asarray(grid, dtype=np.uint8),
                (element == BlockKind.DENSE).to(param.dtype).reshape(param.shape), sign.reshape(param.shape),
                grid_t == BlockKind.UNIFIED, _block_sum(ones, block))
        self.enforce_()

    @property
    def kinds(self) -> dict[str, np.ndarray]:
        return {name: m.kinds for name, m in self.masks.items()}

    @torch.no_grad()
    def project_gradients_(self) -> None:
        """Pruned: gradient 0. Unified: ``sign_j * sum_k sign_k g_k`` (the shared magnitude's gradient)."""
        for m in self.masks.values():
            grad = m.param.grad
            if grad is None:
                continue
            rows, cols = matrix_shape(tuple(grad.shape))
            shared = _block_sum((grad * m.sign).reshape(rows, cols).double(), m.block)
            unified = _block_expand(shared, m.block, rows, cols).to(grad.dtype).reshape(grad.shape) * m.sign
            grad.mul_(m.keep).add_(unified)

    @torch.no_grad()
    def enforce_(self) -> None:
        """Re-impose the structure on the weights: pruned 0, unified ``sign * mean(sign * w)``."""
        for m in self.masks.values():
            param = m.param
            rows, cols = matrix_shape(tuple(param.shape))
            signed = (param * m.sign).reshape(rows, cols).double()
            magnitude = (_block_sum(signed, m.block) / m.count).to(param.dtype)
            unified = _block_expand(magnitude, m.block, rows, cols).reshape(param.shape) * m.sign
            param.mul_(m.keep).add_(unified)

    def attach(self, optimizer: torch.optim.Optimizer) -> list:
        """Project gradients before and re-impose the structure after every ``optimizer.step()``."""
        return [optimizer.register_step_pre_hook(lambda *_: self.project_gradients_()),
                optimizer.register_step_post_hook(lambda *_: self.enforce_())]

    @torch.no_grad()
    def holds(self) -> bool:
        """Whether the weights have the structure exactly (pruned 0, unified magnitudes all equal)."""
        for m in self.masks.values():
            rows, cols = matrix_shape(tuple(m.param.shape))
            value = m.param.detach().reshape(rows, cols)
            keep = m.keep.reshape(rows, cols)
            sign = m.sign.reshape(rows, cols)
            if bool(((value != 0) & (keep == 0) & (sign == 0)).any()):
                return False
            signed = torch.where(sign != 0, value * sign, torch.full_like(value, math.nan))
            first = _block_expand(_top_left(signed, m.block), m.block, rows, cols)
            if bool(((signed != first) & (sign != 0)).any()):
                return False
        return True


def _top_left(matrix: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    return matrix[::block[0], ::block[1]]


def structure_from_weights(model: torch.nn.Module, kinds: Mapping[str, np.ndarray],
                           blocks: Mapping[str, tuple[int, int]]) -> Structure:
    """Project the named parameters onto ``kinds`` (as :func:`nncodec_unify.method.unify.project`) and
    return the :class:`Structure` that keeps them there: a structure chosen without ADMM, e.g.
    for magnitude-pruning baselines."""
    named = dict(unwrap(model).named_parameters())
    with torch.no_grad():
        for name, grid in kinds.items():
            param = named[name]
            param.copy_(_from_numpy(project(_to_numpy(param), grid, tuple(blocks[name])), param))
    return Structure(model, kinds, blocks)


def _snap_array(array: np.ndarray, dtype: DType, qp: int, qp_density: int) -> np.ndarray | None:
    """The array on the codec's grid, or None where the encoder would code it RAW (exactly)."""
    if array.size == 0 or not np.isfinite(array).all():
        return None
    step = step_size(qp, qp_density)
    if float(np.max(np.abs(array))) / float(step) >= MAX_LEVEL:
        return None
    for _ in range(4):  # float16/bfloat16: rounding l*step to the type can move to another level
        snapped = dequantize(quantize(array, step), step, dtype)
        if np.array_equal(snapped, array):
            break
        array = snapped
    return array


@torch.no_grad()
def snap_to_grid(model: torch.nn.Module | Mapping[str, torch.Tensor], config: EncoderConfig | None = None,
                 *, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Round every float tensor of the state dict onto the codec's grid, in place.

    Each tensor is quantized as :func:`nncodec_unify.encode` with ``config`` will quantize it
    (its qp from ``config.coding_for``; RAW-coded tensors are left alone) and replaced by the
    exact reconstruction ``float32(level) * float32(step)``. Returns ``{name: array}`` of the
    whole state (``names`` restricts it), ready for ``encode(state, config=config)``, whose
    decoding is bit-identical to the model as it now is: numpy arrays, a bfloat16 tensor as a
    :class:`~nncodec_unify.codec.tensors.BFloat16Array` (so that it is coded as bfloat16), and
    tensors that share their data (tied weights) as one array under each name (so that it is
    coded once; snapped with the first name's coding).
    """
    config = config or EncoderConfig()
    state = unwrap(model).state_dict() if isinstance(model, torch.nn.Module) else dict(model)
    wanted = set(names) if names is not None else None
    out: dict[str, object] = {}
    arrays: dict[tuple, object] = {}  # by the tensor's place in memory: tied tensors are one array
    for name, tensor in state.items():
        if wanted is not None and name not in wanted:
            continue
        place = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                 tuple(tensor.stride()), tensor.dtype) if tensor.numel() else None
        if place in arrays:
            out[name] = arrays[place]
            continue
        dtype = _TORCH_TO_DTYPE.get(tensor.dtype)
        if dtype is not None:
            coding = config.coding_for(name, dtype, tensor.dim())
            if coding.mode != CodingMode.RAW:
                snapped = _snap_array(_to_numpy(tensor), dtype, coding.qp, coding.qp_density)
                if snapped is not None:
                    tensor.copy_(torch.from_numpy(np.ascontiguousarray(snapped)).reshape(tensor.shape))
        out[name] = _to_numpy(tensor).copy()
        if tensor.dtype == torch.bfloat16:  # exact: a bfloat16 value is a float32 with 16 zero low bits
            out[name] = BFloat16Array((np.ascontiguousarray(out[name]).view(np.uint32) >> 16).astype(np.uint16))
        if place is not None:
            arrays[place] = out[name]
    return out


class GridTraining:
    """Quantization-aware fine-tuning on the codec's grid (straight-through estimator).

    The forward and backward passes see the weights exactly as the codec will reconstruct them
    (each parameter snapped as :func:`snap_to_grid` snaps it for ``config``); the optimizer
    updates float "shadow" copies with those gradients, so steps smaller than the grid's step
    accumulate instead of being rounded away. ``attach(optimizer)`` swaps the shadows in just
    before every ``optimizer.step()`` and snaps again just after. Attach it **after**
    :meth:`Structure.attach`, so that the structure is imposed on the shadows before they are
    snapped (rounding is symmetric, so a unified block stays unified or becomes pruned).

    After any step, the parameters are on the grid: ``snap_to_grid`` then changes no parameter
    (it still snaps float buffers such as BatchNorm statistics).
    """

    def __init__(self, model: torch.nn.Module, config: EncoderConfig | None = None) -> None:
        self.model = unwrap(model)
        config = config or EncoderConfig()
        self.codings = {}
        for name, param in self.model.named_parameters():
            dtype = _TORCH_TO_DTYPE.get(param.dtype)
            if dtype is None:
                continue
            coding = config.coding_for(name, dtype, param.dim())
            if coding.mode != CodingMode.RAW:
                self.codings[name] = (param, dtype, coding.qp, coding.qp_density)
        self.shadows: dict[str, torch.Tensor] = {}
        self.snap_()

    @torch.no_grad()
    def snap_(self) -> None:
        """Keep the current weights as shadows and put their snapped values in the parameters."""
        for name, (param, dtype, qp, qp_density) in self.codings.items():
            self.shadows[name] = param.detach().clone()
            snapped = _snap_array(_to_numpy(param), dtype, qp, qp_density)
            if snapped is not None:
                param.copy_(_from_numpy(snapped, param).reshape(param.shape))

    @torch.no_grad()
    def restore_(self) -> None:
        """Put the float shadows back into the parameters (the optimizer steps from them)."""
        for name, (param, _, _, _) in self.codings.items():
            param.copy_(self.shadows[name])

    def attach(self, optimizer: torch.optim.Optimizer) -> list:
        """Step from the shadows, then snap: returns the two removable hook handles."""
        return [optimizer.register_step_pre_hook(lambda *_: self.restore_()),
                optimizer.register_step_post_hook(lambda *_: self.snap_())]


def same_bits(left: Mapping[str, np.ndarray], right: Mapping[str, np.ndarray]) -> bool:
    """Whether two ``{name: array}`` states hold the same names, and under each name the same
    shape, dtype and bytes (a :class:`~nncodec_unify.codec.tensors.BFloat16Array` compared as
    the float32 values it holds, which is how :func:`nncodec_unify.decode` gives bfloat16
    tensors). The order of the names does not matter: a decoded tied tensor's second name
    comes right after its first."""
    if len(left) != len(right) or set(left) != set(right):
        return False

    def values(array) -> np.ndarray:
        if isinstance(array, BFloat16Array):
            return (array.bits.astype(np.uint32) << 16).view(np.float32)
        return np.ascontiguousarray(array)

    return all(values(a).shape == values(right[n]).shape and values(a).dtype == values(right[n]).dtype
               and values(a).tobytes() == values(right[n]).tobytes() for n, a in left.items())

