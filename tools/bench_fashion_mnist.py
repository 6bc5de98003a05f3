#!/usr/bin/env python3
"""Benchmark: LeNet-5 on Fashion-MNIST, accuracy against whole-bitstream compression ratio.

Methods, all coded by the same codec at the same quantization (qp -24, a step of 2**-6, for the
weight matrices; qp -32 for the biases), all evaluated on the **decoded** weights, all with the
same training budget after the dense model:

* ``dense``: the baseline model, and the same model through the codec without any pruning;
* ``admm``: ADMM towards micro-structured unification + pruning (global budget over the weight
  matrices, exact block selection), hard projection, masked quantization-aware fine-tuning,
  snap to grid; at several targets and block shapes 1x4, 4x1, 2x2, 4x4;
* ``block-prune``: block magnitude pruning without ADMM (the least-norm blocks of the same
  global budget), then masked fine-tuning for the whole budget (ADMM + fine-tuning epochs);
* ``unstructured``: global magnitude pruning of single weights, the same fine-tuning.

Every method leaves the first and last layers (conv1, 150 weights; fc3, 840) dense and
fine-tunes on the codec's grid (straight-through, ``GridTraining``) with the same optimizer and
schedule. The compression ratio is the fp32 size of all parameters over the size of the whole
stream (every tensor, biases included). The baselines are coded with whichever of a few codec settings
(block shape 1x1, the training block, 4x4, or DENSE mode) gives them the smallest stream.

Data: the Debian package ``dataset-fashion-mnist`` (``apt-get install -y dataset-fashion-mnist``,
IDX files under /usr/share/datasets/fashion-mnist/). Output: a table on stdout, the figures as
JSON and a plot (PNG, needs matplotlib) under tools/out/. Jobs run in ``--workers`` processes of
one thread each. ``--quick`` runs a tiny smoke version (a data subset, one epoch per phase).

    python tools/bench_fashion_mnist.py            # the full benchmark (about 30 min on 2 cores)
    python tools/bench_fashion_mnist.py --quick    # a minute: checks that everything runs
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gzip
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nncodec_unify import CodingMode, EncoderConfig, TensorRule, decode, encode
from nncodec_unify.admm import ADMM, GridTraining, same_bits, snap_to_grid, structure_from_weights
from nncodec_unify.format import BlockKind
from nncodec_unify.unify import Target, plan_kinds

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
OUT_DIR = Path(__file__).resolve().parent / "out"
MEAN, STD = 0.2860, 0.3530

# (block, prune_ratio, unify_ratio) for ADMM, fractions of all blocks of the constrained layers;
# the rest stay dense. Dense blocks cost ~4x a unified one, so only a few percent are kept.
ADMM_TARGETS = {
    (4, 4): [(0.65, 0.32), (0.7, 0.27), (0.75, 0.22), (0.85, 0.12)],
    (1, 4): [(0.8, 0.17), (0.85, 0.12), (0.875, 0.1), (0.9, 0.08)],
    (4, 1): [(0.8, 0.17), (0.85, 0.12), (0.875, 0.1), (0.9, 0.08)],
    (2, 2): [(0.8, 0.17), (0.85, 0.12), (0.875, 0.1), (0.9, 0.08)],
}
BLOCK_PRUNE_RATIOS = [0.7, 0.8, 0.9]  # 4x4 blocks
UNSTRUCTURED_RATIOS = [0.85, 0.9, 0.95]


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
    finetune_epochs: int = 10
    finetune_lr: float = 2e-3
    grid_training: bool = True  # quantization-aware fine-tuning (GridTraining), in every method
    exclude_first_last: bool = True  # conv1 (150 weights) and fc3 (840) stay dense, in every method
    batch_size: int = 128
    qp: int = -24
    vector_qp: int = -32
    rho: float = 0.2
    rho_growth: float = 1.2
    rho_max: float = 10.0
    updates_per_epoch: int = 2
    subset: int | None = None  # training images used (--quick)
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Job:
    method: str  # "admm", "block-prune", "unstructured"
    block: tuple[int, int]
    prune_ratio: float
    unify_ratio: float = 0.0

    @property
    def label(self) -> str:
        if self.method == "admm":
            return f"admm {self.block[0]}x{self.block[1]} P={self.prune_ratio:g} U={self.unify_ratio:g}"
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


def load_data(subset: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    def images(name: str) -> torch.Tensor:
        pixels = read_idx(DATA_DIR / name).astype(np.float32) / 255.0
        return (torch.from_numpy(pixels)[:, None] - MEAN) / STD

    def labels(name: str) -> torch.Tensor:
        return torch.from_numpy(read_idx(DATA_DIR / name).astype(np.int64))

    x_train, y_train = images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")
    x_test, y_test = images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz")
    if subset is not None:
        x_train, y_train = x_train[:subset], y_train[:subset]
        x_test, y_test = x_test[:subset // 2], y_test[:subset // 2]
    return x_train, y_train, x_test, y_test


# --- training --------------------------------------------------------------------------------------

def train_epoch(model, optimizer, x, y, batch_size, generator, after_step=None) -> None:
    model.train()
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        index = order[start:start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[index]), y[index]).backward()
        optimizer.step()
        if after_step is not None:
            after_step()


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    return sum(int((model(x[i:i + 2000]).argmax(1) == y[i:i + 2000]).sum()) for i in range(0, len(x), 2000)) / len(x)


def train_dense(settings: Settings, data) -> dict[str, torch.Tensor]:
    x_train, y_train, _, _ = data
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = LeNet5()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.dense_epochs)
    for _ in range(settings.dense_epochs):
        train_epoch(model, optimizer, x_train, y_train, settings.batch_size, generator)
        schedule.step()
    return model.state_dict()


def fine_tune(model, structure, settings: Settings, data, epochs: int, generator) -> None:
    x_train, y_train, _, _ = data
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.finetune_lr)
    structure.attach(optimizer)
    if settings.grid_training:
        GridTraining(model, EncoderConfig(qp=settings.qp, vector_qp=settings.vector_qp)).attach(optimizer)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs))
    for _ in range(epochs):
        train_epoch(model, optimizer, x_train, y_train, settings.batch_size, generator)
        schedule.step()


def weight_names(model, exclude_first_last: bool) -> list[str]:
    """The constrained weights: all matrices, without the first and last if asked."""
    names = [name for name, p in model.named_parameters() if p.dim() >= 2]
    return names[1:-1] if exclude_first_last else names


# --- coding ----------------------------------------------------------------------------------------

def code_and_check(model, settings: Settings, data, blocks: list[tuple[int, int]], try_dense_mode: bool) -> dict:
    """Snap to the grid, encode with each candidate setting, keep the smallest stream, decode it
    and evaluate the decoded weights."""
    _, _, x_test, y_test = data
    base = EncoderConfig(qp=settings.qp, vector_qp=settings.vector_qp)
    state = snap_to_grid(model, base)  # the grid depends on qp only, not on the block shape
    candidates = [dataclasses.replace(base, block=block) for block in blocks]
    if try_dense_mode:
        candidates.append(dataclasses.replace(base, rules=(TensorRule("*", mode=CodingMode.DENSE),)))
    streams = [(encode(state, config=config), config) for config in candidates]
    stream, config = min(streams, key=lambda item: len(item[0]))
    decoded = decode(stream)
    rebuilt = LeNet5()
    rebuilt.load_state_dict({name: torch.from_numpy(array.copy()) for name, array in decoded.items()})
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    coding = "DENSE mode" if config.rules else f"block {config.block[0]}x{config.block[1]}"
    return {"accuracy": accuracy(rebuilt, x_test, y_test), "bytes": len(stream),
            "ratio": fp32_bytes / len(stream), "bit_exact": same_bits(state, decoded), "coding": coding}


# --- jobs ------------------------------------------------------------------------------------------

_DATA = None
_DENSE = None
_SETTINGS = None


def _init_worker(settings: Settings, dense_path: str) -> None:
    global _DATA, _DENSE, _SETTINGS
    torch.set_num_threads(1)
    _SETTINGS = settings
    _DATA = load_data(settings.subset)
    _DENSE = torch.load(dense_path, weights_only=True)


def run_job(job: Job) -> dict:
    settings, data = _SETTINGS, _DATA
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    model = LeNet5()
    model.load_state_dict(_DENSE)
    x_train, y_train, x_test, y_test = data
    names = weight_names(model, settings.exclude_first_last)
    if job.method == "admm":
        budget = Target(prune_ratio=job.prune_ratio, unify_ratio=job.unify_ratio, block=job.block)
        admm = ADMM(model, budget, budget=budget, rho=settings.rho, rho_growth=settings.rho_growth,
                    rho_max=settings.rho_max, exclude_first_last=settings.exclude_first_last)
        assert list(admm.params) == names
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        admm.attach(optimizer)
        every = max(1, -(-len(x_train) // settings.batch_size) // settings.updates_per_epoch)
        steps = [0]

        def after_step() -> None:
            steps[0] += 1
            if steps[0] % every == 0:
                admm.update()

        for _ in range(settings.admm_epochs):
            train_epoch(model, optimizer, x_train, y_train, settings.batch_size, generator, after_step)
        structure = admm.hard_project()
        finetune_epochs = settings.finetune_epochs
        code_blocks = [job.block]
        try_dense_mode = False
    else:
        block = job.block if job.method == "block-prune" else (1, 1)
        target = Target(prune_ratio=job.prune_ratio, block=block)
        weights = {name: p.detach().numpy() for name, p in model.named_parameters() if name in names}
        kinds = plan_kinds(weights, dict.fromkeys(names, target), budget=target)
        structure = structure_from_weights(model, kinds, dict.fromkeys(names, block))
        finetune_epochs = settings.admm_epochs + settings.finetune_epochs  # the same training budget
        code_blocks = sorted({(1, 1), block, (4, 4)})
        try_dense_mode = True
    projected_accuracy = accuracy(model, x_test, y_test)
    fine_tune(model, structure, settings, data, finetune_epochs, generator)
    assert structure.holds()
    counts = np.bincount(np.concatenate([k.ravel() for k in structure.kinds.values()]), minlength=3)
    weight_count = sum(p.numel() for name, p in model.named_parameters() if name in names)
    zero_weights = sum(int((p == 0).sum()) for name, p in model.named_parameters() if name in names)
    row = {"method": job.method, "label": job.label, "block": list(job.block), "prune_ratio": job.prune_ratio,
           "unify_ratio": job.unify_ratio, "projected_accuracy": projected_accuracy,
           "blocks": {"pruned": int(counts[BlockKind.PRUNED]), "unified": int(counts[BlockKind.UNIFIED]),
                      "dense": int(counts[BlockKind.DENSE])},
           "weight_sparsity": zero_weights / weight_count}
    row.update(code_and_check(model, settings, data, code_blocks, try_dense_mode))
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def jobs_for(quick: bool) -> list[Job]:
    if quick:
        return [Job("admm", (4, 4), 0.6, 0.4), Job("block-prune", (4, 4), 0.8), Job("unstructured", (1, 1), 0.9)]
    jobs = [Job("admm", block, p, u) for block, targets in ADMM_TARGETS.items() for p, u in targets]
    jobs += [Job("block-prune", (4, 4), p) for p in BLOCK_PRUNE_RATIOS]
    jobs += [Job("unstructured", (1, 1), p) for p in UNSTRUCTURED_RATIOS]
    return jobs


# --- reporting -------------------------------------------------------------------------------------

def table(rows: list[dict], dense_accuracy: float) -> str:
    lines = ["| method | accuracy % | drop (points) | bytes | ratio | blocks P/U/D | coded as | bit-exact | s |",
             "|---|---:|---:|---:|---:|---|---|---|---:|"]
    for row in rows:
        blocks = row.get("blocks")
        block_text = f"{blocks['pruned']}/{blocks['unified']}/{blocks['dense']}" if blocks else "-"
        drop = 100 * (dense_accuracy - row["accuracy"])
        lines.append(f"| {row['label']} | {100 * row['accuracy']:.2f} | {drop:.2f} | {row['bytes']:,} "
                     f"| {row['ratio']:.1f}x | {block_text} | {row.get('coding', '-')} "
                     f"| {row.get('bit_exact', '-')} | {row.get('seconds', '-')} |")
    return "\n".join(lines)


def plot(rows: list[dict], dense_accuracy: float, path: Path) -> bool:
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
    for row in rows:
        if row["method"] == "admm":
            key = f"ADMM unify+prune {row['block'][0]}x{row['block'][1]}"
        elif row["method"] == "block-prune":
            key = f"block magnitude pruning {row['block'][0]}x{row['block'][1]}"
        elif row["method"] == "unstructured":
            key = "unstructured magnitude pruning"
        else:
            continue
        series.setdefault(key, []).append(row)
    markers = iter("osD^v<>ph*")
    for key, points in series.items():
        points = sorted(points, key=lambda r: r["ratio"])
        axes.plot([r["ratio"] for r in points], [100 * r["accuracy"] for r in points], marker=next(markers),
                  linestyle="-" if key.startswith("ADMM") else "--", label=key)
    axes.axhline(100 * dense_accuracy, color="black", linewidth=1, label=f"dense fp32 ({100 * dense_accuracy:.2f}%)")
    axes.axhline(100 * dense_accuracy - 1.0, color="gray", linestyle=":", linewidth=1, label="dense - 1.0 point")
    axes.axvline(40, color="tab:red", linestyle="-.", linewidth=0.8, label="target 40x")
    axes.axvline(80, color="tab:red", linestyle=":", linewidth=0.8, label="stretch 80x")
    axes.set_xscale("log")
    plotted = [r["ratio"] for points in series.values() for r in points] + [40, 80]
    low, high = min(plotted) / 1.2, 1.2 * max(plotted)
    ticks = [t for t in (5, 10, 15, 20, 30, 40, 50, 60, 80, 100, 150, 200) if low <= t <= high]
    axes.set_xticks(ticks, [f"{t}x" for t in ticks])
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_xlabel("compression ratio of the whole bitstream (fp32 bytes / stream bytes)")
    axes.set_ylabel("test accuracy of the decoded model (%)")
    axes.set_title("LeNet-5 on Fashion-MNIST")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (data subset, 1 epoch per phase)")
    parser.add_argument("--workers", type=int, default=2, help="parallel jobs, one thread each (default 2)")
    parser.add_argument("--retrain", action="store_true", help="retrain the dense model even if cached")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default tools/out)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    settings = Settings()
    if args.quick:
        settings = dataclasses.replace(settings, dense_epochs=1, admm_epochs=1, finetune_epochs=1, subset=4000)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench_fashion_mnist" + ("_quick" if args.quick else "")
    data = load_data(settings.subset)
    dense_path = args.out / f"lenet5_dense_e{settings.dense_epochs}_s{settings.seed}_n{settings.subset or 60000}.pt"
    if dense_path.exists() and not args.retrain:
        print(f"dense model: {dense_path} (cached; --retrain to train again)", file=sys.stderr)
        dense_state = torch.load(dense_path, weights_only=True)
    else:
        print(f"training the dense LeNet-5 for {settings.dense_epochs} epochs ...", file=sys.stderr)
        dense_state = train_dense(settings, data)
        torch.save(dense_state, dense_path)
    dense = LeNet5()
    dense.load_state_dict(dense_state)
    dense_accuracy = accuracy(dense, data[2], data[3])
    fp32_bytes = 4 * sum(p.numel() for p in dense.parameters())
    rows = [{"method": "dense", "label": "dense fp32", "accuracy": dense_accuracy, "bytes": fp32_bytes, "ratio": 1.0}]
    coded = code_and_check(copy.deepcopy(dense), settings, data, [(4, 4)], True)
    rows.append({"method": "dense-coded", "label": f"dense through the codec (qp {settings.qp})", **coded})
    print(f"dense accuracy {100 * dense_accuracy:.2f}%", file=sys.stderr)

    jobs = jobs_for(args.quick)
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers, initializer=_init_worker, initargs=(settings, str(dense_path))) as pool:
        for done, row in enumerate(pool.imap_unordered(run_job, jobs), start=1):
            print(f"[{done}/{len(jobs)}] {row['label']}: {100 * row['accuracy']:.2f}% at {row['ratio']:.1f}x "
                  f"({row['seconds']} s)", file=sys.stderr, flush=True)
            rows.append(row)
    order = {"dense": 0, "dense-coded": 1, "admm": 2, "block-prune": 3, "unstructured": 4}
    rows.sort(key=lambda r: (order[r["method"]], r.get("block", [0, 0]), r.get("prune_ratio", 0)))
    total_seconds = time.perf_counter() - started

    print(table(rows, dense_accuracy))
    within = [r for r in rows if r["method"] == "admm" and dense_accuracy - r["accuracy"] <= 0.010 + 1e-12]
    best = max(within, key=lambda r: r["ratio"], default=None)
    print()
    if best is None:
        print("no ADMM setting is within 1.0 point of the dense accuracy")
    else:
        print(f"best ADMM within 1.0 point: {best['label']}: {best['ratio']:.1f}x at "
              f"{100 * best['accuracy']:.2f}% (a drop of {100 * (dense_accuracy - best['accuracy']):.2f} points)")
    met = best is not None and best["ratio"] >= 40
    stretch = best is not None and best["ratio"] >= 80
    print(f"target >= 40x at <= 1.0 point drop: {'met' if met else 'NOT met'}; "
          f"stretch >= 80x: {'met' if stretch else 'not met'}"
          + (" (a --quick smoke run: these figures mean nothing)" if args.quick else ""))
    print(f"all decoded models bit-exact: {all(r.get('bit_exact', True) for r in rows)}")
    summary = {"settings": dataclasses.asdict(settings), "dense_accuracy": dense_accuracy, "fp32_bytes": fp32_bytes,
               "rows": rows, "target_40x_met": met, "stretch_80x_met": stretch,
               "total_seconds": round(total_seconds, 1), "workers": args.workers}
    (args.out / f"{name}.json").write_text(json.dumps(summary, indent=1))
    if plot(rows, dense_accuracy, args.out / f"{name}.png"):
        print(f"plot: {args.out / f'{name}.png'}")
    print(f"figures: {args.out / f'{name}.json'}")
    print(f"total run time: {total_seconds / 60:.1f} min ({total_seconds:.0f} s, {args.workers} workers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
