"""Short distillation after calibration, with the micro-structure and the codec's grid kept exactly.

The optional end-to-end stage after :func:`nncodec_unify.method.calibrate.calibrate`: the original
model is the teacher, the compressed model the student, the loss compares their outputs on
unlabelled inputs (mean squared error by default; pass ``loss`` for e.g. ``1 - cosine`` of
sentence embeddings). During the whole stage

* the structure holds exactly (:class:`nncodec_unify.method.admm.Structure`: pruned weights stay 0,
  each unified block trains one shared magnitude and keeps its signs), and
* the weights stay on the codec's grid (:class:`nncodec_unify.method.admm.GridTraining`: forward and
  backward on the grid, updates on float shadows),

so after it ``encode(snap_to_grid(model, coding), config=coding)`` decodes to exactly the
weights that were trained. Float buffers (batch-norm running statistics) are not trained onto
the grid: ``snap_to_grid`` rounds them, so evaluate the model after snapping (or snap before
distilling, when they no longer change) to evaluate exactly what decodes.

Distributed: pass the ``DistributedDataParallel``-wrapped student and give every rank its own
shard of the batches (equal sizes); DDP averages the gradients, the hooks act on the bare
module's identical parameters, so all ranks end with the same weights, and with equal shards
the result matches one process on the whole batches up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from .admm import GridTraining, Structure, unwrap
from .calibrate import call_model
from ..codec.config import EncoderConfig

__all__ = ["distill"]


def _first_tensor(out) -> torch.Tensor:
    """The default ``output``: the model's output itself, its first element when a tuple or
    list, or its first value when a mapping (a dict; a transformers ModelOutput, whose first
    field is ``last_hidden_state`` or ``logits``); anything else needs ``output=``."""
    if isinstance(out, Mapping):
        value = next(iter(out.values()), None)
    else:
        value = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"the model returns {type(out).__name__}, not a tensor: pass output= to say what to compare "
                        "(e.g. output=lambda out: out.last_hidden_state)")
    return value


def distill(student: nn.Module, teacher: nn.Module, batches: Iterable, *, structure: Structure | None,
            coding: EncoderConfig | None = None, epochs: int = 1, lr: float = 1e-4,
            loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
            output: Callable[[object], torch.Tensor] | None = None,
            progress: Callable[[str], None] | None = None) -> list[float]:
    """Fine-tune ``student`` towards ``teacher``'s outputs, structure and grid kept; in place.

    ``batches`` is re-iterated every epoch (a list), each batch called as in
    :func:`~nncodec_unify.method.calibrate.calibrate`; ``output`` maps a model's output to the tensor
    compared (default: the output itself, its first element when a tuple, or its first value when a
    mapping such as a transformers ModelOutput); ``loss(student,
    teacher)`` defaults to the mean squared error. Adam with a cosine learning-rate decay over
    all steps, in eval mode (no dropout; BatchNorm statistics frozen). ``structure`` is the
    structure to keep (``report.structure(model)`` after calibration; ``None`` keeps only the
    grid). Returns the mean loss of every epoch. The teacher is run in eval mode and left in
    the mode it came in. float16 students are refused: Adam's steps underflow in float16 and
    every weight becomes NaN (distil in float32 or bfloat16).
    """
    if epochs < 0 or not lr > 0:
        raise ValueError(f"need epochs >= 0 and lr > 0, got {epochs}, {lr}")
    try:
        batches = list(batches)
    except TypeError:
        raise TypeError(f"batches must be an iterable of model inputs, got {type(batches).__name__}") from None
    if not batches:
        raise ValueError("distill needs at least one batch of inputs")
    half = [name for name, p in unwrap(student).named_parameters() if p.dtype == torch.float16]
    if half:
        raise ValueError(f"{half[0]}: float16 parameters cannot be trained with Adam here (its steps underflow); "
                         "convert the student to float32 or bfloat16 first")
    coding = coding or EncoderConfig()
    loss = loss or nn.functional.mse_loss
    output = output or _first_tensor
    teacher_was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            targets = [output(call_model(teacher, batch)).detach() for batch in batches]
    finally:
        teacher.train(teacher_was_training)
    optimizer = torch.optim.Adam(unwrap(student).parameters(), lr=lr)
    if structure is not None:
        structure.attach(optimizer)
    GridTraining(student, coding).attach(optimizer)  # after the structure's hooks: see GridTraining
    total_steps = max(1, epochs * len(batches))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    was_training = student.training
    student.eval()  # post-training: dropout off, normalisation statistics as calibrated
    history = []
    for epoch in range(epochs):
        running = 0.0
        for batch, target in zip(batches, targets, strict=True):
            optimizer.zero_grad(set_to_none=True)
            value = loss(output(call_model(student, batch)), target)
            value.backward()
            optimizer.step()
            schedule.step()
            running += float(value.detach())
        history.append(running / max(1, len(batches)))
        if progress is not None:
            progress(f"distillation epoch {epoch + 1}/{epochs}: loss {history[-1]:.6f}")
    student.train(was_training)
    return history
