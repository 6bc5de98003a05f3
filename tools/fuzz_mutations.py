#!/usr/bin/env python3
"""Long mutation-fuzzing run of the decoder: the test suite's mutators, for as long as you like.

    python tools/fuzz_mutations.py --seconds 3600 --jobs 2 --out fuzz-findings

Each worker builds its own corpus (seeded random models: format 4.0 streams, and 3.0/2.0 ones
written without digests; plus ``conformance/`` streams when present) and decodes seeded
mutations of it, most with their CRCs recomputed, half of those resealed (a 4.0 stream's
STREAM_END rewritten too, ``tests/fuzzing.py``). It checks, for every input:

* invariant 1: only ``BitstreamError`` escapes ``decode_tensors`` and ``describe`` (numpy
  warnings and floating-point errors raised);
* invariant 2: no decode takes longer than ``--slow`` seconds;
* invariant 4: a mutation of a valid stream that kept the original CRCs is rejected or
  decodes to the same tensors (a reordering of whole units of a 2.x/3.x stream is counted
  apart: those formats do not bind the units' order; in a 4.x stream it is a finding);
* with ``--differential``: inputs up to ``--differential-bytes`` are also decoded by
  ``tools/independent_decoder.py`` (written from the spec alone); both must reject with the
  same category and element (§3.6: the first condition met), or decode the same tensors
  (names, dtypes, shapes, canonical bytes). That one is slow (a Python range decoder).

Each finding is written to ``--out`` as ``<kind>-<sha1>.nnu`` (the stream, ready for
``tests/fuzz_regressions/``) with a ``.txt`` beside it. The exit status is 1 if there was any.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _differential(data: bytes) -> str | None:
    """How the reference and the independent decoder disagree on ``data``, or None."""
    import dataclasses
    import hashlib

    import independent_decoder as independent
    from fuzzing import FUZZ_LIMITS

    import nncodec_unify as nu
    from nncodec_unify.codec.conform import canonical_bytes, error_category

    try:
        model = nu.decode_tensors(data, limits=FUZZ_LIMITS)
        ours = [(t.name, t.dtype_name, tuple(t.array.shape),
                 hashlib.sha256(canonical_bytes(t.array, t.dtype_name)).digest()) for t in model.tensors]
    except nu.BitstreamError as exc:
        ours = (error_category(exc), exc.element)
    try:
        tensors = independent.decode(data, dataclasses.asdict(FUZZ_LIMITS))
        theirs = [(t.name, t.dtype, tuple(t.shape), hashlib.sha256(t.data).digest()) for t in tensors]
    except independent.DecodeError as exc:
        theirs = (exc.category, exc.element)
    if ours == theirs:
        return None

    def show(x):
        return x if isinstance(x, tuple) else f"{len(x)} tensors"
    return f"reference {show(ours)}, independent {show(theirs)}"


def _worker(seed: int, seconds: float, slow: float, out: str | None, corpus_size: int,
            differential_bytes: int = 0) -> dict:
    from fuzzing import FOREIGN, REORDERING, make_corpus, mutations, run_decoder, same_or_rejected, version_major

    from nncodec_unify.codec.decoder import describe
    from nncodec_unify.codec.format import INTEGRITY_MAJOR

    corpus = make_corpus(seed, corpus_size)
    expected = {s.label: run_decoder(s.data).tensors for s in corpus if s.valid}
    stats: dict = {"inputs": 0, "crc_fixed": 0, "resealed": 0, "outcomes": collections.Counter(),
                   "findings": collections.Counter(),
                   "reorders_accepted": 0, "worst_seconds": 0.0, "mutators": collections.Counter(),
                   "differential": 0}
    deadline = time.monotonic() + seconds
    batch = 0
    while time.monotonic() < deadline:
        for mutation in mutations(corpus, seed * 1_000_003 + batch, 500):
            outcome = run_decoder(mutation.data)
            stats["inputs"] += 1
            stats["crc_fixed"] += mutation.crcs_fixed
            stats["resealed"] += mutation.resealed
            for step in mutation.steps:
                stats["mutators"][step] += 1
            stats["outcomes"][outcome.error or "ok"] += 1
            stats["worst_seconds"] = max(stats["worst_seconds"], outcome.seconds)
            problems = []
            if not outcome.ours:
                problems.append(("escaped", outcome.message))
            if stats["inputs"] % 8 == 0:
                described = run_decoder(mutation.data, function=describe)
                if not described.ours:
                    problems.append(("escaped-describe", described.message))
            if outcome.seconds > slow:
                problems.append(("slow", f"{outcome.seconds:.2f} s"))
            if differential_bytes and len(mutation.data) <= differential_bytes and outcome.ours:
                stats["differential"] += 1
                disagreement = _differential(mutation.data)
                if disagreement:
                    problems.append(("differential", disagreement))
            if mutation.sample.valid and not mutation.crcs_fixed and not mutation.steps & FOREIGN:
                original = expected[mutation.sample.label]
                reordered = outcome.error is None and sorted(outcome.tensors) == sorted(original)
                if (mutation.steps & REORDERING and reordered and outcome.tensors != original
                        and version_major(mutation.sample.data) < INTEGRITY_MAJOR):
                    stats["reorders_accepted"] += 1
                elif not same_or_rejected(outcome, original):
                    problems.append(("undetected", f"{mutation.mutator} of {mutation.sample.label}"))
            for kind, message in problems:
                stats["findings"][kind] += 1
                if out:
                    digest = hashlib.sha1(mutation.data).hexdigest()[:16]
                    folder = Path(out)
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"{kind}-{digest}.nnu").write_bytes(mutation.data)
                    (folder / f"{kind}-{digest}.txt").write_text(
                        f"{message}\nmutator: {mutation.mutator}\nsample: {mutation.sample.label}\n"
                        f"crcs recomputed: {mutation.crcs_fixed}\nresealed: {mutation.resealed}\n")
            if time.monotonic() >= deadline:
                break
        batch += 1
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="run time per worker (default 300)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="base seed (default 1)")
    parser.add_argument("--corpus", type=int, default=12, help="random models per worker (default 12)")
    parser.add_argument("--slow", type=float, default=2.0, help="seconds that make a decode a finding")
    parser.add_argument("--out", default="fuzz-findings", help="folder for findings (default fuzz-findings)")
    parser.add_argument("--differential", action="store_true",
                        help="also compare with tools/independent_decoder.py on small inputs")
    parser.add_argument("--differential-bytes", type=int, default=2048, help="largest input compared (default 2048)")
    args = parser.parse_args(argv)
    seeds = [args.seed + i for i in range(args.jobs)]
    differential = args.differential_bytes if args.differential else 0
    if args.jobs == 1:
        results = [_worker(seeds[0], args.seconds, args.slow, args.out, args.corpus, differential)]
    else:
        with concurrent.futures.ProcessPoolExecutor(args.jobs, initializer=_one_thread) as pool:
            results = list(pool.map(_worker, seeds, [args.seconds] * args.jobs, [args.slow] * args.jobs,
                                    [args.out] * args.jobs, [args.corpus] * args.jobs, [differential] * args.jobs))
    total = {"inputs": 0, "crc_fixed": 0, "resealed": 0, "reorders_accepted": 0, "worst_seconds": 0.0, "differential": 0}
    outcomes, findings, mutators = collections.Counter(), collections.Counter(), collections.Counter()
    for result in results:
        for key in ("inputs", "crc_fixed", "resealed", "reorders_accepted", "differential"):
            total[key] += result[key]
        total["worst_seconds"] = max(total["worst_seconds"], result["worst_seconds"])
        outcomes.update(result["outcomes"])
        findings.update(result["findings"])
        mutators.update(result["mutators"])
    print(f"inputs: {total['inputs']:,} ({total['crc_fixed']:,} with CRCs recomputed, {total['resealed']:,} of them "
          f"resealed), seeds {seeds}")
    print("by mutator: " + ", ".join(f"{k} {v:,}" for k, v in sorted(mutators.items())))
    print("outcomes: " + ", ".join(f"{k} {v:,}" for k, v in outcomes.most_common()))
    print(f"worst decode time: {total['worst_seconds'] * 1e3:.1f} ms")
    print(f"unit reorderings of 2.x/3.x streams accepted (same tensors, other order): "
          f"{total['reorders_accepted']:,}")
    if args.differential:
        print(f"compared with the independent decoder: {total['differential']:,}")
    print("findings: " + (", ".join(f"{k} {v}" for k, v in findings.items()) if findings else "none"))
    return 1 if findings else 0


def _one_thread() -> None:
    import os

    os.environ["OMP_NUM_THREADS"] = "1"


if __name__ == "__main__":
    sys.exit(main())
