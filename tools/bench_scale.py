"""Benchmark: encoding and decoding a large synthetic model, peak memory and throughput.

Makes a safetensors model of Laplace-distributed fp32 weights (default: 24 matrices of
4096 x 4096 and a 32000 x 4096 embedding, ~2.1 GB; ``--scale`` shrinks every side), then runs
``nncodec encode`` and ``nncodec decode`` as separate processes and reports each one's wall
time, peak resident memory (the child's VmHWM) against the largest tensor, and
throughput per core; ``--workers N`` encodes and decodes again in N processes and checks
that the stream and the decoded file are the same bytes, with the parent's peak memory and
the largest worker's. ``--structured`` gives the matrices the structure unification and
pruning leave (a third of the 4x4 blocks each pruned, unified and dense, off the codec's
grid), which the encoder codes through its block-kind RDO and the decoder through the
structured path. ``--dtype`` stores the tensors as float16, bfloat16, or int8 / uint8 levels
(a quantized model's, coded losslessly), where the memory rule is hardest: per byte of the
largest tensor there are four times the elements of a float32 one.

    python tools/bench_scale.py [--scale 0.5] [--workers 2] [--repeat 3] [--structured] [--dtype int8] [--keep DIR]
                                [-- extra encode options]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def structured(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A weight matrix with the method's structure on the default 4x4 blocks: about a third of
    the blocks pruned (zeros), a third unified (one magnitude, each element its own sign) and
    a third dense (Laplace values), as unification and pruning leave a layer."""
    rows, cols = shape
    grid = (-(-rows // 4), -(-cols // 4))
    kinds = np.repeat(np.repeat(rng.integers(0, 3, size=grid, dtype=np.int8), 4, axis=0), 4, axis=1)[:rows, :cols]
    magnitude = np.repeat(np.repeat(np.abs(rng.laplace(0, 0.02, size=grid)).astype(np.float32), 4, axis=0), 4,
                          axis=1)[:rows, :cols]
    values = rng.laplace(0, 0.02, size=shape).astype(np.float32)
    np.copyto(values, np.copysign(magnitude, values), where=kinds == 1)
    values[kinds == 0] = 0
    return values


DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8")


def _integers(values: np.ndarray, dtype: str) -> np.ndarray:
    """Laplace weights as a quantized model stores them: int8 levels (a step of 1/300: most
    within +-16, the tails clipped at +-127), or uint8 ones around a zero point of 128."""
    levels = np.rint(values * 300)
    if dtype == "int8":
        return np.clip(levels, -127, 127).astype(np.int8)
    return np.clip(levels + 128, 0, 255).astype(np.uint8)


def make_model(path: Path, scale: float, seed: int = 0, structure: bool = False,
               dtype: str = "float32") -> tuple[int, int]:
    """Write the synthetic model one tensor at a time; returns (total bytes, largest tensor bytes).
    ``structure``: the matrices have the method's block structure (:func:`structured`);
    ``dtype`` one of :data:`DTYPES` (integer types: :func:`_integers`)."""
    from nncodec_unify.codec.format import DTYPE_BY_NAME, DTYPE_ITEMSIZE
    from nncodec_unify.codec.safetensors_io import tensor_bytes, write_safetensors_header

    stored = DTYPE_BY_NAME[dtype]
    side, vocab = max(8, int(4096 * scale)), max(8, int(32000 * scale))
    shapes = {"embed.weight": (vocab, side)}
    shapes.update({f"layer{i}.weight": (side, side) for i in range(24)})
    shapes.update({f"layer{i}.bias": (side,) for i in range(24)})
    rng = np.random.default_rng(seed)
    with open(path, "wb") as file:
        write_safetensors_header(file, [(name, shape, stored) for name, shape in shapes.items()])
        for name, shape in shapes.items():
            values = structured(shape, rng) if structure and len(shape) == 2 else \
                rng.laplace(0, 0.02, size=shape).astype(np.float32)
            if dtype in ("int8", "uint8"):
                values = _integers(values, dtype)
            elif dtype == "float16":
                values = values.astype(np.float16)
            file.write(tensor_bytes(values, stored))  # bfloat16: rounded from the float32 values
    sizes = [DTYPE_ITEMSIZE[stored] * int(np.prod(shape)) for shape in shapes.values()]
    return sum(sizes), max(sizes)


# Linux's ru_maxrss of a child also counts the parent's peak before the child's exec (here:
# making the model, ~413 MiB at --scale 0.5), so the child reports its own high-water mark,
# VmHWM, where /proc has it.
_CHILD = ("import resource, runpy, sys\n"
          "sys.argv = ['nncodec'] + sys.argv[1:]\n"
          "try:\n"
          "    runpy.run_module('nncodec_unify', run_name='__main__')\n"
          "finally:\n"
          "    try:\n"
          "        peak = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
          "    except (OSError, StopIteration):\n"
          "        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
          "    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
          "    print('peak-rss-kib', peak, workers, file=sys.stderr)\n")


def run(arguments: list[str]) -> tuple[float, float, float]:
    """Wall seconds and peak RSS (MiB) of ``nncodec ARGUMENTS`` in a child process of its own,
    and the largest peak of its worker processes (ru_maxrss: at most that, since it may
    count the child's own memory when the worker was started; 0 without workers)."""
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _CHILD, *arguments], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    lines = result.stderr.strip().splitlines()
    if result.returncode != 0 or not lines or not lines[-1].startswith("peak-rss-kib"):
        sys.exit(f"nncodec {' '.join(arguments)} failed: {result.stderr.strip()}")
    fields = lines[-1].split()
    return seconds, int(fields[1]) / 1024, int(fields[2]) / 1024


def _digest(path: Path) -> bytes:
    """SHA-256 of a file, read a piece at a time."""
    import hashlib

    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        for piece in iter(lambda: file.read(1 << 24), b""):
            hasher.update(piece)
    return hasher.digest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="side-length factor (1.0: ~2.1 GB)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of all runs; figures are medians (default 3)")
    parser.add_argument("--structured", action="store_true",
                        help="matrices with the method's structure: a third of the 4x4 blocks each pruned, unified, dense")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="the tensors' type (int8, uint8: a quantized model's levels; default float32)")
    parser.add_argument("--keep", default=None, help="folder for the files, kept (default: a temporary one, removed)")
    parser.add_argument("extra", nargs="*", help="extra options for nncodec encode, after --")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.workers < 1:
        parser.error("--repeat and --workers must be at least 1")
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        return measure(Path(args.keep), args)
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as folder:  # the model, two streams, a decoded copy: never left behind
        return measure(Path(folder), args)


def measure(folder: Path, args: argparse.Namespace) -> int:
    """The benchmark with its files in ``folder``: each round encodes and decodes with one
    worker, then with ``--workers``, every run into a file that does not exist yet (replacing
    a 2 GB file costs the kernel 0.3 s of freeing pages, which would burden only the second
    run); figures are the medians over ``--repeat`` rounds, memory the largest peak."""
    model = folder / "model.safetensors"
    total, largest = make_model(model, args.scale, structure=args.structured, dtype=args.dtype)
    parameters = total // np.dtype(np.uint16 if args.dtype == "bfloat16" else args.dtype).itemsize
    print(f"model ({args.dtype}{', structured' if args.structured else ''}): {total / 2**20:,.0f} MiB, "
          f"{parameters:,} parameters, largest tensor {largest / 2**20:,.0f} MiB; {args.repeat} round(s), medians")
    budget = 1.5 * largest / 2**20 + 200
    counts = [1] + ([args.workers] if args.workers > 1 else [])
    times = {(job, count): [] for job in ("encode", "decode") for count in counts}
    peaks = {key: [0.0, 0.0, 0.0] for key in times}  # the process, the parent, the largest worker
    outputs = {}
    for _ in range(args.repeat):
        for count in counts:
            stream, back = folder / f"model.w{count}.nnu", folder / f"back.w{count}.safetensors"
            for job, source, target, extra in (("encode", model, stream, args.extra), ("decode", stream, back, [])):
                target.unlink(missing_ok=True)
                seconds, peak, worker = run([job, str(source), str(target), "-q", "--workers", str(count), *extra])
                times[job, count].append(seconds)
                peaks[job, count] = [max(a, b) for a, b in zip(peaks[job, count], (peak, peak, worker))]
                digest = _digest(target)
                if outputs.setdefault((job, count), digest) != digest:
                    sys.exit(f"{job} with {count} worker(s) gave different bytes from one round to the next")
                if job == "decode":  # hashed: let it go (two decoded copies of a 2 GB model would be 4 GB more)
                    target.unlink()
    encode_s, decode_s = (statistics.median(times[job, 1]) for job in ("encode", "decode"))
    stream_bytes = (folder / "model.w1.nnu").stat().st_size
    for job, seconds in (("encode", encode_s), ("decode", decode_s)):
        peak = peaks[job, 1][0]
        print(f"{job}, 1 worker: {seconds:.1f} s, {parameters / seconds / 1e6:.2f} M parameters/s, peak RSS "
              f"{peak:,.0f} MiB (budget 1.5 x largest + 200 = {budget:,.0f} MiB: "
              f"{'met' if peak <= budget else 'NOT met'})" + (f"; {stream_bytes:,} bytes" if job == "encode" else ""))
    for count in counts[1:]:
        for job, single in (("encode", encode_s), ("decode", decode_s)):
            parallel = statistics.median(times[job, count])
            ratios = [a / b for a, b in zip(times[job, 1], times[job, count])]  # each round's runs side by side
            same = outputs[job, count] == outputs[job, 1]
            print(f"{job}, {count} workers: {parallel:.1f} s, {statistics.median(ratios):.2f}x faster (median of the "
                  f"rounds: {', '.join(f'{r:.2f}' for r in ratios)}), "
                  f"identical {'bytes' if job == 'encode' else 'output'}: {same}; peak RSS "
                  f"{peaks[job, count][1]:,.0f} MiB in the parent, at most {peaks[job, count][2]:,.0f} MiB in a worker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
