#!/usr/bin/env python3
"""Per-group qp allocation for all-MiniLM-L6-v2 from measured sensitivities (validation split).

Each group of tensors (query/key, value, attention output, intermediate, output, word and
position embeddings) is coded once at a base qp and once ``--step`` qp coarser, the others
staying at the base, with scalar levels (as calibrated streams have); each decoded model is
evaluated on the benchmark's validation split of the WordNet glosses, never its test split.
The cosine a group loses and the bytes it saves give, under the high-rate model (loss ∝
step² = 2^(qp/2), bytes linear in qp), the allocation that minimises the summed loss within a
byte budget (``--ratio``): reverse water-filling, ``2^(qp_g/2) ∝ r_g / c_g`` with ``r_g`` the
bytes a group saves per qp, each qp kept within 4 of the base (the model is local). Prints
the measurements, the allocation as ``--group-qp`` text for ``bench_minilm_unify.py``, and
the allocation's own bytes and validation cosine.

    python tools/minilm_sensitivity.py [--base-qp -24] [--embedding-qp -16] [--position-qp -20] [--ratio 12]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import fnmatch  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minilm  # noqa: E402

import nncodec_unify as nu  # noqa: E402
from nncodec_unify import EncoderConfig, TensorRule  # noqa: E402

VALIDATION = 400  # the benchmark's validation glosses: the last of its train part
GROUPS = {  # fnmatch patterns of the tensors each group holds ('?': the layer index, 0..5)
    "query/key": ("encoder.layer.?.attention.self.query.weight", "encoder.layer.?.attention.self.key.weight"),
    "value": ("encoder.layer.?.attention.self.value.weight",),
    "attention output": ("encoder.layer.?.attention.output.dense.weight",),
    "intermediate": ("encoder.layer.?.intermediate.dense.weight",),
    "output": ("encoder.layer.?.output.dense.weight",),
    "word embeddings": ("embeddings.word_embeddings.weight",),
    "position embeddings": ("embeddings.position_embeddings.weight",),
}


def group_rules(qps: dict[str, int]) -> tuple[TensorRule, ...]:
    """One qp rule per pattern of each group."""
    return tuple(TensorRule(pattern, qp=qp) for group, qp in qps.items() for pattern in GROUPS[group])


def evaluate(checkpoint: dict, qps: dict[str, int], base_qp: int, model, batches, reference) -> tuple[int, float]:
    """Bytes of the whole stream and validation mean cosine of its decoded model."""
    # scalar levels, as the calibrated streams have (snapped to the scalar grid)
    stream = nu.encode(checkpoint, config=EncoderConfig(qp=base_qp, rules=group_rules(qps), dependent=False))
    decoded = nu.decode(stream)
    model.load_state_dict({name: torch.from_numpy(np.ascontiguousarray(array))
                           for name, array in decoded.items() if not name.startswith("pooler.")})
    candidate = tuple(minilm.embed(model, b) for b in batches)
    return len(stream), minilm.fidelity(reference, candidate)["cosine_mean"]


def allocate(rates: dict[str, float], costs: dict[str, float], base: dict[str, int], base_bytes: int,
             budget: int, reach: int = 4) -> dict[str, int]:
    """Integer qps (within ``reach`` of the base) minimising ``sum c_g 2^(qp_g/2)`` with the
    predicted bytes ``base_bytes - sum r_g (qp_g - base_g)`` at most ``budget``: at the
    Lagrange multiplier lam, ``qp_g = 2 log2(lam r_g / c_g)`` (up to a constant), found by bisection."""
    def qps(lam: float) -> dict[str, int]:
        return {g: int(np.clip(round(2 * math.log2(lam * rates[g] / costs[g])), base[g] - reach, base[g] + reach))
                for g in base}

    def size(chosen: dict[str, int]) -> float:
        return base_bytes - sum(rates[g] * (chosen[g] - base[g]) for g in base)

    low, high = -200.0, 200.0  # log2 of lam
    for _ in range(100):
        middle = (low + high) / 2
        if size(qps(2.0 ** middle)) > budget:
            low = middle  # too many bytes: coarser steps, a larger lam
        else:
            high = middle
    return qps(2.0 ** high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-qp", type=int, default=-24)
    parser.add_argument("--embedding-qp", type=int, default=-16)
    parser.add_argument("--position-qp", type=int, default=-20)
    parser.add_argument("--step", type=int, default=2, help="qp added to one group at a time (default 2)")
    parser.add_argument("--ratio", type=float, default=12.0, help="compression ratio to allocate for (default 12)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from safetensors.numpy import load_file

    checkpoint = load_file(str(minilm.model_folder() / "model.safetensors"))
    tokenizer = minilm.load_tokenizer()
    train, _ = minilm.split(minilm.wordnet_glosses(), 1000, seed=0)  # the benchmark's split; test unused
    validation = train[-VALIDATION:]
    batches = (minilm.batches(tokenizer, [g.example for g in validation]),
               minilm.batches(tokenizer, [g.definition for g in validation]))
    model = minilm.load_model()
    reference = tuple(minilm.embed(model, b) for b in batches)
    base = {group: args.base_qp for group in GROUPS}
    base.update({"word embeddings": args.embedding_qp, "position embeddings": args.position_qp})
    sizes = {g: sum(checkpoint[n].size for n in checkpoint if any(fnmatch.fnmatchcase(n, p) for p in GROUPS[g]))
             for g in GROUPS}
    started = time.perf_counter()
    base_bytes, base_cosine = evaluate(checkpoint, base, args.base_qp, model, batches, reference)
    print(f"base: {base_bytes:,} bytes ({minilm.FP32_BYTES / base_bytes:.2f}x), validation cosine {base_cosine:.4f}")
    rates, costs, rows = {}, {}, []
    for group in GROUPS:
        coarser = dict(base, **{group: base[group] + args.step})
        size, cosine = evaluate(checkpoint, coarser, args.base_qp, model, batches, reference)
        rates[group] = max(base_bytes - size, 1) / args.step  # bytes saved per qp
        # loss = c 2^(qp/2): going step qp coarser multiplies it by 2^(step/2)
        costs[group] = max(base_cosine - cosine, 1e-5) / (2 ** (args.step / 2) - 1) / 2 ** (base[group] / 2)
        rows.append({"group": group, "parameters": sizes[group], "qp": base[group], "bytes_saved": base_bytes - size,
                     "cosine_lost": base_cosine - cosine})
        print(f"  {group:<20} {sizes[group]:>10,} params  qp {base[group]} -> {base[group] + args.step}: "
              f"{base_bytes - size:>9,} bytes saved, cosine {cosine:.4f} ({base_cosine - cosine:+.4f})")
    budget = int(minilm.FP32_BYTES / args.ratio)
    chosen = allocate(rates, costs, base, base_bytes, budget)
    print(f"allocation for {budget:,} bytes ({args.ratio:g}x, high-rate model):")
    print("  --group-qp '" + ",".join(f"{g}={q}" for g, q in chosen.items()) + "'")
    size, cosine = evaluate(checkpoint, chosen, args.base_qp, model, batches, reference)
    print(f"allocated: {size:,} bytes ({minilm.FP32_BYTES / size:.2f}x), validation cosine {cosine:.4f} "
          f"(base {base_bytes:,} bytes, {base_cosine:.4f}); {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"base": base, "base_bytes": base_bytes, "base_cosine": base_cosine,
                                         "groups": rows, "allocated": chosen, "allocated_bytes": size,
                                         "allocated_cosine": cosine}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
