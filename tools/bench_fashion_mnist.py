#!/usr/bin/env python3
"""Benchmark: LeNet-5 on Fashion-MNIST, accuracy against whole-bitstream compression ratio.

Target: **>= 60x whole-stream compression at <= 1.0 point accuracy drop** against the dense model,
on every seed (stretch: 80x). Each job runs once per seed (``--seeds``, default 0,1), each seed
with its own dense model; the tables give every seed and the median.

Methods, all coded by the same codec at the same quantization (qp -16, a step of 2**-4, for the
weight matrices but fc3, which takes qp -12, a step of 2**-3; vector_qp -16 for the biases), all
evaluated on the **decoded** weights, all with the same training budget after the dense model
(ADMM: 10 epochs, then 20 of fine-tuning; the others: 30 of fine-tuning):

* ``dense``: the baseline model, and the same model through the codec without any pruning;
* ``admm``: ADMM towards micro-structured unification + pruning (global budget over the weight
  matrices, exact block selection), hard projection, masked quantization-aware fine-tuning,
  snap to grid; 4x4 blocks at several targets;
* ``block-prune``: block magnitude pruning without ADMM (the least-norm blocks of the same
  global budget), then masked fine-tuning for the whole budget (ADMM + fine-tuning epochs);
* ``unstructured``: global magnitude pruning of single weights, the same fine-tuning.

Every method leaves the first and last layers (conv1, 150 weights; fc3, 840) dense and
fine-tunes on the codec's grid (straight-through, ``GridTraining``) with the same optimizer and
schedule. The compression ratio is the fp32 size of all parameters (246,824 bytes) over the size
of the whole stream (every tensor, biases and headers included). The baselines are coded with
whichever of a few codec settings (block shape 1x1, the training block, 4x4, or DENSE mode)
gives them the smallest stream. Every setting can be changed from the command line
(``--set qp=-22 --set 'free=("conv1.weight",)' --set 'qp_rules=(("fc1.*", -18),)'``), and
``--job``/``--only`` pick the jobs.

Settings are chosen on a validation split: 5,000 training images held out by a fixed
permutation (VALIDATION_SEED), never trained on; the dense models train on the other 55,000.
The target is judged on t10k, which no choice reads. Each row also gives its stream size
without content digests (``bytes_without_digests``: a format 3 stream, CRC-32 per unit only).

**The defaults changed on 2026-12-04** (evening): qp -16 for the weight matrices (was -20), qp -12
for fc3 (was -20), vector_qp -16 (was -24) and 20 fine-tuning epochs (was 10). Every figure below
dated earlier was measured with the old defaults; the commands that produced them now need
``--set qp=-20 --set vector_qp=-24 --set "qp_rules=()" --set finetune_epochs=10``. The change was
chosen on the validation split (drops in points on validation, then test, seeds 0 / 1; ``--seeds
0,1 --job admm:4x4:P:U`` with the ``--set`` options of each row on the old defaults; 2-core AMD
EPYC, dense models of validation 91.54 / 91.22 %, about 2-4 min a row on 2 workers):

| ``--set`` (old defaults otherwise) | P / U | ratio | validation drop | test drop |
|---|---|---|---|---|
| (none: the old defaults) | 0.8 / 0.16 | 45.6x / 45.5x | 1.78 / 1.48 | 1.65 / 1.18 |
| ``distill=0.5 temperature=2.0`` | 0.8 / 0.16 | 45.3x / 45.5x | 2.06 / 1.62 | 1.54 / 1.18 |
| ``finetune_epochs=20`` | 0.8 / 0.16 | 44.7x / 44.9x | 1.58 / 0.92 | 1.19 / 0.87 |
| ``finetune_epochs=40`` | 0.8 / 0.16 | 44.1x / 44.1x | 1.84 / 1.20 | 1.22 / 0.85 |
| ``admm_epochs=20 finetune_epochs=20`` | 0.8 / 0.16 | 44.5x / 44.9x | 1.96 / 1.16 | 1.15 / 1.05 |
| ``finetune_epochs=20 budget_ramp=0.5`` (the budget grows over the first half of ADMM) | 0.8 / 0.16 | 45.1x / 44.9x | 1.68 / 0.98 | 1.22 / 0.81 |
| fc3 at qp -12, ``vector_qp=-16`` | 0.8 / 0.16 | 47.9x / 48.0x | 1.84 / 1.52 | 1.71 / 1.29 |
| the same, 20 epochs, fc3 -8, conv1 -16 | 0.8 / 0.16 | 48.5x / 48.3x | 2.12 / 1.70 | 1.60 / 1.16 |
| **the new defaults** (``qp=-16``, fc3 -12, ``vector_qp=-16``, 20 epochs) | 0.75 / 0.2 | 45.6x / 45.5x | 1.72 / 1.00 | 1.02 / 0.67 |
| the new defaults (from the full run below) | 0.8 / 0.16 | 51.6x / 51.5x | 1.50 / 1.86 | 1.54 / 1.53 |
| the new defaults, fc3 at qp -8 | 0.8 / 0.16 | 52.8x / 52.7x | 1.98 / 2.08 | 1.66 / 1.22 |
| the new defaults | 0.85 / 0.12 | 59.9x / 59.9x | 2.84 / 2.00 | 2.37 / 1.56 |
| the new defaults, conv1 and conv2 at qp -20 | 0.8 / 0.16 | 50.5x / 50.3x | 2.16 / 1.58 | 1.48 / 1.04 |
| the new defaults at ``qp=-12`` | 0.8 / 0.16 | 57.8x / 58.0x | 3.60 / 2.40 | 2.80 / 1.97 |

On the old defaults at 59.2-59.5x (P=0.9 U=0.07) the drops were 3.32 / 2.48 on validation and
3.00 / 2.15 on test: the new defaults move the front by about half a point (or about 10 % of
ratio), no more. A coarser grid costs ADMM's unified blocks almost nothing (16 sign bits and a
magnitude each) and frees bytes for more of them; qp -12 is too coarse for fc1's small
magnitudes. Distillation, 40 epochs and a growing budget gain nothing over the seeds' spread
(about half a point).

Measured 2026-12-03 (streams with content digests; dense: validation 91.28 / 91.50 %, test
90.50 / 90.65 % on seeds 0 / 1), ``--only "admm 4x4 P=0.87 U=0.1" --only "admm 4x4 P=0.8
U=0.16"``, 18 min on 2 workers:

* ADMM 4x4 P=0.8 U=0.16: 45.6x / 45.4x (49.2x / 49.0x without digests), drops of 2.20 / 1.62
  points on validation, 1.39 / 1.35 on test;
* ADMM 4x4 P=0.87 U=0.1: 55.3x / 55.3x (60.8x / 60.7x without digests), 1.92 / 2.64 on
  validation, 2.15 / 2.13 on test;
* ``--job admm:4x4:0.85:0.12 --set "qp_rules=(('fc3.weight', -16), ('conv1.weight', -16))"
  --set vector_qp=-20`` (coarser free layers and biases): 54.6x / 54.9x (59.8x / 60.2x without
  digests), 2.02 / 2.42 on validation, 1.76 / 1.86 on test.

Measured 2026-12-03 later (``--workers 1 --job admm:4x4:P:U``, seeds 0 / 1 unless said): fewer
dense blocks buy ratio at the same accuracy down to about 1 % of the blocks, and no further:

* ADMM 4x4 P=0.85 U=0.14 (1 % dense): 60.7x / 60.2x, drops of 2.74 / 2.84 on validation,
  2.16 / 2.39 on test (the ratio target on its own, met; the drop, not);
* ADMM 4x4 P=0.8 U=0.2 (no dense block): 59.1x / 58.6x, test 1.97 / 2.53;
* ADMM 4x4 P=0.85 U=0.15 (no dense block): 66.4x / 66.8x, test 2.91 / 2.90;
* ADMM 4x4 P=0.83 U=0.16 (1 % dense), seed 0: 57.3x, test 2.20;
* ``--set 'normalize="rms"'`` with P=0.87 U=0.1, seed 0: 55.2x, test 3.18 (worse than 2.15).

Smaller blocks, measured 2026-12-03 (``--workers 1 --seeds 0 --job admm:1x4:0.9:0.08 --job
admm:1x4:0.93:0.06 --job admm:2x2:0.9:0.08``, 13 min on one thread): 1x4 P=0.9 U=0.08 48.8x,
drops of 1.88 on validation and 1.13 on test; 1x4 P=0.93 U=0.06 59.0x, 2.84 / 2.34; 2x2 P=0.9
U=0.08 49.0x, 1.78 / 1.53. At 59x the 1x4 blocks are no better than 4x4 (P=0.85 U=0.14: 60.7x,
2.74 / 2.16), so the standard list keeps 4x4.

Augmentation after the dense phase (``--set augment=True``: random flips and shifts of up to 2
pixels), measured 2026-12-03 on seed 0 (``--workers 1 --seeds 0 --job admm:4x4:0.85:0.14 --job
admm:4x4:0.8:0.16 --set augment=True``, 9 min): 60.5x with drops of 5.14 / 4.70 (without: 2.74 /
2.16) and 46.0x with 3.50 / 2.83 (without: 2.20 / 1.39): LeNet-5 underfits the augmented data in
20 epochs. Off by default.

The fine-tuning learning rate, swept 2026-12-03 on seed 0 (``--workers 1 --seeds 0 --job
admm:4x4:0.85:0.14 --set finetune_lr=LR``; drops on validation / test, ratio):

| finetune_lr | 1e-3 | 2e-3 (default) | 4e-3 | 8e-3 | 1.6e-2 | 3.2e-2 |
|---|---|---|---|---|---|---|
| drop | 3.14 / 2.26 | 2.74 / 2.16 | 2.58 / 1.98 | 2.32 / 1.57 | 2.22 / 2.21 | 3.36 / 3.09 |
| ratio | 61.0x | 60.7x | 59.4x | 58.6x | 57.7x | 56.3x |

(4e-3 with admm_lr 2e-3: 2.50 / 2.02 at 59.3x.) A rate of 8e-3 to 1.6e-2 gains about half a
point on validation near 58x, one seed. On two seeds it does not hold (``--seeds 0,1 --job
admm:4x4:0.8:0.16 --set finetune_lr=8e-3``, measured 2026-12-03): 43.3x / 43.3x with drops of
1.40 / 1.78 on validation and 1.41 / 1.10 on test, against 45.6x / 45.4x, 2.20 / 1.62 and 1.39 /
1.35 at 2e-3: better on seed 0, worse on seed 1's validation, and 5 % larger streams (larger
weights). The default stays 2e-3.

Fine-tuning through the projection (straight-through: float latent weights, the forward pass on
their projection, so that a unified weight's sign can change, and optionally the block kinds
re-planned from the latent weights), measured 2026-12-03 on seed 0 with commit 1fd5a0c, which
had it as ``--set straight_through=True`` (``--job admm:4x4:0.85:0.14``; drops on validation /
test; with fixed signs in brackets):

* signs free, lr 2e-3: 60.6x, 2.84 / 2.63 (2.74 / 2.16); lr 8e-3: 59.0x, 3.32 / 2.71 (2.32 / 1.57);
* kinds re-planned every 100 steps to the end, lr 8e-3: 60.3x, 7.62 / 7.74 (a late re-plan
  leaves no time to adapt); every epoch during the first 5 of 10, lr 2e-3: 60.9x, 3.52 / 3.05.

Worse everywhere, so it was removed again: with ~15 % of the blocks kept, fixed signs and
kinds train better than free ones.

ADMM in the metric of the layer inputs (``--set importance='"input"'``: each weight's distance
weighted by its input column's energy E[x_j^2] on 2,048 training images, in the penalty and in
the projection, as calibration does; ``ADMM(importance=...)``), measured 2026-12-04 on a 2-core
AMD EPYC (``--seeds 0,1 --job admm:4x4:0.85:0.14``, 1.7 min a run; drops on validation / test
per seed, ratio):

| metric | validation drop | test drop | ratio |
|---|---|---|---|
| plain (default) | 3.46 / 2.48 | 2.99 / 2.73 | 60.4x / 60.0x |
| E[x^2] (``importance_power=1``) | 3.72 / 3.62 | 3.60 / 3.29 | 61.0x / 60.8x |
| E[x^2] ** 0.5 (``--set importance_power=0.5``) | 2.86 / 3.18 | 2.59 / 2.81 | 60.7x / 60.4x |

Weighting by the full energy is worse on both seeds; its square root is within the spread of
the seeds. Off by default. The plain row also shows how much the figures move between machines:
the same command gave test drops of 2.16 / 2.39 on 2026-12-03's machine, whose dense models came
out differently (validation 91.28 / 91.50 %; 91.54 / 91.22 % here): float rounding differs
between CPUs and training amplifies it, so a difference below about 0.7 point between two runs
on different machines says nothing.

The whole default list re-run on 2026-12-04 on that machine (``python tools/bench_fashion_mnist.py
--out DIR``, 19.6 min on 2 workers; medians of the two seeds' test drops): ADMM 4x4 45.6x at 1.41
points, 52.9x at 2.01, 55.1x at 2.29, 59.3x at 2.57; block pruning 41.8x at 0.60 (1.17 / 0.02),
56.1x at 1.90, 67.6x at 3.14; unstructured 40.2x at 1.02, 52.1x at 2.07, 63.6x at 3.51;
calibrated (no labels) 21.3x at 0.98, and with distillation 21.1x at 0.43, 32.0x at 1.93. ADMM
that prunes only (``--job admm:4x4:0.94:0 --job admm:4x4:0.9:0``): 56.0x at 2.04 / 2.03, and
42.5x at 1.16 / 0.60 (validation 1.08 / 0.92). Every method reaches the same frontier: about
one point near 42x and two near 56x, whatever the mix of unified and pruned blocks; on
LeNet-5 at these ratios unification buys nothing over block pruning with the same fine-tuning.

The whole default list with the new defaults (``python tools/bench_fashion_mnist.py --out DIR``,
2026-12-04 evening, the same machine and dense models, 27.8 min on 2 workers; ratio, validation
drops of seeds 0 / 1, median test drop):

| method | ~46-50x | ~52-60x | ~60-66x | ~72-80x |
|---|---|---|---|---|
| ADMM 4x4 | P=0.75 U=0.2: 45.6x, 1.72 / 1.00, test 0.85 | P=0.8 U=0.16: 51.6x, 1.50 / 1.86, 1.53; P=0.85 U=0.12: 59.9x, 2.84 / 2.00, 1.97 | P=0.87 U=0.1: 62.7x, 2.64 / 2.40, 2.24 | |
| block pruning 4x4 | P=0.9: 49.6x, 1.28 / 0.86, 0.90 | | P=0.94: 66.1x, 2.18 / 1.82, 1.54 | P=0.96: 79.6x, 4.16 / 3.68, 2.82 |
| unstructured | P=0.95: 46.3x, 1.50 / 1.46, 1.24 | P=0.97: 59.9x, 2.72 / 2.44, 2.30 | | P=0.98: 72.1x, 4.08 / 3.68, 3.38 |

The calibrated rows gained ratio at the same accuracy too (validation drops, medians): P=0.5 U=0.3
25.5x at 1.57 (21.3x at 1.45 before), P=0.7 U=0.2 37.7x at 4.36 (32.2x at 4.23), P=0.8 U=0.16 53.3x
at 8.00 (46.8x at 8.45); calibrated and distilled 25.2x at 1.05 (21.1x at 0.76), 37.6x at 3.03
(32.0x at 2.69) and 53.2x at 5.75 (46.5x at 5.75). On the coarser grid
block pruning is ahead of ADMM with unified blocks above 60x: a dense block now costs less against
a unified one.

ADMM that prunes only, on the new defaults (``--job admm:4x4:P:0``, then ``block-prune:4x4:0.92``;
the same machine; ratio, validation drops, test drops, seeds 0 / 1): P=0.92 57.2x / 56.7x, 1.24 /
1.00, 1.56 / 0.69; **P=0.93 61.3x / 60.8x, 1.40 / 1.52, 1.67 / 1.70** (with 30 fine-tuning epochs:
61.0x / 60.8x, 1.74 / 1.64, 1.64 / 1.31); P=0.93 U=0.02 66.3x / 65.5x, 2.12 / 2.18; P=0.94 66.4x /
65.7x, 1.90 / 2.28, 1.93 / 1.94; block pruning P=0.92 56.7x / 56.3x, 2.02 / 0.76, 1.11 / 0.71.
ADMM that prunes only is the best setting at 60x, so (0.93, 0) replaced (0.87, 0.1) in the
standard list after the full run above. These streams were coded before be09133, which codes
an all-dense matrix (conv1, fc3) in DENSE mode: 58 bytes less; re-run after it, P=0.93 gives
62.2x / 61.7x at the same drops (``nncodec info --bytes`` on seed 0's stream: 3,969 bytes, of which
1,147 (28.9 %) code no value: digests 384, plane fields 252, tensor headers 224, unit framing
and file header 140, frequency tables 96, coding parameters 51).

**The 60x target is not met**: at 60x the least validation drop is 1.4-1.5 points (ADMM pruning
4x4 blocks only, P=0.93), 1.7 on test; with unified blocks about 2 points. Where the
bytes go in a 55x stream of the old defaults (4,460 bytes): the content digests 398 (9 %), fc3
(840 weights, left dense) 723, conv1 233, the five biases 590 (mostly their headers), conv2, fc1
and fc2 (60,216 weights) 2,710. Measured earlier (2026-12-02, before digests and without a validation split, test
set only): block pruning 4x4 P=0.94 and unstructured P=0.97 were no better than ADMM at 60x
(drops of 1.9-2.5 points); constraining fc3 too, 15 + 15 epochs instead of 10 + 10, and
distillation from the dense model (0.7: 0.3 point worse) did not pay.

Data: the Debian package ``dataset-fashion-mnist`` (``apt-get install -y dataset-fashion-mnist``,
IDX files under /usr/share/datasets/fashion-mnist/). Output: tables on stdout, the figures as
JSON and a plot (PNG, needs matplotlib) under tools/out/ (``--out``), and every row's stream under
its streams/ folder (``nncodec info --bytes FILE`` shows where its bytes go). Jobs run in ``--workers`` processes of
one thread each; an ADMM or pruning job takes 2.5-3.5 min on one thread of a 2-core AMD EPYC (30
epochs after the dense model), so the full list (16 jobs x 2 seeds) took 27.8 min on two workers.

    python tools/bench_fashion_mnist.py                  # the full benchmark (see above)
    python tools/bench_fashion_mnist.py --workers 1 --only "admm 4x4 P=0.93" --only "P=0.97"
    python tools/bench_fashion_mnist.py --quick          # under a minute: checks that everything runs
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import gzip
import json
import multiprocessing
import statistics
import sys
import time
import typing
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nncodec_unify import CodingMode, EncoderConfig, TensorRule, decode, encode_with_report
from nncodec_unify.method.admm import ADMM, GridTraining, same_bits, snap_to_grid, structure_from_weights
from nncodec_unify.method.calibrate import CalibrationConfig, calibrate, input_energies
from nncodec_unify.method.distill import distill as distill_outputs
from nncodec_unify.codec.format import BlockKind
from nncodec_unify.method.unify import Target, plan_kinds

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
OUT_DIR = Path(__file__).resolve().parent / "out"
MEAN, STD = 0.2860, 0.3530

# (block, prune_ratio, unify_ratio) for ADMM, fractions of all blocks of the constrained layers;
# the rest stay dense (5 %, 4 %, 3 % and 7 %). A dense block costs ~3x a unified one at qp -20 (~60 vs
# ~20 bits), less at the default qp -16; pruning alone (U=0) is the best setting near 60x.
ADMM_TARGETS = {
    (4, 4): [(0.75, 0.2), (0.8, 0.16), (0.85, 0.12), (0.93, 0.0)],
}
BLOCK_PRUNE_RATIOS = [0.9, 0.94, 0.96]  # 4x4 blocks
UNSTRUCTURED_RATIOS = [0.95, 0.97, 0.98]
# the calibrated path (no labels, no training loop): 4x4 blocks, global budget
CALIBRATED_TARGETS = [(0.5, 0.3), (0.7, 0.2), (0.8, 0.16)]


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 inputs (61,706 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x.flatten(1))))))


@dataclasses.dataclass(frozen=True)
class Settings:
    dense_epochs: int = 15
    admm_epochs: int = 10
    finetune_epochs: int = 20  # 10 until 2026-12-04 (see the docstring)
    admm_lr: float = 1e-3
    finetune_lr: float = 2e-3
    grid_training: bool = True  # quantization-aware fine-tuning (GridTraining), in every method
    free: tuple[str, ...] = ("conv1.weight", "fc3.weight")  # weight matrices left dense, in every method
    batch_size: int = 128
    qp: int = -16  # weight matrices (step 2**-4; -20 until 2026-12-04, -12 lost a point: see the docstring)
    vector_qp: int = -16  # biases (step 2**-4; -24 until 2026-12-04)
    # (glob on tensor names, qp): per-tensor qp overrides; fc3 (left dense) on a coarser grid
    qp_rules: tuple[tuple[str, int], ...] = (("fc3.weight", -12),)
    normalize: str = "none"  # the global budget's cost scale per layer: "none" or "rms" (plan_kinds)
    importance: str = "none"  # ADMM's metric: "none" or "input" (each input column weighted by E[x^2], calibration_images)
    importance_power: float = 1.0  # ... the weights are E[x^2] ** importance_power
    distill: float = 0.0  # weight of distillation from the dense model in every phase after it (0.7 cost 0.3 point)
    augment: bool = False  # random horizontal flips and shifts of up to 2 pixels in every phase after the dense model
    temperature: float = 4.0  # of the distillation
    budget_ramp: float = 0.0  # ADMM's budget grows over this fraction of its updates (cubic, from none), 0: fixed
    rho: float = 0.2
    rho_growth: float = 1.2
    rho_max: float = 10.0
    updates_per_epoch: int = 2
    subset: int | None = None  # training images used (--quick)
    seed: int = 0
    calibration_images: int = 2048  # the calibrated path: unlabelled training images
    calibrated_distill_epochs: int = 5  # ... then distillation from the dense model's logits, no labels
    calibrated_distill_lr: float = 1e-3
    validation: int = 5000  # training images held out to choose settings on (VALIDATION_SEED)
    digests: bool = True  # the streams carry content digests (format 4+; ~32 bytes a tensor)

    def config(self, **changes) -> EncoderConfig:
        """The codec's settings: also the grid that GridTraining and snap_to_grid use."""
        rules = tuple(TensorRule(pattern, qp=qp) for pattern, qp in self.qp_rules)
        return dataclasses.replace(EncoderConfig(qp=self.qp, vector_qp=self.vector_qp, rules=rules,
                                                 digests=self.digests), **changes)


@dataclasses.dataclass(frozen=True)
class Job:
    method: str  # "admm", "block-prune", "unstructured", "calibrated", "calibrated+distilled"
    block: tuple[int, int]
    prune_ratio: float
    unify_ratio: float = 0.0

    @property
    def label(self) -> str:
        if self.method in ("admm", "calibrated", "calibrated+distilled"):
            return f"{self.method} {self.block[0]}x{self.block[1]} P={self.prune_ratio:g} U={self.unify_ratio:g}"
        if self.method == "block-prune":
            return f"block-prune {self.block[0]}x{self.block[1]} P={self.prune_ratio:g}"
        return f"unstructured P={self.prune_ratio:g}"


# --- data ----------------------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed) as a numpy array."""
    with gzip.open(path, "rb") as stream:
        data = stream.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Data(typing.NamedTuple):
    """Training images, the validation split held out of the training file (settings are chosen
    on it; never trained on), and the t10k test set (only reported: no choice reads it)."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


VALIDATION_SEED = 20261203  # fixes which training images are the validation split, for every run and seed


def load_data(subset: int | None, validation: int) -> Data:
    """Fashion-MNIST with ``validation`` images of the training file held out (a permutation fixed
    by VALIDATION_SEED, the same for every training seed); ``subset`` keeps the first images of
    each split (--quick)."""
    def images(name: str) -> torch.Tensor:
        pixels = read_idx(DATA_DIR / name).astype(np.float32) / 255.0
        return (torch.from_numpy(pixels)[:, None] - MEAN) / STD

    def labels(name: str) -> torch.Tensor:
        return torch.from_numpy(read_idx(DATA_DIR / name).astype(np.int64))

    x_train, y_train = images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")
    x_test, y_test = images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz")
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    held, kept = order[:validation], order[validation:].sort().values
    x_val, y_val, x_train, y_train = x_train[held], y_train[held], x_train[kept], y_train[kept]
    if subset is not None:
        x_train, y_train = x_train[:subset], y_train[:subset]
        x_val, y_val = x_val[:subset // 2], y_val[:subset // 2]
        x_test, y_test = x_test[:subset // 2], y_test[:subset // 2]
    return Data(x_train, y_train, x_val, y_val, x_test, y_test)


# --- training --------------------------------------------------------------------------------------

def train_epoch(model, optimizer, x, y, batch_size, generator, after_step=None, teacher=None,
                distill: float = 0.0, temperature: float = 4.0, augment: bool = False) -> None:
    """One epoch of Adam steps; with ``teacher`` (the dense model's logits of every training
    image) and ``distill`` > 0 the loss is ``(1 - distill) CE + distill T^2 KL(teacher || model)``
    at temperature ``T`` (knowledge distillation from the dense model); with ``augment`` each
    batch is flipped left-right at random and shifted by up to 2 pixels."""
    model.train()
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        index = order[start:start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        batch = x[index]
        if augment:
            flip = torch.rand(len(index), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
            dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
            batch = torch.roll(batch, (dy, dx), dims=(-2, -1))
        logits = model(batch)
        loss = nn.functional.cross_entropy(logits, y[index])
        if teacher is not None and distill > 0:
            soft = nn.functional.kl_div(nn.functional.log_softmax(logits / temperature, dim=1),
                                        nn.functional.log_softmax(teacher[index] / temperature, dim=1),
                                        reduction="batchmean", log_target=True)
            loss = (1 - distill) * loss + distill * temperature ** 2 * soft
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    return sum(int((model(x[i:i + 2000]).argmax(1) == y[i:i + 2000]).sum()) for i in range(0, len(x), 2000)) / len(x)


def train_dense(settings: Settings, data) -> dict[str, torch.Tensor]:
    x_train, y_train = data.x_train, data.y_train
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = LeNet5()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.dense_epochs)
    for _ in range(settings.dense_epochs):
        train_epoch(model, optimizer, x_train, y_train, settings.batch_size, generator)
        schedule.step()
    return model.state_dict()


def fine_tune(model, structure, settings: Settings, data, epochs: int, generator, teacher=None) -> None:
    x_train, y_train = data.x_train, data.y_train
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.finetune_lr)
    structure.attach(optimizer)
    if settings.grid_training:
        GridTraining(model, settings.config()).attach(optimizer)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs))
    for _ in range(epochs):
        train_epoch(model, optimizer, x_train, y_train, settings.batch_size, generator, teacher=teacher,
                    distill=settings.distill, temperature=settings.temperature, augment=settings.augment)
        schedule.step()


def weight_names(model, free: tuple[str, ...]) -> list[str]:
    """The constrained weights: all matrices but the ``free`` ones."""
    return [name for name, p in model.named_parameters() if p.dim() >= 2 and name not in free]


# --- coding ----------------------------------------------------------------------------------------

def code_and_check(model, settings: Settings, data, blocks: list[tuple[int, int]], try_dense_mode: bool) -> dict:
    """Snap to the grid, encode with each candidate setting, keep the smallest stream, decode it
    and evaluate the decoded weights on the validation and the test images."""
    base = settings.config()
    state = snap_to_grid(model, base)  # the grid depends on qp only, not on the block shape
    candidates = [(f"block {block[0]}x{block[1]}", dataclasses.replace(base, block=block)) for block in blocks]
    if try_dense_mode:
        candidates.append(("DENSE mode", dataclasses.replace(base, rules=base.rules + (TensorRule("*", mode=CodingMode.DENSE),))))
    results = [(encode_with_report(state, config=config), coding) for coding, config in candidates]
    result, coding = min(results, key=lambda item: len(item[0].data))
    stream = result.data
    decoded = decode(stream)
    rebuilt = LeNet5()
    rebuilt.load_state_dict({name: torch.from_numpy(array.copy()) for name, array in decoded.items()})
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    # the same coding without content digests (a format 3 stream: unit CRCs only), for comparison
    without = len(encode_with_report(state, config=dataclasses.replace(
        [config for coding_name, config in candidates if coding_name == coding][0], digests=False)).data)
    return {"accuracy": accuracy(rebuilt, data.x_test, data.y_test),
            "val_accuracy": accuracy(rebuilt, data.x_val, data.y_val), "bytes": len(stream),
            "ratio": fp32_bytes / len(stream), "bytes_without_digests": without, "bit_exact": same_bits(state, decoded), "coding": coding,
            "tensor_bytes": {report.name: report.coded_bytes for report in result.reports}, "stream": stream}


def _saved(row: dict, label: str, seed: int, streams: Path | None = None) -> dict:
    """``row`` without its stream, which is written to ``streams`` (or the worker's folder) as
    ``LABEL_sSEED.nnu`` (spaces and '=' as '_'), for ``nncodec info --bytes`` and decoding; the
    row names the file."""
    stream, folder = row.pop("stream"), streams or _STREAMS
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (label.replace(" ", "_").replace("=", "") + f"_s{seed}.nnu")
        path.write_bytes(stream)
        row["stream_file"] = str(path)
    return row


# --- jobs ------------------------------------------------------------------------------------------

_DATA = None
_DENSE: dict[int, dict] = {}
_SETTINGS = None
_STREAMS: Path | None = None  # where each row's stream is written (``--out``/streams)


def _init_worker(settings: Settings, dense_paths: dict[int, str], streams: Path | None = None) -> None:
    global _DATA, _DENSE, _SETTINGS, _STREAMS
    _STREAMS = streams
    torch.set_num_threads(1)
    _SETTINGS = settings
    _DATA = load_data(settings.subset, settings.validation)
    _DENSE = {seed: torch.load(path, weights_only=True) for seed, path in dense_paths.items()}


def run_job(task: tuple[int, Job]) -> dict:
    seed, job = task
    settings, data = dataclasses.replace(_SETTINGS, seed=seed), _DATA
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    model = LeNet5()
    model.load_state_dict(_DENSE[seed])
    x_train, y_train = data.x_train, data.y_train
    names = weight_names(model, settings.free)
    if job.method in ("calibrated", "calibrated+distilled"):
        return run_calibrated(seed, job, settings, data, model, names, started)
    teacher = None
    if settings.distill > 0:  # the dense model's logits of every training image, computed once
        with torch.no_grad():
            model.eval()
            teacher = torch.cat([model(x_train[i:i + 2000]) for i in range(0, len(x_train), 2000)])
    if job.method == "admm":
        budget = Target(prune_ratio=job.prune_ratio, unify_ratio=job.unify_ratio, block=job.block)
        importance = None
        if settings.importance == "input":
            images = x_train[:settings.calibration_images]
            importance = {name: energy ** settings.importance_power for name, energy in
                          input_energies(model, [images[i:i + 256] for i in range(0, len(images), 256)], names).items()}
        elif settings.importance != "none":
            raise ValueError(f"importance must be 'none' or 'input', got {settings.importance!r}")
        admm = ADMM(model, budget, rules=[(name, None) for name in settings.free], budget=budget,
                    normalize=settings.normalize, importance=importance, rho=settings.rho,
                    rho_growth=settings.rho_growth, rho_max=settings.rho_max)
        assert list(admm.params) == names
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.admm_lr)
        admm.attach(optimizer)
        every = max(1, -(-len(x_train) // settings.batch_size) // settings.updates_per_epoch)
        steps = [0]

        ramp_updates = settings.budget_ramp * settings.admm_epochs * settings.updates_per_epoch
        if ramp_updates > 0:  # start from an empty budget: Z = W (the targets keep their ratios, so no tensor is freed)
            admm.budget = Target(block=job.block)
            admm.Z = {name: param.detach().clone() for name, param in admm.params.items()}

        def after_step() -> None:
            steps[0] += 1
            if steps[0] % every == 0:
                if ramp_updates > 0:  # gradual pruning's cubic schedule (Zhu & Gupta 2017) on the budget
                    reached = 1 - (1 - min(1.0, (steps[0] // every) / ramp_updates)) ** 3
                    admm.budget = Target(prune_ratio=job.prune_ratio * reached, unify_ratio=job.unify_ratio * reached,
                                         block=job.block)
                admm.update()

        for _ in range(settings.admm_epochs):
            train_epoch(model, optimizer, x_train, y_train, settings.batch_size, generator, after_step, teacher=teacher,
                        distill=settings.distill, temperature=settings.temperature, augment=settings.augment)
        structure = admm.hard_project()
        finetune_epochs = settings.finetune_epochs
        code_blocks = [job.block]
        try_dense_mode = False
    else:
        block = job.block if job.method == "block-prune" else (1, 1)
        target = Target(prune_ratio=job.prune_ratio, block=block)
        weights = {name: p.detach().numpy() for name, p in model.named_parameters() if name in names}
        kinds = plan_kinds(weights, dict.fromkeys(names, target), budget=target, normalize=settings.normalize)
        structure = structure_from_weights(model, kinds, dict.fromkeys(names, block))
        finetune_epochs = settings.admm_epochs + settings.finetune_epochs  # the same training budget
        code_blocks = sorted({(1, 1), block, (4, 4)})
        try_dense_mode = True
    projected_accuracy = accuracy(model, data.x_val, data.y_val)
    fine_tune(model, structure, settings, data, finetune_epochs, generator, teacher)
    assert structure.holds()
    counts = np.bincount(np.concatenate([k.ravel() for k in structure.kinds.values()]), minlength=3)
    weight_count = sum(p.numel() for name, p in model.named_parameters() if name in names)
    zero_weights = sum(int((p == 0).sum()) for name, p in model.named_parameters() if name in names)
    row = {"method": job.method, "label": job.label, "seed": seed, "block": list(job.block), "prune_ratio": job.prune_ratio,
           "unify_ratio": job.unify_ratio, "projected_accuracy": projected_accuracy,
           "blocks": {"pruned": int(counts[BlockKind.PRUNED]), "unified": int(counts[BlockKind.UNIFIED]),
                      "dense": int(counts[BlockKind.DENSE])},
           "weight_sparsity": zero_weights / weight_count}
    row.update(_saved(code_and_check(model, settings, data, code_blocks, try_dense_mode), job.label, seed))
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def run_calibrated(seed: int, job: Job, settings: Settings, data, model, names: list[str], started: float) -> dict:
    """The path for a pretrained model without labels: layer-wise calibration on unlabelled training
    images (global budget over the constrained layers, the free ones kept dense on the grid), then
    optionally distillation from the dense model's logits on unlabelled images; no label is read."""
    x_train = data.x_train
    images = x_train[:settings.calibration_images]
    batches = [images[i:i + 256] for i in range(0, len(images), 256)]
    coding = settings.config()
    budget = Target(prune_ratio=job.prune_ratio, unify_ratio=job.unify_ratio, block=job.block)
    report = calibrate(model, batches, CalibrationConfig(
        target=Target(block=job.block), budget=budget, coding=coding,
        rules=tuple((name, Target(block=job.block)) for name in settings.free)))
    projected_accuracy = accuracy(model, data.x_val, data.y_val)
    structure = report.structure(model)
    if job.method == "calibrated+distilled":
        teacher = LeNet5()
        teacher.load_state_dict(_DENSE[seed])
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed + 2))
        unlabelled = [x_train[order[i:i + settings.batch_size]] for i in range(0, len(x_train), settings.batch_size)]
        distill_outputs(model, teacher, unlabelled, structure=structure, coding=coding,
                        epochs=settings.calibrated_distill_epochs, lr=settings.calibrated_distill_lr)
    assert structure.holds()
    kinds = [k for name, k in structure.kinds.items() if name in names]
    counts = np.bincount(np.concatenate([k.ravel() for k in kinds]), minlength=3)
    weight_count = sum(p.numel() for name, p in model.named_parameters() if name in names)
    zero_weights = sum(int((p == 0).sum()) for name, p in model.named_parameters() if name in names)
    row = {"method": job.method, "label": job.label, "seed": seed, "block": list(job.block),
           "prune_ratio": job.prune_ratio, "unify_ratio": job.unify_ratio, "projected_accuracy": projected_accuracy,
           "blocks": {"pruned": int(counts[BlockKind.PRUNED]), "unified": int(counts[BlockKind.UNIFIED]),
                      "dense": int(counts[BlockKind.DENSE])},
           "weight_sparsity": zero_weights / weight_count, "calibration_seconds": round(report.seconds, 1)}
    row.update(_saved(code_and_check(model, settings, data, [job.block], False), job.label, seed))
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def jobs_for(quick: bool) -> list[Job]:
    if quick:
        return [Job("admm", (4, 4), 0.6, 0.4), Job("block-prune", (4, 4), 0.8), Job("unstructured", (1, 1), 0.9),
                Job("calibrated+distilled", (4, 4), 0.6, 0.2)]
    jobs = [Job("admm", block, p, u) for block, targets in ADMM_TARGETS.items() for p, u in targets]
    jobs += [Job("block-prune", (4, 4), p) for p in BLOCK_PRUNE_RATIOS]
    jobs += [Job("unstructured", (1, 1), p) for p in UNSTRUCTURED_RATIOS]
    jobs += [Job(method, (4, 4), p, u) for method in ("calibrated", "calibrated+distilled") for p, u in CALIBRATED_TARGETS]
    return jobs


def parse_job(text: str) -> Job:
    """``admm:4x4:0.9:0.08``, ``block-prune:4x4:0.9``, ``unstructured:0.95``, ``calibrated:4x4:0.7:0.2``
    or ``calibrated+distilled:4x4:0.7:0.2``."""
    parts = text.strip().split(":")
    method = parts[0]
    if method == "unstructured" and len(parts) == 2:
        return Job(method, (1, 1), float(parts[1]))
    with_unify = method in ("admm", "calibrated", "calibrated+distilled")
    if not (with_unify or method == "block-prune") or len(parts) != (4 if with_unify else 3):
        raise argparse.ArgumentTypeError(f"bad job {text!r}: admm:RxC:P:U, block-prune:RxC:P, unstructured:P, "
                                         f"calibrated:RxC:P:U or calibrated+distilled:RxC:P:U")
    rows, cols = (int(side) for side in parts[1].split("x"))
    return Job(method, (rows, cols), *(float(x) for x in parts[2:]))


def parse_setting(settings: Settings, text: str) -> Settings:
    """``name=value`` for a field of :class:`Settings` (value as a Python literal, else a string)."""
    name, _, value = text.partition("=")
    if name not in {field.name for field in dataclasses.fields(Settings)}:
        raise SystemExit(f"--set: no setting {name!r}; settings: {', '.join(f.name for f in dataclasses.fields(Settings))}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(tuple(x) if isinstance(x, list) else x for x in parsed)
    return dataclasses.replace(settings, **{name: parsed})


# --- reporting -------------------------------------------------------------------------------------

def drop_of(row: dict, dense: dict[int, dict[str, float]], split: str = "test") -> float:
    """Accuracy drop in points against the dense model of the row's seed, on ``split``
    ("val": the held-out validation images, "test": t10k)."""
    key = "val_accuracy" if split == "val" else "accuracy"
    return 100 * (dense[row["seed"]][split] - row[key])


def table(rows: list[dict], dense: dict[int, dict[str, float]]) -> str:
    lines = ["| method | seed | validation % | drop | test % | drop (points) | bytes | ratio | blocks P/U/D | coded as "
             "| bit-exact | s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|"]
    for row in rows:
        blocks = row.get("blocks")
        block_text = f"{blocks['pruned']}/{blocks['unified']}/{blocks['dense']}" if blocks else "-"
        lines.append(f"| {row['label']} | {row['seed']} | {100 * row['val_accuracy']:.2f} "
                     f"| {drop_of(row, dense, 'val'):.2f} | {100 * row['accuracy']:.2f} | {drop_of(row, dense):.2f} "
                     f"| {row['bytes']:,} | {row['ratio']:.1f}x | {block_text} | {row.get('coding', '-')} "
                     f"| {row.get('bit_exact', '-')} | {row.get('seconds', '-')} |")
    return "\n".join(lines)


def summarize(rows: list[dict], dense: dict[int, dict[str, float]]) -> list[dict]:
    """One entry per setting (label): every seed's ratio and drops (validation and test), and
    their medians and worst."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["method"] not in ("dense", "dense-coded"):
            groups.setdefault(row["label"], []).append(row)
    summary = []
    for label, group in groups.items():
        group = sorted(group, key=lambda r: r["seed"])
        drops = [drop_of(r, dense) for r in group]
        val_drops = [drop_of(r, dense, "val") for r in group]
        summary.append({"label": label, "method": group[0]["method"], "block": group[0]["block"],
                        "seeds": [r["seed"] for r in group], "ratios": [r["ratio"] for r in group],
                        "drops": drops, "median_ratio": statistics.median(r["ratio"] for r in group),
                        "median_drop": statistics.median(drops), "worst_drop": max(drops),
                        "val_drops": val_drops, "median_val_drop": statistics.median(val_drops),
                        "worst_val_drop": max(val_drops), "least_ratio": min(r["ratio"] for r in group)})
    return summary


def summary_table(summary: list[dict]) -> str:
    lines = ["| setting | ratio per seed | validation drop per seed | test drop per seed (points) | median ratio "
             "| median test drop |",
             "|---|---|---|---|---:|---:|"]
    for entry in summary:
        ratios = " / ".join(f"{r:.1f}x" for r in entry["ratios"])
        val_drops = " / ".join(f"{d:.2f}" for d in entry["val_drops"])
        drops = " / ".join(f"{d:.2f}" for d in entry["drops"])
        lines.append(f"| {entry['label']} | {ratios} | {val_drops} | {drops} | {entry['median_ratio']:.1f}x "
                     f"| {entry['median_drop']:.2f} |")
    return "\n".join(lines)


def plot(summary: list[dict], path: Path) -> bool:
    """Accuracy change against the dense model (median over seeds, bars from the least to the
    most) over the compression ratio (median over seeds)."""
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no plot", file=sys.stderr)
        return False
    figure, axes = plt.subplots(figsize=(8, 5.5))
    series: dict[str, list[dict]] = {}
    for entry in summary:
        if entry["method"] == "admm":
            key = f"ADMM unify+prune {entry['block'][0]}x{entry['block'][1]}"
        elif entry["method"].startswith("calibrated"):
            key = f"{entry['method']} (no labels) {entry['block'][0]}x{entry['block'][1]}"
        elif entry["method"] == "block-prune":
            key = f"block magnitude pruning {entry['block'][0]}x{entry['block'][1]}"
        else:
            key = "unstructured magnitude pruning"
        series.setdefault(key, []).append(entry)
    markers = iter("osD^v<>ph*")
    for key, points in series.items():
        points = sorted(points, key=lambda e: e["median_ratio"])
        change = [-e["median_drop"] for e in points]
        below = [c + max(e["drops"]) for c, e in zip(change, points)]  # median - worst
        above = [-min(e["drops"]) - c for c, e in zip(change, points)]
        axes.errorbar([e["median_ratio"] for e in points], change, yerr=[below, above], marker=next(markers),
                      capsize=2, linestyle="-" if key.startswith("ADMM") else "--", label=key)
    axes.axhline(0, color="black", linewidth=1, label="dense fp32")
    axes.axhline(-1.0, color="gray", linestyle=":", linewidth=1, label="dense - 1.0 point")
    axes.axvline(60, color="tab:red", linestyle="-.", linewidth=0.8, label="target 60x")
    axes.axvline(80, color="tab:red", linestyle=":", linewidth=0.8, label="stretch 80x")
    axes.set_xscale("log")
    plotted = [e["median_ratio"] for e in summary] + [60, 80]
    low, high = min(plotted) / 1.2, 1.2 * max(plotted)
    ticks = [t for t in (5, 10, 15, 20, 30, 40, 50, 60, 80, 100, 150, 200) if low <= t <= high]
    axes.set_xticks(ticks, [f"{t}x" for t in ticks])
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_xlabel("compression ratio of the whole bitstream (fp32 bytes / stream bytes), median over seeds")
    axes.set_ylabel("test accuracy of the decoded model - dense (points)")
    axes.set_title("LeNet-5 on Fashion-MNIST (median over seeds; bars: least to most)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def describe(entry: dict) -> str:
    per_seed = "; ".join(f"seed {seed}: {ratio:.1f}x at a drop of {val:.2f} (validation) / {drop:.2f} (test) points"
                         for seed, ratio, val, drop in zip(entry["seeds"], entry["ratios"], entry["val_drops"],
                                                           entry["drops"]))
    return (f"{entry['label']}: {per_seed} (median {entry['median_ratio']:.1f}x, test {entry['median_drop']:.2f} "
            "points)")


def report(settings: dict, rows: list[dict], dense_accuracy: dict[int, dict[str, float]], quick: bool):
    """Print the tables and the summary lines; returns (summary, best, target met, stretch met).

    The best setting is chosen on the validation split alone (the highest median ratio among
    the ADMM settings within 1.0 point there on every seed); the target is then judged on the
    test set, which no choice has read."""
    print("settings: " + ", ".join(f"{key}={value}" for key, value in settings.items() if key != "seed"))
    print()
    print(table(rows, dense_accuracy))
    summary = summarize(rows, dense_accuracy)
    print()
    print(summary_table(summary))
    admm = [e for e in summary if e["method"] == "admm"]
    within = [e for e in admm if e["worst_val_drop"] <= 1.0 + 1e-9]
    best = max(within, key=lambda e: e["median_ratio"], default=None)
    print()
    if best is None:
        print("no ADMM setting is within 1.0 point of the dense accuracy on the validation split on every seed"
              + (f"; the least drop: {describe(min(admm, key=lambda e: e['worst_val_drop']))}" if admm else ""))
    else:
        print(f"chosen on validation (best ADMM within 1.0 point there on every seed): {describe(best)}")
    at_target = [e for e in admm if e["least_ratio"] >= 60]
    if at_target and (best is None or best["least_ratio"] < 60):
        print(f"least validation drop among the ADMM settings at >= 60x on every seed: "
              f"{describe(min(at_target, key=lambda e: e['worst_val_drop']))}")
    held_out = best is not None and best["worst_drop"] <= 1.0 + 1e-9
    met = held_out and best["least_ratio"] >= 60
    stretch = held_out and best["least_ratio"] >= 80
    print(f"target >= 60x at <= 1.0 point drop on every seed (chosen on validation, judged on test): "
          f"{'met' if met else 'NOT met'}; "
          f"stretch >= 80x: {'met' if stretch else 'not met'}"
          + (" (a --quick smoke run: these figures mean nothing)" if quick else ""))
    print(f"all decoded models bit-exact: {all(r.get('bit_exact', True) for r in rows)}")
    return summary, best, met, stretch


def dense_model(settings: Settings, data, out: Path, retrain: bool) -> Path:
    """The dense model of ``settings.seed`` (cached under ``out``)."""
    path = out / (f"lenet5_dense_e{settings.dense_epochs}_s{settings.seed}_n{settings.subset or 60000}"
                  f"_v{settings.validation}.pt")
    if path.exists() and not retrain:
        print(f"dense model: {path} (cached; --retrain to train again)", file=sys.stderr)
    else:
        print(f"training the dense LeNet-5 (seed {settings.seed}) for {settings.dense_epochs} epochs ...",
              file=sys.stderr)
        torch.save(train_dense(settings, data), path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (data subset, 1 epoch per phase)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds; every job runs once per seed "
                        "(its own dense model too) (default 0,1)")
    parser.add_argument("--workers", type=int, default=2, help="parallel jobs, one thread each (default 2)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the jobs whose label contains TEXT (repeatable: any of them)")
    parser.add_argument("--job", action="append", default=[], type=parse_job, metavar="SPEC",
                        help="run this job instead of the standard list: admm:4x4:0.9:0.08, "
                             "block-prune:4x4:0.9, unstructured:0.95 (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a setting, e.g. --set qp=-22 --set finetune_epochs=15 (repeatable)")
    parser.add_argument("--tag", default="", help="suffix of the output files' names")
    parser.add_argument("--retrain", action="store_true", help="retrain the dense models even if cached")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default tools/out)")
    parser.add_argument("--report", type=Path, metavar="JSON", help="print the tables of an earlier run's JSON, run nothing")
    args = parser.parse_args(argv)
    if args.report:
        result = json.loads(args.report.read_text())
        if not isinstance(next(iter(result["dense_accuracy"].values())), dict):
            raise SystemExit(f"{args.report}: written before the validation split (2026-12-03); rerun it")
        report(result["settings"], result["rows"], {int(k): v for k, v in result["dense_accuracy"].items()},
               "quick" in args.report.name)
        return 0
    started = time.perf_counter()
    torch.set_num_threads(1)
    settings = Settings()
    if args.quick:
        settings = dataclasses.replace(settings, dense_epochs=1, admm_epochs=1, finetune_epochs=1, subset=4000)
    for text in args.set:
        settings = parse_setting(settings, text)
    if not 0 <= settings.budget_ramp <= 1:
        parser.error(f"budget_ramp must be a fraction of ADMM's updates, 0 to 1; got {settings.budget_ramp}")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench_fashion_mnist" + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    data = load_data(settings.subset, settings.validation)
    fp32_bytes = 4 * sum(p.numel() for p in LeNet5().parameters())
    dense_paths, dense_accuracy, rows = {}, {}, []
    for seed in seeds:
        seeded = dataclasses.replace(settings, seed=seed)
        dense_paths[seed] = str(dense_model(seeded, data, args.out, args.retrain))
        dense = LeNet5()
        dense.load_state_dict(torch.load(dense_paths[seed], weights_only=True))
        dense_accuracy[seed] = {"val": accuracy(dense, data.x_val, data.y_val),
                                "test": accuracy(dense, data.x_test, data.y_test)}
        rows.append({"method": "dense", "label": "dense fp32", "seed": seed, "accuracy": dense_accuracy[seed]["test"],
                     "val_accuracy": dense_accuracy[seed]["val"], "bytes": fp32_bytes, "ratio": 1.0})
        coded = _saved(code_and_check(dense, seeded, data, [(4, 4)], True), "dense-coded", seed, args.out / "streams")
        rows.append({"method": "dense-coded", "label": f"dense through the codec (qp {settings.qp})", "seed": seed,
                     **coded})
        print(f"dense accuracy, seed {seed}: validation {100 * dense_accuracy[seed]['val']:.2f}%, "
              f"test {100 * dense_accuracy[seed]['test']:.2f}%", file=sys.stderr)

    jobs = args.job or jobs_for(args.quick)
    if args.only:
        jobs = [job for job in jobs if any(text in job.label for text in args.only)]
    tasks = [(seed, job) for job in jobs for seed in seeds]
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers, initializer=_init_worker,
                      initargs=(settings, dense_paths, args.out / "streams")) as pool:
        for done, row in enumerate(pool.imap_unordered(run_job, tasks), start=1):
            print(f"[{done}/{len(tasks)}] {row['label']} (seed {row['seed']}): validation "
                  f"{100 * row['val_accuracy']:.2f}% (drop {drop_of(row, dense_accuracy, 'val'):.2f}), test "
                  f"{100 * row['accuracy']:.2f}% (drop {drop_of(row, dense_accuracy):.2f}) at {row['ratio']:.1f}x "
                  f"({row['seconds']} s)",
                  file=sys.stderr, flush=True)
            rows.append(row)
    order = {"dense": 0, "dense-coded": 1, "admm": 2, "block-prune": 3, "unstructured": 4, "calibrated": 5,
             "calibrated+distilled": 6}
    rows.sort(key=lambda r: (order[r["method"]], r.get("block", [0, 0]), r.get("prune_ratio", 0),
                             r.get("unify_ratio", 0), r["seed"]))
    total_seconds = time.perf_counter() - started

    summary, best, met, stretch = report(dataclasses.asdict(settings), rows, dense_accuracy, args.quick)
    result = {"settings": {**dataclasses.asdict(settings), "seed": None}, "seeds": seeds,
              "dense_accuracy": {str(seed): acc for seed, acc in dense_accuracy.items()}, "fp32_bytes": fp32_bytes,
              "rows": rows, "summary": summary, "best": best, "target_60x_met": met, "stretch_80x_met": stretch,
              "total_seconds": round(total_seconds, 1), "workers": args.workers}
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    if summary and plot(summary, args.out / f"{name}.png"):
        print(f"plot: {args.out / f'{name}.png'}")
    print(f"figures: {args.out / f'{name}.json'}")
    print(f"total run time: {total_seconds / 60:.1f} min ({total_seconds:.0f} s, {args.workers} workers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
