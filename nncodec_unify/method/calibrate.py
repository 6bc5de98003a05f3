"""Calibrated unification and pruning of a pretrained model: layer-wise ADMM reconstruction.

For a trained model and a few batches of unlabelled inputs, the way pretrained networks are
compressed today (SparseGPT, GPTQ; ADMM weight updates as in Boža 2024): every ``nn.Linear``,
``nn.Conv1d`` and ``nn.Conv2d`` weight ``W0`` is replaced, layer by layer, by the ``W`` in the
micro-structured set ``S`` (pruned / unified / dense blocks, on the codec's quantization grid)
that best reproduces the original layer's outputs on the calibration inputs::

    min_W ||X W^T - X0 W0^T||^2   subject to   W in S

where ``X`` holds the layer's inputs (rows) as the model, with the layers before it already
compressed, computes them, and ``X0`` the original model's inputs to the same layer (with
``asymmetric=False``, ``X0 = X`` as in SparseGPT/GPTQ; the asymmetric target also makes each
layer compensate the errors of the layers before it). With a bias the objective is taken on
centred inputs and the bias keeps the mean output: ``b = b0 + W0 E[x0] - W E[x]`` (the exact
optimum of the bias for that ``W``).

The solver (:func:`solve_layer`) is ADMM on this objective with ``H = E[x x^T]`` normalised to
a unit mean diagonal and damped (``H + damping * I``, as GPTQ):

* ``W``-step, closed form: ``W (H + rho D) = W0 E[x0 x^T] + rho (Z - U) D``, solved through one
  eigendecomposition of ``D^-1/2 H D^-1/2`` per layer;
* ``Z``-step: the projection of ``W + U`` onto ``S`` in the metric ``D = diag(H)`` (each input
  column weighted by its energy, so a block fed by strong inputs is expensive to prune):
  the exact joint block selection of :mod:`nncodec_unify.method.unify` at the layer's counts of
  pruned and unified blocks, weighted unified magnitudes, then rounding onto the codec's grid
  (dense levels one by one, one level per unified block: the nearest grid point of that
  structure in that metric);
* dual update ``U <- U + W - Z`` and ``rho`` grown by ``rho_growth`` each iteration.

Every ``Z`` is feasible; the one with the least objective is kept, starting with the plain
projection of ``W0`` (iteration 0), so the result never reconstructs worse than projecting
without data. Layers are solved in the order the model calls them, in groups of layers that
read the same input (a transformer's query, key and value), with a forward pass per group over
the calibration data that stops right after the group (sequential, as SparseGPT/GPTQ do: errors
of earlier layers are seen and compensated by later ones). Memory: one group's Gram matrices
(``in x in`` float64 each).

Targets: a :class:`~nncodec_unify.method.unify.Target` for every layer (``target``), overridden by
``rules`` (glob on the weight's name, e.g. ``"encoder.layer.0.*.weight"``), or a global
``budget`` whose ratios count the blocks of all calibrated layers together and are spread over
layers by each block's weighted cost relative to its layer's output energy (measured once on
the original model). ``coding`` is the :class:`~nncodec_unify.codec.config.EncoderConfig` the model
will be encoded with: its qp (per tensor, rules included) defines the grid. After
:func:`calibrate`, ``encode(snap_to_grid(model, coding), config=coding)`` decodes to exactly
the calibrated weights.

Example::

    from nncodec_unify import EncoderConfig, encode
    from nncodec_unify.method.admm import snap_to_grid
    from nncodec_unify.method.calibrate import CalibrationConfig, calibrate
    from nncodec_unify.method.unify import Target

    coding = EncoderConfig(qp=-22)
    report = calibrate(model, batches, CalibrationConfig(
        target=Target(prune_ratio=0.2, unify_ratio=0.4, block=(4, 4)), coding=coding))
    print("\\n".join(report.lines()))
    state = snap_to_grid(model, coding)          # weights are already on the grid; buffers too
    stream = encode(state, config=coding)

``batches`` is a re-iterable (a list) of model inputs: a tensor is called as ``model(x)``, a
tuple or list as ``model(*x)``, a dict as ``model(**x)``. Padding positions of sequence models
count as inputs; batch texts of similar length (or without padding) for the cleanest Gram
matrices. Grouped convolutions, layers whose weight is computed (a parametrization,
``weight_norm``), layers the model never calls, layers whose levels would not
fit the codec's range at their qp (the encoder codes those RAW) and every use of a weight after
its first (a weight shared by several layers is calibrated once, on its first layer's inputs;
names are those of ``model.named_parameters()``, so a tied weight is reported under its first
name) are left as they are and listed in the report. Weights that are not finite are refused.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .admm import Structure, unwrap
from ..codec.blocks import block_kinds, expand_blocks, grid_shape
from ..codec.config import EncoderConfig
from ..codec.format import BlockKind, CodingMode, DType
from ..codec.quant import MAX_LEVEL, dequantize, quantize, step_size
from .unify import Target, block_costs, select_blocks, select_counts

__all__ = ["CalibrationConfig", "CalibrationReport", "LayerReport", "calibrate", "call_model", "collect_layers",
           "input_energies", "kinds_from_values", "solve_layer"]

CALIBRATED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """Options of :func:`calibrate`.

    ``target`` applies to every calibrated layer (``None``: layers only quantized onto the grid,
    no pruning or unification), ``rules`` are ``(glob on the weight name, Target or None)``
    pairs, later ones winning (``None`` leaves a layer untouched: not even calibrated). A
    ``budget`` spreads its ratios over all calibrated layers (see the module docstring); each
    layer keeps its own target's block shape. ``coding`` gives the grid (qp per tensor);
    ``iterations``, ``reselect``, ``rho``, ``rho_growth`` and ``damping`` drive the ADMM solver
    (:func:`solve_layer`);
    ``bias_correction`` lets a layer's bias absorb the mean output shift. ``sequential``
    computes each layer's inputs with the earlier layers already compressed; ``asymmetric``
    (with ``sequential``) makes the target the original model's outputs ``X0 W0^T`` rather than
    ``X W0^T``, so each layer also compensates what the layers before it lost (it keeps a copy
    of the original model in memory and runs both per group).
    """

    target: Target | None = Target(prune_ratio=0.0, unify_ratio=0.0)
    rules: tuple[tuple[str, Target | None], ...] = ()
    budget: Target | None = None
    coding: EncoderConfig = EncoderConfig()
    iterations: int = 32
    reselect: float = 0.75
    rho: float = 0.03
    rho_growth: float = 1.17
    damping: float = 0.01
    bias_correction: bool = True
    sequential: bool = True
    asymmetric: bool = True

    def __post_init__(self) -> None:
        for field in ("target", "budget"):
            if getattr(self, field) is not None and not isinstance(getattr(self, field), Target):
                raise TypeError(f"{field} must be a Target or None, got {getattr(self, field)!r}")
        if not isinstance(self.coding, EncoderConfig):
            raise TypeError(f"coding must be an EncoderConfig, got {self.coding!r}")
        rules = tuple(tuple(rule) if isinstance(rule, (tuple, list)) else rule for rule in self.rules)
        for rule in rules:
            if not (isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], str)
                    and (rule[1] is None or isinstance(rule[1], Target))):
                raise TypeError(f"rules must be (glob, Target or None) pairs, got {rule!r}")
        object.__setattr__(self, "rules", rules)
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError(f"iterations must be a non-negative integer, got {self.iterations!r}")
        if not self.rho > 0 or not self.rho_growth >= 1:
            raise ValueError(f"need rho > 0 and rho_growth >= 1, got {self.rho}, {self.rho_growth}")
        if not 0.0 <= self.reselect <= 1.0:
            raise ValueError(f"reselect must be in [0, 1], got {self.reselect}")
        if not (self.damping > 0 and math.isfinite(self.damping)):
            raise ValueError(f"damping must be positive and finite, got {self.damping}")
        if not (math.isfinite(self.rho) and math.isfinite(self.rho_growth)):
            raise ValueError(f"rho and rho_growth must be finite, got {self.rho}, {self.rho_growth}")
        targets = [self.target, self.budget, *(target for _, target in rules)]
        if any(target is not None and target.unify_threshold is not None for target in targets):
            # the layer-wise solver works to counts of pruned and unified blocks
            raise ValueError("calibration takes unify_ratio, not unify_threshold (it would be ignored): "
                             "give each Target a unify_ratio")

    def target_for(self, name: str) -> tuple[bool, Target | None]:
        """``(calibrated, target)`` for the weight ``name``."""
        calibrated, target, _ = self._resolve(name)
        return calibrated, target

    def in_budget(self, name: str) -> bool:
        """Whether the global ``budget`` covers the weight ``name``: every calibrated layer with a
        target, except those a rule gives a target without pruning or unification (kept dense)."""
        calibrated, target, from_rule = self._resolve(name)
        if not calibrated or target is None:
            return False
        return not from_rule or bool(target.prune_ratio or target.unify_ratio or target.unify_threshold is not None)

    def _resolve(self, name: str) -> tuple[bool, Target | None, bool]:
        target, calibrated, from_rule = self.target, True, False
        for pattern, rule_target in self.rules:
            if fnmatch.fnmatchcase(name, pattern):
                target, calibrated, from_rule = rule_target, rule_target is not None, True
        return calibrated, target, from_rule


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """What calibration did to one layer.

    ``plain_error`` and ``error`` are relative output errors ``||X (W - W0)^T|| / ||X W0^T||``
    on the calibration inputs (damped Gram): of the plain projection onto the same structure and
    grid without data, and of the calibrated solution. ``blocks`` is ``(pruned, unified,
    dense)`` as the codec will see them (from the levels).
    """

    name: str
    shape: tuple[int, ...]
    block: tuple[int, int]
    blocks: tuple[int, int, int]
    plain_error: float
    error: float
    best_iteration: int
    rows: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class CalibrationReport:
    """Per-layer results of :func:`calibrate`, the layers left alone, and the structure found."""

    layers: tuple[LayerReport, ...]
    skipped: tuple[tuple[str, str], ...]
    kinds: Mapping[str, np.ndarray]
    blocks: Mapping[str, tuple[int, int]]
    seconds: float

    def structure(self, model: nn.Module) -> Structure:
        """The :class:`~nncodec_unify.method.admm.Structure` of the calibrated weights, to keep exactly
        during fine-tuning (see :func:`distill`)."""
        return Structure(model, self.kinds, self.blocks)

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "skipped": [list(item) for item in self.skipped],
                "layers": [{**dataclasses.asdict(layer), "shape": list(layer.shape), "block": list(layer.block),
                            "blocks": dict(zip(("pruned", "unified", "dense"), layer.blocks, strict=True))}
                           for layer in self.layers]}

    def lines(self) -> list[str]:
        """A readable table, one line per layer."""
        out = [f"{'layer':<44} {'pruned':>7} {'unified':>7} {'dense':>7} {'plain err':>9} {'err':>7} {'s':>5}"]
        for layer in self.layers:
            out.append(f"{layer.name[:44]:<44} {layer.blocks[0]:>7} {layer.blocks[1]:>7} {layer.blocks[2]:>7} "
                       f"{layer.plain_error:>9.4f} {layer.error:>7.4f} {layer.seconds:>5.1f}")
        for name, why in self.skipped:
            out.append(f"{name[:44]:<44} left alone: {why}")
        return out


# --- the layer problem ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Grid:
    step: np.float32

    def snap(self, values: np.ndarray) -> np.ndarray:
        """Nearest grid values ``float32(level) * step`` (float64 result, exactly representable)."""
        levels = np.clip(quantize(values, self.step), -MAX_LEVEL, MAX_LEVEL)
        return dequantize(levels, self.step, DType.FLOAT32).astype(np.float64)


def _project(values: np.ndarray, weights: np.ndarray, block: tuple[int, int], counts: tuple[int, int] | None,
             grid: _Grid | None, kinds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest point of the structure (``counts`` pruned/unified blocks) and grid, weighted by
    column; with ``kinds`` given, the nearest point with those block kinds."""
    rows, cols = values.shape
    if counts is None:
        kinds = np.full(grid_shape(rows, cols, *block), BlockKind.DENSE, dtype=np.uint8)
        return (grid.snap(values) if grid else values.copy()), kinds
    costs = block_costs(values, block, weights[None, :])
    if kinds is None:
        kinds = select_counts(costs, *counts)
    magnitude = costs.mean_abs
    if grid is not None:
        magnitude = grid.snap(magnitude)
        dense = grid.snap(values)
    else:
        dense = values
    element_kinds = expand_blocks(kinds, *block, rows, cols)
    element_magnitude = expand_blocks(magnitude, *block, rows, cols)
    unified = np.where(values < 0, -element_magnitude, element_magnitude)
    out = np.where(element_kinds == BlockKind.DENSE, dense, unified)
    out[element_kinds == BlockKind.PRUNED] = 0.0
    return out, kinds


def solve_layer(weight: np.ndarray, gram: np.ndarray, *, block: tuple[int, int] = (4, 4),
                counts: tuple[int, int] | None = None, step: float | None = None, iterations: int = 32,
                rho: float = 0.03, rho_growth: float = 1.17, damping: float = 0.01,
                cross: np.ndarray | None = None, target_gram: np.ndarray | None = None,
                reselect: float = 0.75) -> tuple[np.ndarray, np.ndarray, dict]:
    """ADMM for ``min ||X W^T - X0 W0^T||^2`` over the structure and grid (module docstring).

    ``weight`` is ``W0`` as an ``out x in`` matrix and ``gram`` ``H = E[x x^T]`` of the layer's
    inputs ``x`` (centred when a bias absorbs the mean). By default the target inputs ``x0`` are
    the same ``x``; with ``cross = E[x x0^T]`` and ``target_gram = E[x0 x0^T]`` they are the
    original model's inputs, so the layer also compensates errors made before it. ``counts`` are
    the numbers of pruned and unified blocks (``None``: all blocks dense, only the grid),
    ``step`` the grid's step (``None``: no grid). The block kinds are chosen anew in every
    Z-step of the first ``reselect`` share of the iterations, then kept: the rest is ADMM with a
    fixed mask, which settles the magnitudes and the rounding (and saves the selection's cost).
    Returns ``(W, kinds, info)``: ``W`` float64 in
    the set, its selected kinds grid, and ``info`` with ``plain_error`` and ``error`` (output
    errors relative to ``||X0 W0^T||``, of the plain projection of ``W0`` and of ``W``) and
    ``best_iteration``.
    """
    w0 = np.asarray(weight, dtype=np.float64)
    h = np.asarray(gram, dtype=np.float64)
    cols = w0.shape[1]
    scale = float(np.trace(h)) / max(cols, 1)
    scale = scale if scale > 0 else 1.0
    h = h / scale + damping * np.eye(cols)
    # f(W) = tr(W H W^T) - 2 tr(W B^T) + c; damping adds damping * ||W - W0||^2 (pull towards W0)
    if cross is None:
        b = w0 @ h
        c = float(np.sum(b * w0))
    else:
        b = w0 @ (np.asarray(cross, dtype=np.float64).T / scale) + damping * w0
        c = float(np.sum((w0 @ (np.asarray(target_gram, dtype=np.float64) / scale)) * w0)) + damping * float(np.sum(w0 * w0))
    d = np.diag(h).copy()
    grid = _Grid(np.float32(step)) if step is not None else None

    def objective(w: np.ndarray) -> float:
        return max(float(np.sum((w @ h) * w)) - 2.0 * float(np.sum(w * b)) + c, 0.0)

    def relative(value: float) -> float:
        return math.sqrt(value / c) if c > 0 else 0.0

    z, kinds = _project(w0, d, block, counts, grid)
    best = (objective(z), z, kinds, 0)
    plain = best[0]
    if iterations:
        inv_sqrt_d = 1.0 / np.sqrt(d)
        eigenvalues, vectors = np.linalg.eigh(h * inv_sqrt_d[:, None] * inv_sqrt_d[None, :])
        u = np.zeros_like(w0)
        frozen_after = math.ceil(reselect * iterations)
        for iteration in range(1, iterations + 1):
            # W (H + rho D) = B + rho (Z - U) D,  H + rho D = D^1/2 (G + rho I) D^1/2
            right = (b + rho * (z - u) * d) * inv_sqrt_d
            w = (((right @ vectors) / (eigenvalues + rho)) @ vectors.T) * inv_sqrt_d
            z, kinds = _project(w + u, d, block, counts, grid, kinds if iteration > frozen_after else None)
            u += w - z
            value = objective(z)
            if value < best[0]:
                best = (value, z, kinds, iteration)
            rho_next = rho * rho_growth
            u *= rho / rho_next  # the dual rho * U is unchanged
            rho = rho_next
    value, z, kinds, iteration = best
    return z, kinds, {"plain_error": relative(plain), "error": relative(value), "best_iteration": iteration}


# --- collecting layer inputs ------------------------------------------------------------------------

class _Stop(Exception):
    """Raised by a hook to end a forward pass once the group's layers have seen their inputs."""


def call_model(model: nn.Module, batch):
    """``model(**batch)`` for a mapping, ``model(*batch)`` for a tuple or list, else ``model(batch)``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _layer_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows matching its weight's matrix view (im2col for convolutions)."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(-1) if x.dim() == 3 else x.reshape(1, *x.shape, 1)
        kernel, dilation, padding, stride = ((module.kernel_size[0], 1), (module.dilation[0], 1),
                                             (module.padding[0], 0), (module.stride[0], 1))
    else:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        kernel, dilation, padding, stride = module.kernel_size, module.dilation, module.padding, module.stride
    patches = nn.functional.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def _unsupported(module: nn.Module) -> str | None:
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.groups != 1:
            return f"grouped convolution (groups={module.groups})"
        if module.padding_mode != "zeros":
            return f"padding_mode {module.padding_mode!r}"
        if isinstance(module.padding, str):
            return f"padding {module.padding!r}"
    if not module.weight.dtype.is_floating_point:
        return "weight is not floating point"
    return None


def _layer_input(name: str, args: tuple, kwargs: dict) -> torch.Tensor:
    """The input a layer was called with, positionally or as ``input=``."""
    if args:
        return args[0]
    if "input" in kwargs:
        return kwargs["input"]
    raise ValueError(f"{name or 'the model'}: called without an input tensor (positional or input=)")


def collect_layers(model: nn.Module, batch) -> list[list[str]]:
    """Calibratable layers (module names) in the order one forward pass calls them, grouped:
    consecutive calls that read the same input tensor form one group (query/key/value)."""
    model = unwrap(model)
    calls: list[tuple[str, torch.Tensor]] = []  # the inputs are kept alive: ids of freed tensors repeat
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, CALIBRATED_TYPES):
            handles.append(module.register_forward_pre_hook(
                lambda mod, args, kwargs, name=name: calls.append((name, _layer_input(name, args, kwargs))),
                with_kwargs=True))
    try:
        with torch.no_grad():
            call_model(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    groups: list[list[str]] = []
    seen: set[str] = set()
    last_input = None
    for name, layer_input in calls:
        if name in seen:
            continue
        seen.add(name)
        if groups and layer_input is last_input:
            groups[-1].append(name)
        else:
            groups.append([name])
        last_input = layer_input
    return groups


@dataclasses.dataclass
class _Statistics:
    """Sums over the rows of one layer's inputs ``x`` (and the original model's ``x0``)."""

    gram: torch.Tensor  # sum x x^T
    total: torch.Tensor  # sum x
    cross: torch.Tensor | None = None  # sum x x0^T
    target_gram: torch.Tensor | None = None  # sum x0 x0^T
    target_total: torch.Tensor | None = None  # sum x0
    rows: int = 0

    def add(self, x: torch.Tensor, x0: torch.Tensor | None) -> None:
        # products on the inputs' device, sums kept on the CPU in float64
        x = x.detach().float()
        self.gram += (x.T @ x).double().cpu()
        self.total += x.sum(0).double().cpu()
        if x0 is not None:
            x0 = x0.detach().float()
            if x0.shape != x.shape:
                raise ValueError(f"the original and the compressed model gave inputs of shapes {tuple(x0.shape)} "
                                 f"and {tuple(x.shape)} to the same layer: the model is not deterministic")
            zero = torch.zeros_like(self.gram)
            self.cross = (self.cross if self.cross is not None else zero) + (x.T @ x0).double().cpu()
            self.target_gram = (self.target_gram if self.target_gram is not None else zero) + (x0.T @ x0).double().cpu()
            self.target_total = (self.target_total if self.target_total is not None
                                 else torch.zeros_like(self.total)) + x0.sum(0).double().cpu()
        self.rows += x.shape[0]

    def moments(self, centred: bool) -> dict[str, np.ndarray | None]:
        """``gram``, ``cross``, ``target_gram`` as expectations (centred: covariances) and the means."""
        rows = max(self.rows, 1)
        mean = self.total.numpy() / rows
        out: dict[str, np.ndarray | None] = {"gram": self.gram.numpy() / rows, "mean": mean,
                                             "cross": None, "target_gram": None, "target_mean": mean}
        if self.cross is not None:
            out["target_mean"] = self.target_total.numpy() / rows
            out["cross"] = self.cross.numpy() / rows
            out["target_gram"] = self.target_gram.numpy() / rows
        if centred:
            out["gram"] = _variances_clipped(out["gram"] - np.outer(mean, mean))
            if out["cross"] is not None:
                out["cross"] = out["cross"] - np.outer(mean, out["target_mean"])
                out["target_gram"] = _variances_clipped(out["target_gram"]
                                                        - np.outer(out["target_mean"], out["target_mean"]))
        return out


def _variances_clipped(covariance: np.ndarray) -> np.ndarray:
    """``covariance`` with its diagonal at least 0: an input that is constant over the
    calibration rows (one row, or a previous layer pruned whole) has a variance that float32
    sums leave at a rounding error of either sign, and a negative one made the metric
    negative (``weights must be non-negative``)."""
    diagonal = np.einsum("ii->i", covariance)  # a writable view of the diagonal
    np.maximum(diagonal, 0.0, out=diagonal)
    return covariance


def _capture(model: nn.Module, modules: Mapping[str, nn.Module], batch, stop_early: bool,
             sink: Callable[[str, torch.Tensor], None]) -> None:
    """One forward pass of ``batch`` handing every listed layer's input rows to ``sink``;
    with ``stop_early`` it ends once all of them have been called."""
    pending = set(modules)

    def hook(module, args, kwargs, name):
        sink(name, _layer_rows(module, _layer_input(name, args, kwargs)))
        pending.discard(name)
        if stop_early and not pending:
            raise _Stop

    handles = [m.register_forward_pre_hook(lambda mod, args, kwargs, name=name: hook(mod, args, kwargs, name),
                                           with_kwargs=True)
               for name, m in modules.items()]
    try:
        with torch.no_grad():
            call_model(model, batch)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()


def _gather(model: nn.Module, modules: Mapping[str, nn.Module], batches: Sequence, stop_early: bool,
            original: nn.Module | None = None) -> dict[str, _Statistics]:
    """Input statistics of ``modules`` over all batches (with ``original``, also against the
    original model's inputs to the same layers)."""
    stats = {name: _Statistics(torch.zeros(m.weight[0].numel(), m.weight[0].numel(), dtype=torch.float64),
                               torch.zeros(m.weight[0].numel(), dtype=torch.float64))
             for name, m in modules.items()}
    original_modules = dict(original.named_modules()) if original is not None else {}
    def add(name: str, rows: torch.Tensor, targets: dict[str, torch.Tensor], index: int) -> None:
        if not bool(torch.isfinite(rows).all()):  # named here, not as a negative metric much later
            raise ValueError(f"{name}: its inputs hold NaN or infinite values (calibration batch {index})")
        stats[name].add(rows, targets.get(name))

    for index, batch in enumerate(batches):
        targets: dict[str, torch.Tensor] = {}
        if original is not None:
            _capture(original, {n: original_modules[n] for n in modules}, batch, stop_early,
                     lambda name, rows, targets=targets: targets.setdefault(name, rows))
        _capture(model, modules, batch, stop_early,
                 lambda name, rows, targets=targets, index=index: add(name, rows, targets, index))
    return stats


def _weight_names(model: nn.Module) -> dict[str, str]:
    """Each calibratable layer's weight under its ``named_parameters()`` name, by module name:
    a weight several layers share (tied), under its first name, as the state dict has it."""
    first_names: dict[int, str] = {}
    for parameter_name, parameter in model.named_parameters():
        first_names.setdefault(id(parameter), parameter_name)
    return {name: first_names.get(id(module.weight), f"{name}.weight" if name else "weight")
            for name, module in model.named_modules() if isinstance(module, CALIBRATED_TYPES)}


def input_energies(model: nn.Module, batches: Iterable, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The energy ``E[x_j^2]`` of every input column of each ``nn.Linear`` / ``nn.Conv1d`` /
    ``nn.Conv2d`` weight (im2col columns for convolutions, in the order of the weight's matrix
    view), over all rows the layer reads in one forward pass of each batch:
    ``{weight name: array of shape (1, cols)}``, float64, under the names of
    ``model.named_parameters()`` (a weight several layers share: its first name, measured on
    the first of those layers), as ``ADMM`` names the parameters it constrains.

    The model runs in eval mode (no dropout, batch-norm statistics left alone) and is put back
    in the mode it was in. ``names`` (weight names) picks the layers, and each must be a
    supported layer the batches call (else ValueError); without it, every such layer the
    batches call, leaving out the ones they do not (a pooler) and grouped convolutions.

    This is the diagonal of the uncentred layer-wise objective ``||X W^T||^2``; calibration
    projects in the same diagonal of the centred inputs for layers with a bias. Pass it to
    ``ADMM(importance=...)``, which scales each layer's weights to mean 1: the metric then
    says which columns of a layer matter, not which layer does."""
    bare = unwrap(model)
    by_module_name = dict(bare.named_modules())
    layers: dict[str, nn.Module] = {}  # a tied weight: the first layer that has it
    for module_name, weight_name in _weight_names(bare).items():
        layers.setdefault(weight_name, by_module_name[module_name])
    explicit = names is not None
    wanted = list(names) if explicit else [name for name, module in layers.items() if _unsupported(module) is None]
    for name in wanted:
        if name not in layers:
            raise ValueError(f"{name}: not the weight of an nn.Linear, nn.Conv1d or nn.Conv2d of the model")
        problem = _unsupported(layers[name])
        if problem is not None:
            raise ValueError(f"{name}: {problem} is not supported")
    modules = {name: layers[name] for name in wanted}
    sums: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(wanted, 0)

    def add(name: str, rows: torch.Tensor) -> None:
        rows = rows.detach().double()
        sums[name] = sums.get(name, 0) + (rows * rows).sum(0).cpu()
        counts[name] += rows.shape[0]

    was_training = bare.training
    bare.eval()
    try:
        for batch in batches:
            _capture(bare, modules, batch, stop_early=False, sink=add)
    finally:
        bare.train(was_training)
    never = [name for name in wanted if counts[name] == 0]
    if never and explicit:
        raise ValueError(f"the batches never called {', '.join(never)}")
    return {name: (sums[name] / counts[name]).numpy()[None, :] for name in wanted if counts[name]}


# --- the flow ---------------------------------------------------------------------------------------

_TORCH_DTYPES = {torch.float32: DType.FLOAT32, torch.float16: DType.FLOAT16, torch.bfloat16: DType.BFLOAT16,
                 torch.float64: DType.FLOAT64}


def _grid_step(config: CalibrationConfig, name: str, weight: torch.Tensor) -> float | None:
    coding = config.coding.coding_for(name, _TORCH_DTYPES[weight.dtype], weight.dim())
    if coding.mode == CodingMode.RAW:
        return None
    return float(step_size(coding.qp, coding.qp_density))


def _allocate(budget: Target, weights: Mapping[str, np.ndarray], column_weights: Mapping[str, np.ndarray],
              blocks: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Per-layer (pruned, unified) counts of a global budget: exact selection over all blocks with
    each layer's weighted costs divided by its weighted energy."""
    prunes, unifies, sizes = [], [], []
    for name, w in weights.items():
        costs = block_costs(w, blocks[name], column_weights[name][None, :])
        energy = float(costs.square_sum.sum()) or 1.0
        prunes.append(costs.prune.ravel() / energy)
        unifies.append(costs.unify.ravel() / energy)
        sizes.append(costs.prune.size)
    prune_all, unify_all = np.concatenate(prunes), np.concatenate(unifies)
    n_prune, n_unify = budget.counts(prune_all.size)
    flat = select_blocks(prune_all, unify_all, n_prune, n_unify)
    out, start = {}, 0
    for name, size in zip(weights, sizes, strict=True):
        part = flat[start:start + size]
        out[name] = (int((part == BlockKind.PRUNED).sum()), int((part == BlockKind.UNIFIED).sum()))
        start += size
    return out


def calibrate(model: nn.Module, batches: Iterable, config: CalibrationConfig | None = None, *,
              progress: Callable[[str], None] | None = None) -> CalibrationReport:
    """Compress ``model``'s layers in place by layer-wise ADMM on ``batches``; see the module docstring.

    Returns a :class:`CalibrationReport`. The weights of calibrated layers end on the grid of
    ``config.coding`` and in the structure reported; their biases (when ``bias_correction``)
    absorb the mean output shift. ``progress`` receives one line per layer.
    """
    config = CalibrationConfig() if config is None else config
    if not isinstance(config, CalibrationConfig):
        raise TypeError(f"config must be a CalibrationConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    started = time.perf_counter()
    try:
        batches = list(batches)  # several passes are made
    except TypeError:
        raise TypeError(f"batches must be an iterable of model inputs (e.g. a list of batches), "
                        f"got {type(batches).__name__}") from None
    if not batches:
        raise ValueError("calibrate needs at least one batch of inputs")
    bare = unwrap(model)
    was_training = bare.training
    bare.eval()
    modules = dict(bare.named_modules())
    groups = collect_layers(bare, batches[0])
    weight_names = _weight_names(bare)
    # the target of every layer: the original model's outputs on the original inputs
    original = copy.deepcopy(bare) if config.sequential and config.asymmetric else None
    skipped: list[tuple[str, str]] = []
    plan: list[list[str]] = []
    targets: dict[str, Target | None] = {}
    calibrated_by: dict[int, str] = {}  # id(weight) -> the layer that calibrates it
    for group in groups:
        kept = []
        for name in group:
            module, weight_name = modules[name], weight_names[name]
            why = _unsupported(module)
            if why is None and "weight" not in module._parameters and "weight" not in module._buffers:
                # computed on each access (parametrize, weight_norm): writing it would change nothing
                # but the bias correction would still shift the bias
                why = "its weight is computed from other tensors (a parametrization or weight_norm)"
            calibrated, target = config.target_for(weight_name)
            if why is None and not calibrated:
                why = "excluded by a rule"
            if why is None and id(module.weight) in calibrated_by:
                why = f"shares its weight {weight_name} with {calibrated_by[id(module.weight)]!r}, calibrated there"
            if why is None and not bool(torch.isfinite(module.weight).all()):
                raise ValueError(f"{weight_name}: the weight holds NaN or infinite values; calibration needs "
                                 "finite weights")
            step = _grid_step(config, weight_name, module.weight) if why is None else None
            if why is None and step is None:
                why = "coded RAW by the coding config"
            if why is None and float(module.weight.detach().abs().max()) / step >= MAX_LEVEL:
                why = f"coded RAW: its largest weight is beyond {MAX_LEVEL} steps of {step:g}"
            if why is not None:
                skipped.append((name, why))
                continue
            calibrated_by[id(module.weight)] = name
            targets[name] = target
            kept.append(name)
        if kept:
            plan.append(kept)
    called = {name for group in groups for name in group}
    skipped += [(name, "never called by the model on the calibration inputs")
                for name, m in modules.items() if isinstance(m, CALIBRATED_TYPES) and name not in called]
    names = [name for group in plan for name in group]
    blocks = {name: (targets[name].block if targets[name] is not None else config.coding.block) for name in names}

    counts: dict[str, tuple[int, int] | None] = {}
    for name in names:
        target = targets[name]
        rows, cols = modules[name].weight.shape[0], modules[name].weight[0].numel()
        counts[name] = None if target is None else target.counts(math.prod(grid_shape(rows, cols, *target.block)))
    budgeted = [n for n in names if config.in_budget(weight_names[n])] if config.budget is not None else []
    if budgeted:
        # the budget is spread once, on the original model's inputs (one forward pass)
        stats = _gather(bare, {n: modules[n] for n in budgeted}, batches, stop_early=False)
        weights = {n: modules[n].weight.detach().double().cpu().reshape(modules[n].weight.shape[0], -1).numpy()
                   for n in budgeted}
        column_weights = {n: np.diag(stats[n].gram.numpy()) / max(stats[n].rows, 1) for n in budgeted}
        counts.update(_allocate(config.budget, weights, column_weights, blocks))

    reports: list[LayerReport] = []
    kinds_out: dict[str, np.ndarray] = {}
    shared_stats = None
    if not config.sequential:
        shared_stats = _gather(bare, {n: modules[n] for n in names}, batches, stop_early=False)
    for group in plan:
        group_started = time.perf_counter()
        if shared_stats is not None:
            stats = {n: shared_stats[n] for n in group}
        else:
            stats = _gather(bare, {n: modules[n] for n in group}, batches, stop_early=True, original=original)
        gather_seconds = time.perf_counter() - group_started
        for name in group:
            layer_started = time.perf_counter()
            module = modules[name]
            weight = module.weight
            w0 = weight.detach().double().cpu().reshape(weight.shape[0], -1).numpy()
            s = stats[name]
            has_bias = getattr(module, "bias", None) is not None and config.bias_correction
            moments = s.moments(centred=has_bias)
            step = _grid_step(config, weight_names[name], weight)
            solved, kinds, info = solve_layer(w0, moments["gram"], block=blocks[name], counts=counts[name], step=step,
                                              iterations=config.iterations, rho=config.rho,
                                              rho_growth=config.rho_growth, damping=config.damping,
                                              reselect=config.reselect, cross=moments["cross"],
                                              target_gram=moments["target_gram"])
            with torch.no_grad():
                if has_bias:
                    # b = b0 + W0 E[x0] - W E[x]: the mean output is kept
                    shift = w0 @ moments["target_mean"] - solved @ moments["mean"]
                    module.bias.add_(torch.from_numpy(shift).to(module.bias))
                weight.copy_(torch.from_numpy(solved).reshape(weight.shape).to(weight))
            # the structure to keep in fine-tuning: the selected kinds, a unified block at
            # magnitude 0 counted as pruned; the report counts kinds as the codec derives them
            kinds = kinds.copy()
            kinds[(kinds == BlockKind.UNIFIED) & (block_costs(solved, blocks[name]).abs_sum == 0)] = BlockKind.PRUNED
            kinds_out[weight_names[name]] = kinds
            block_counts = np.bincount(kinds_from_values(solved, blocks[name]).ravel(), minlength=3)
            seconds = time.perf_counter() - layer_started + gather_seconds / len(group)
            report = LayerReport(weight_names[name], tuple(weight.shape), blocks[name],
                                 (int(block_counts[BlockKind.PRUNED]), int(block_counts[BlockKind.UNIFIED]),
                                  int(block_counts[BlockKind.DENSE])),
                                 info["plain_error"], info["error"], info["best_iteration"], s.rows, seconds)
            reports.append(report)
            if progress is not None:
                progress(f"{report.name}: blocks {report.blocks[0]}/{report.blocks[1]}/{report.blocks[2]} "
                         f"error {report.plain_error:.4f} -> {report.error:.4f} ({seconds:.1f} s)")
    bare.train(was_training)
    return CalibrationReport(tuple(reports), tuple(skipped), kinds_out,
                             {weight_names[name]: blocks[name] for name in names}, time.perf_counter() - started)


def kinds_from_values(matrix: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """Block kinds grid of a matrix as the codec derives them from its values on the grid (all
    zero: pruned; all equal magnitude: unified; else dense), e.g. of a decoded tensor."""
    magnitude = np.abs(matrix)
    # exact float64 grid values: equal magnitudes compare equal; map to integers by ranking
    _, codes = np.unique(magnitude, return_inverse=True)
    codes = codes.reshape(magnitude.shape)
    zero = magnitude == 0
    return block_kinds(np.where(zero, 0, codes + 1), *block)
