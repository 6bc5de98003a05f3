#!/usr/bin/env python3
"""Print the decoder-robustness figures of tools/FUZZING.md.

    python tools/fuzz_figures.py                  # about 2-3 minutes on 2 cores
    python tools/fuzz_figures.py --count 200000   # more mutated inputs

1. seeded mutations of encoded random models (and ``conformance/`` streams when present),
   most with recomputed CRCs: inputs tried, outcomes and exceptions by type (anything but a
   BitstreamError is a failure), decode time and peak memory per input;
2. single-bit flips, exhaustively, of two streams: detected out of total with the original
   CRCs, and what happens when the CRC is recomputed after the flip;
3. size bombs: every size field of two streams set to huge values, with the default limits;
4. words added to or removed from a level plane (CRC recomputed): the §6.9.4 end check;
5. the memory a small stream can make the decoder spend per declared output element.

Memory is what numpy and Python allocate, as tracemalloc sees it (constriction's own buffers,
a few words per plane, are not counted). Everything is seeded: the same command prints the
same counts (times vary with the machine).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np  # noqa: E402
from fuzzing import (  # noqa: E402
    BOMBS,
    SIZE_FIELDS,
    field_map,
    fingerprint,
    fix_crcs,
    make_corpus,
    mutations,
    run_decoder,
    single_bit_flips,
    small_stream,
    units,
)

import nncodec_unify as nu  # noqa: E402
from nncodec_unify import CodingMode, EncoderConfig, TensorRule  # noqa: E402
from nncodec_unify.codec.format import DEFAULT_LIMITS  # noqa: E402


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.2f} MiB"


def mutation_figures(seed: int, count: int, corpus_size: int) -> None:
    corpus = make_corpus(seed, corpus_size)
    valid = [s for s in corpus if s.valid]
    print(f"## 1. Mutation fuzzing (seed {seed})")
    print(f"corpus: {len(valid)} valid streams ({min(len(s.data) for s in valid)}-"
          f"{max(len(s.data) for s in valid)} bytes), {len(corpus) - len(valid)} invalid conformance streams")
    outcomes, by_mutator = collections.Counter(), collections.Counter()
    foreign: list[str] = []
    times, peaks = [], []
    fixed = 0
    tracemalloc.start()
    start = time.perf_counter()
    for mutation in mutations(corpus, seed, count):
        outcome = run_decoder(mutation.data, measure_memory=True)
        fixed += mutation.crcs_fixed
        for step in mutation.steps:
            by_mutator[step] += 1
        outcomes[outcome.error or "decoded"] += 1
        if not outcome.ours:
            foreign.append(outcome.message)
        times.append(outcome.seconds)
        peaks.append((outcome.peak_bytes, len(mutation.data)))
    elapsed = time.perf_counter() - start
    tracemalloc.stop()
    print(f"mutated inputs tried: {count:,} ({fixed:,} with CRCs recomputed, {count - fixed:,} with the "
          f"original CRCs) in {elapsed:.0f} s")
    print("mutators: " + ", ".join(f"{k} {v:,}" for k, v in sorted(by_mutator.items())))
    print("outcomes by exception type:")
    for name, n in outcomes.most_common():
        print(f"  {name:<26} {n:>8,}")
    print(f"exceptions other than BitstreamError: {len(foreign)}" + (f" (first: {foreign[0]})" if foreign else ""))
    times.sort()
    print(f"decode time per input: median {statistics.median(times) * 1e3:.2f} ms, "
          f"p99 {times[int(0.99 * len(times))] * 1e3:.2f} ms, worst {times[-1] * 1e3:.1f} ms")
    worst_peak, worst_size = max(peaks)
    print(f"peak memory per input: median {_mib(statistics.median(p for p, _ in peaks))}, "
          f"worst {_mib(worst_peak)} (a {worst_size:,}-byte input)")


def bit_flip_figures(streams: list[tuple[str, bytes]]) -> None:
    print("\n## 2. Exhaustive single-bit flips")
    for label, data in streams:
        original = fingerprint(nu.decode_tensors(data))
        counts = collections.Counter()
        fixed_counts = collections.Counter()
        for _, flipped in single_bit_flips(data):
            outcome = run_decoder(flipped)
            counts["escaped" if not outcome.ours else "rejected" if outcome.error
                   else "identical" if outcome.tensors == original else "CHANGED"] += 1
            outcome = run_decoder(fix_crcs(flipped))
            fixed_counts["escaped" if not outcome.ours else "rejected" if outcome.error
                         else "identical" if outcome.tensors == original else "changed"] += 1
        total = 8 * len(data)
        print(f"{label} ({len(data)} bytes, {total:,} flips):")
        print(f"  original CRCs: {counts['rejected']:,} / {total:,} detected, {counts['identical']} decode "
              f"identically (version_minor), {counts['CHANGED']} silently changed, {counts['escaped']} escaped")
        print(f"  CRCs recomputed after the flip: {fixed_counts['rejected']:,} rejected, "
              f"{fixed_counts['identical']:,} identical, {fixed_counts['changed']:,} changed values, "
              f"{fixed_counts['escaped']} escaped")


def bomb_figures(streams: list[tuple[str, bytes]]) -> None:
    print("\n## 3. Size bombs (default limits)")
    tried, outcomes, worst_peak, worst_time, escaped = 0, collections.Counter(), 0, 0.0, 0
    fields_hit = set()
    tracemalloc.start()
    for _, data in streams:
        for field in field_map(data):
            if field.name not in SIZE_FIELDS:
                continue
            fields_hit.add(field.name)
            for value in BOMBS[field.kind]:
                mutated = bytearray(data)
                mutated[field.offset:field.offset + field.size] = value.to_bytes(field.size, "little")
                outcome = run_decoder(fix_crcs(bytes(mutated)), limits=DEFAULT_LIMITS, measure_memory=True)
                tried += 1
                outcomes[outcome.error or "decoded"] += 1
                escaped += not outcome.ours
                worst_peak = max(worst_peak, outcome.peak_bytes)
                worst_time = max(worst_time, outcome.seconds)
    tracemalloc.stop()
    print(f"{tried:,} bombs over {len(fields_hit)} size fields ({', '.join(sorted(fields_hit))})")
    print("outcomes: " + ", ".join(f"{k} {v:,}" for k, v in outcomes.most_common()) + f"; escaped {escaped}")
    print(f"worst peak memory {_mib(worst_peak)}, worst time {worst_time * 1e3:.1f} ms")


def word_figures() -> None:
    print("\n## 4. Surplus and missing words in a level plane (CRC recomputed)")
    rng = np.random.default_rng(5)
    results = collections.Counter()
    for _ in range(200):
        shape = (int(rng.integers(2, 60)), int(rng.integers(2, 60)))
        model = {"w": (rng.laplace(size=shape) * 0.05).astype(np.float32)}
        data = nu.encode(model, config=EncoderConfig(rules=(TensorRule("w", mode=CodingMode.DENSE),)))
        (field,) = [f for f in field_map(data) if f.element == "dense_levels.word_count"]
        count = int.from_bytes(data[field.offset:field.offset + 4], "little")
        offset, size = units(data)[1]
        words_end = field.offset + 4 + 4 * count
        for change in (1, 2, 3, -1):
            if count + change < 0:
                continue
            if change > 0:
                body = data[:words_end] + rng.bytes(4 * change) + data[words_end:]
            else:
                body = data[:words_end - 4] + data[words_end:]
            body = bytearray(body)
            body[offset + 2:offset + 6] = (size - 10 + 4 * change).to_bytes(4, "little")
            body[field.offset:field.offset + 4] = (count + change).to_bytes(4, "little")
            outcome = run_decoder(fix_crcs(bytes(body)))
            key = f"{change:+d} word{'s' if abs(change) > 1 else ''}"
            results[(key, "rejected" if outcome.error else "accepted")] += 1
    for key in ("+1 word", "+2 words", "+3 words", "-1 word"):
        rejected, accepted = results[(key, "rejected")], results[(key, "accepted")]
        print(f"  {key}: {rejected} / {rejected + accepted} rejected")


def output_bomb_figures() -> None:
    print("\n## 5. Decoder memory per declared output element (float16, 2**18 elements)")
    n = 1 << 18
    rng = np.random.default_rng(0)
    worst = (0.0, None)
    slowest = (0.0, None)
    tracemalloc.start()
    for shape, block, content in itertools.product([(1, n), (n, 1), (512, n // 512)],
                                                   [(1, 1), (4, 4), (255, 255), (255, 1), (1, 255)],
                                                   ["zero", "unified", "dense", "mixed"]):
        if content == "zero":
            levels = np.zeros(n, np.int64)
        elif content == "unified":
            levels = 3 * rng.choice([-1, 1], n)
        else:
            levels = rng.integers(-50, 50, n)
            if content == "mixed":
                levels[rng.random(n) < 0.5] = 0
        model = {"w": (levels * 2.0 ** -8).astype(np.float16).reshape(shape)}
        data = nu.encode(model, config=EncoderConfig(block=block, rules=(TensorRule("w", mode=CodingMode.UNIFIED),)))
        outcome = run_decoder(data, limits=DEFAULT_LIMITS, measure_memory=True)
        per_element = outcome.peak_bytes / n
        label = f"shape {shape}, block {block[0]}x{block[1]}, {content} ({len(data):,} bytes)"
        if per_element > worst[0]:
            worst = (per_element, label)
        if outcome.seconds / n > slowest[0]:
            slowest = (outcome.seconds / n, label)
    tracemalloc.stop()
    print(f"worst peak: {worst[0]:.1f} bytes per element ({worst[1]})")
    print(f"slowest: {slowest[0] * 1e9:.0f} ns per element ({slowest[1]})")
    zeros = nu.encode({"z": np.zeros((1 << 12, 1 << 12), np.float16)})
    print(f"a {len(zeros)}-byte stream declares {1 << 24:,} float16 zeros ({_mib(2 << 24)} of output): "
          "the limits, not the input size, bound such output (§8)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="mutated inputs (default 20000)")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--corpus", type=int, default=12, help="random models in the corpus (default 12)")
    args = parser.parse_args(argv)
    mutation_figures(args.seed, args.count, args.corpus)
    corpus = make_corpus(args.seed, 2, large_every=2, conformance=False)
    flips = [("small stream (tests/fuzzing.small_stream)", small_stream()),
             ("random model, no contexts", make_corpus(args.seed + 1, 1, large_every=0, conformance=False)[0].data)]
    bit_flip_figures(flips)
    bomb_figures([(name, data) for name, data in flips] + [(s.label, s.data) for s in corpus])
    word_figures()
    output_bomb_figures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
