#!/usr/bin/env python3
"""Print the decoder-robustness figures of tools/FUZZING.md.

    python tools/fuzz_figures.py --jobs 2         # about 10 minutes on 2 cores
    python tools/fuzz_figures.py --quick          # every section, small: under a minute
    python tools/fuzz_figures.py --section integrity --jobs 2   # one section
    python tools/fuzz_figures.py --count 200000   # more mutated inputs

1. seeded mutations of encoded random models (format 4.0, and 3.0/2.0 without digests) and
   ``conformance/`` streams when present, most with recomputed CRCs (half of those resealed):
   inputs tried, outcomes and exceptions by type (anything but a BitstreamError is a
   failure), decode time and peak memory per input;
2. single-bit flips, exhaustively, of three streams (two 4.0, one 3.0): detected out of total
   with the original CRCs, and what happens when the CRC is recomputed after the flip;
3. size bombs: every size field of four streams set to huge values, with the default limits;
4. words added to or removed from a level plane (CRC recomputed): the §6.9.4 end check alone
   (3.0 streams), and with the stream digest of 4.0;
5. the memory a small stream can make the decoder spend per declared output element;
6. integrity of format 4.0 (issue 12): over >= 100,000 edited 4.0 streams, each edit class
   (single-bit flips, unit swaps, drops and repetitions, a word appended to or dropped from
   each level plane) with the CRCs recomputed (``fix_crcs``: all must be detected) and
   resealed (``reseal``: STREAM_END rewritten as well, so only the content digests and the
   decoder's own checks remain; what they let through must decode to the original tensors).

Memory is what numpy and Python allocate, as tracemalloc sees it (constriction's own buffers,
a few words per plane, are not counted). Everything is seeded: the same command prints the
same counts (times vary with the machine).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
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
    random_model,
    reseal,
    run_decoder,
    single_bit_flips,
    small_stream,
    unit_edits,
    units,
    version_major,
    word_edits,
)

import nncodec_unify as nu  # noqa: E402
from nncodec_unify import CodingMode, EncoderConfig, TensorRule  # noqa: E402
from nncodec_unify.codec.format import ALIAS_MAJOR, DEFAULT_LIMITS, INTEGRITY_MAJOR  # noqa: E402
from nncodec_unify.codec.syntax import AttachedFile  # noqa: E402


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
    fixed = resealed = 0
    tracemalloc.start()
    start = time.perf_counter()
    for mutation in mutations(corpus, seed, count):
        outcome = run_decoder(mutation.data, measure_memory=True)
        fixed += mutation.crcs_fixed
        resealed += mutation.resealed
        for step in mutation.steps:
            by_mutator[step] += 1
        outcomes[outcome.error or "decoded"] += 1
        if not outcome.ours:
            foreign.append(outcome.message)
        times.append(outcome.seconds)
        peaks.append((outcome.peak_bytes, len(mutation.data)))
    elapsed = time.perf_counter() - start
    tracemalloc.stop()
    formats = collections.Counter(f"{version_major(s.data)}.x" for s in valid)
    print("valid streams by format: " + ", ".join(f"{k} {v}" for k, v in sorted(formats.items())))
    print(f"mutated inputs tried: {count:,} ({fixed:,} with CRCs recomputed, {resealed:,} of them resealed; "
          f"{count - fixed:,} with the original CRCs) in {elapsed:.0f} s")
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
        print(f"{label} ({len(data)} bytes, format {version_major(data)}.0, {total:,} flips):")
        print(f"  original CRCs: {counts['rejected']:,} / {total:,} detected, {counts['identical']} decode "
              f"identically (version_minor: no CRC covers it; in 4.0 the stream digest does), "
              f"{counts['CHANGED']} silently changed, {counts['escaped']} escaped")
        print(f"  CRCs recomputed after the flip: {fixed_counts['rejected']:,} rejected, "
              f"{fixed_counts['identical']:,} identical (flips of a CRC bit among them: recomputing the CRC "
              f"undoes them), {fixed_counts['changed']:,} changed values, {fixed_counts['escaped']} escaped")


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


def word_figures(models: int = 200) -> None:
    print("\n## 4. Surplus and missing words in a level plane (CRC recomputed)")
    for digests in (False, True):
        rng = np.random.default_rng(5)
        results = collections.Counter()
        for _ in range(models):
            shape = (int(rng.integers(2, 60)), int(rng.integers(2, 60)))
            model = {"w": (rng.laplace(size=shape) * 0.05).astype(np.float32)}
            data = nu.encode(model, config=EncoderConfig(rules=(TensorRule("w", mode=CodingMode.DENSE),),
                                                         digests=digests))
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
        what = ("format 4.0: the stream digest as well" if digests
                else f"format {version_major(data)}.0: the §6.9.4 end check alone")
        print(f"{what}:")
        for key in ("+1 word", "+2 words", "+3 words", "-1 word"):
            rejected, accepted = results[(key, "rejected")], results[(key, "accepted")]
            print(f"  {key}: {rejected} / {rejected + accepted} rejected")


def output_bomb_figures(quick: bool = False) -> None:
    print("\n## 5. Decoder memory per declared output element (float16, 2**18 elements)")
    n = 1 << 18
    rng = np.random.default_rng(0)
    worst = (0.0, None)
    slowest = (0.0, None)
    tracemalloc.start()
    shapes = [(1, n)] if quick else [(1, n), (n, 1), (512, n // 512)]
    blocks = [(4, 4), (255, 1)] if quick else [(1, 1), (4, 4), (255, 255), (255, 1), (1, 255)]
    for shape, block, content in itertools.product(shapes, blocks, ["zero", "unified", "dense", "mixed"]):
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


# ---------------------------------------------------------------------------------------------
# 6. integrity of format 4.0


CLASSES = {"flip": "single-bit flips", "swap": "unit swaps", "drop": "unit drops", "repeat": "unit repetitions",
           "append": "word appended to a plane", "word drop": "final word dropped"}
VARIANTS = ("CRCs recomputed", "resealed")


def _integrity_task(task: tuple) -> dict:
    """Decode every edit of one task, both variants; counts by (class, variant)."""
    kind, label, data, params = task
    original = run_decoder(data)
    assert original.error is None, (label, original.message)
    if kind == "flip":
        start, stop = params
        edits = (("flip", f"bit {bit}", flipped) for bit, flipped in single_bit_flips(data) if start <= bit < stop)
    elif kind == "units":
        edits = unit_edits(data)
    else:  # words
        edits = ((("append" if k == "append" else "word drop"), lab, edited)
                 for k, lab, edited in word_edits(data, np.random.default_rng(params)))
    stats: dict = {}
    for edit, edit_label, edited in edits:
        for variant, seal in zip(VARIANTS, (fix_crcs, reseal)):
            entry = stats.setdefault((edit, variant), {
                "inputs": 0, "no edit": 0, "detected": 0, "elements": collections.Counter(), "foreign": [],
                "identical": 0, "reordered": 0, "files": 0, "changed": collections.Counter(), "examples": {}})
            sealed = seal(edited)
            if sealed == data:  # a flip in a CRC or in STREAM_END, undone by recomputing it
                entry["no edit"] += 1
                continue
            entry["inputs"] += 1
            outcome = run_decoder(sealed)
            where = f"{label}: {edit_label}"
            if not outcome.ours:
                entry["foreign"].append(f"{where}: {outcome.message}")
            elif outcome.error:
                entry["detected"] += 1
                entry["elements"][outcome.element or "?"] += 1
            elif outcome.tensors == original.tensors and outcome.files == original.files:
                entry["identical"] += 1
            elif outcome.tensors == original.tensors:
                entry["files"] += 1  # the tensors are the encoder's; the attached files differ
            elif sorted(outcome.tensors) == sorted(original.tensors):
                entry["reordered"] += 1
            else:
                what, details = set(), []
                for new, old in itertools.zip_longest(outcome.tensors, original.tensors):
                    if new is None or old is None:
                        what.add("count")
                        continue
                    for index, field in ((0, "name"), (1, "dtype"), (3, "shape"), (4, "values")):
                        if new[index] != old[index]:
                            what.add(field)
                            details.append(f"{field} of {old[0]!r}" + (
                                f" {old[index]!r} -> {new[index]!r}" if index < 4 else "")
                                + (" (an empty tensor)" if not old[4] and index in (1, 3) else ""))
                key = "+".join(sorted(what))
                entry["changed"][key] += 1
                if len(entry["examples"].setdefault(key, [])) < 2:
                    entry["examples"][key].append(f"{where}: {'; '.join(details)}")
    return stats


def _merge(total: dict, part: dict) -> None:
    for key, entry in part.items():
        into = total.setdefault(key, {k: (type(v)() if not isinstance(v, int) else 0) for k, v in entry.items()})
        for name, value in entry.items():
            if name == "examples":
                for key, examples in value.items():
                    into[name][key] = (into[name].get(key, []) + examples)[:2]
            else:
                into[name] += value


def _attachments() -> list[AttachedFile]:
    return [AttachedFile("config.json", b'{"model_type": "fuzz"}'), AttachedFile("tokenizer/vocab.txt", b"a\nb\n")]


def _stream_with_files(model: dict, config: EncoderConfig) -> bytes:
    import io

    from nncodec_unify.codec.encoder import encode_to_file

    buffer = io.BytesIO()
    encode_to_file(model, buffer, config=config, attachments=_attachments())
    return buffer.getvalue()


def integrity_figures(seed: int, *, flip_streams: int, unit_streams: int, word_models: int, jobs: int) -> bool:
    """Section 6; returns False when an edit went undetected with its CRCs recomputed, or decoded
    to other tensors after resealing, or raised a foreign exception."""
    print("\n## 6. Integrity of formats 4.0 and 5.0: edits with the CRCs recomputed, and resealed")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    tasks: list[tuple] = []
    # single-bit flips, exhaustively, of small streams: tests' small stream and small random models
    flips = [("small stream", small_stream())]
    for index in range(flip_streams - 1):
        model, config = random_model(rng)
        if index == 0:  # tied weights: a format 5.0 stream (alias names, §5.2)
            model["fc.tied"] = model["fc.weight"]
        flips.append((f"flipped model {index}{' (5.0, tied)' if index == 0 else ''}", nu.encode(model, config=config)))
    for label, data in flips:
        for begin in range(0, 8 * len(data), 2048):
            tasks.append(("flip", label, data, (begin, begin + 2048)))
    # unit edits and word edits: random models (every 4th with contexts, every 3rd with two
    # attached files, every 4th from the 3rd on with tied weights: format 5.0), and for words
    # also single DENSE tensors of 2-59 x 2-59 (section 4's)
    unit_data = []
    for index in range(unit_streams):
        model, config = random_model(rng, large=index % 4 == 0)
        if index % 4 == 2:
            model["fc.tied"] = model["embed.tied"] = model["fc.weight"]
        data = _stream_with_files(model, config) if index % 3 == 1 else nu.encode(model, config=config)
        notes = ", ".join(note for note, present in (("with files", index % 3 == 1), ("5.0, tied", index % 4 == 2))
                          if present)
        unit_data.append((f"edited model {index}" + (f" ({notes})" if notes else ""), data))
        tasks.append(("units", unit_data[-1][0], data, None))
        tasks.append(("words", unit_data[-1][0], data, seed + index))
    word_rng = np.random.default_rng(5)
    for index in range(word_models):
        shape = (int(word_rng.integers(2, 60)), int(word_rng.integers(2, 60)))
        model = {"w": (word_rng.laplace(size=shape) * 0.05).astype(np.float32)}
        data = nu.encode(model, config=EncoderConfig(rules=(TensorRule("w", mode=CodingMode.DENSE),)))
        tasks.append(("words", f"dense {shape[0]}x{shape[1]}", data, seed + 1000 + index))
    assert all(version_major(t[2]) in (INTEGRITY_MAJOR, ALIAS_MAJOR) for t in tasks)
    sizes = [len(d) for _, d in flips]
    unit_counts = [len(units(d)) for _, d in unit_data]
    tied = sum(1 for _, d in flips + unit_data if version_major(d) == ALIAS_MAJOR)
    print(f"streams (format 4.0; {tied} of them 5.0, with tied weights): bit flips of {len(flips)} ({min(sizes):,}-{max(sizes):,} bytes, "
          f"{8 * sum(sizes):,} flips); unit edits of {len(unit_data)} ({min(unit_counts)}-{max(unit_counts)} "
          f"units, {sum(1 for label, _ in unit_data if 'files' in label)} with 2 attached files); word edits "
          f"of every level plane of those and of {word_models} single DENSE tensors")
    stats: dict = {}
    tasks.sort(key=lambda t: -len(t[2]) * (8 if t[0] == "units" else 1))  # the longest first
    if jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
            for part in pool.map(_integrity_task, tasks):
                _merge(stats, part)
    else:
        for task in tasks:
            _merge(stats, _integrity_task(task))
    elapsed = time.perf_counter() - start
    total = sum(e["inputs"] for e in stats.values())
    print(f"edited inputs decoded: {total:,} in {elapsed:.0f} s ({jobs} job{'s' if jobs > 1 else ''}); "
          f"not counted: {sum(e['no edit'] for e in stats.values()):,} flips of a CRC bit (or, resealed, "
          "of STREAM_END) that recomputing undoes")
    header = (f"{'edit':<26} {'CRCs':<16} {'inputs':>8} {'detected':>8} {'%':>7} {'identical':>9} "
              f"{'reordered':>9} {'files':>5} {'CHANGED':>7} {'foreign':>7}")
    print(header)
    print("-" * len(header))
    for variant in VARIANTS:
        for edit, name in CLASSES.items():
            entry = stats.get((edit, variant))
            if not entry or not entry["inputs"]:
                continue
            changed = sum(entry["changed"].values())
            print(f"{name:<26} {variant:<16} {entry['inputs']:>8,} {entry['detected']:>8,} "
                  f"{100 * entry['detected'] / entry['inputs']:>6.2f}% {entry['identical']:>9,} "
                  f"{entry['reordered']:>9,} {entry['files']:>5,} {changed:>7,} {len(entry['foreign']):>7}")
    print("detected, by error element:")
    for variant in VARIANTS:
        for edit, name in CLASSES.items():
            entry = stats.get((edit, variant))
            if entry and entry["elements"]:
                top = entry["elements"].most_common()
                rest = sum(v for _, v in top[12:])
                print(f"  {name}, {variant}: " + ", ".join(f"{k} {v:,}" for k, v in top[:12])
                      + (f", {len(top) - 12} other elements {rest:,}" if rest else ""))
    foreign = [m for e in stats.values() for m in e["foreign"]]
    print(f"exceptions other than BitstreamError: {len(foreign)}" + (f" (first: {foreign[0]})" if foreign else ""))
    ok = not foreign
    for (edit, variant), entry in sorted(stats.items()):
        undetected = entry["inputs"] - entry["detected"] - len(entry["foreign"])
        if variant == VARIANTS[0] and undetected:
            ok = False
            print(f"!! FAILURE: {undetected} {CLASSES[edit]} with the CRCs recomputed were not detected")
        # A resealing writer recomputes the model digest, the only binding of names, dtypes and
        # shapes (the content digest hashes the canonical bytes, as conformance does, §7.4): a
        # changed name, or the shape or dtype of an empty tensor, is then within its reach and
        # is reported, not failed. Changed values, or a tensor lost or gained, are failures.
        failing = {k: v for k, v in entry["changed"].items()
                   if variant == VARIANTS[0] or "values" in k or "count" in k}
        if failing:
            ok = False
            print(f"!! FAILURE: {sum(failing.values())} {CLASSES[edit]} ({variant}) decoded to other "
                  "tensors; what differs: " + ", ".join(f"{k} {v}" for k, v in sorted(failing.items())))
            for key in failing:
                for example in entry["examples"].get(key, []):
                    print(f"     {example}")
        elif entry["changed"]:
            print(f"note: {sum(entry['changed'].values())} {CLASSES[edit]} ({variant}) decoded to the same values "
                  "under other metadata, which a writer who recomputes the model digest can forge: "
                  + ", ".join(f"{k} {v}" for k, v in entry["changed"].most_common()))
    reordered = sum(e["reordered"] for (_, v), e in stats.items() if v == VARIANTS[1])
    files = sum(e["files"] for (_, v), e in stats.items() if v == VARIANTS[1])
    if reordered or files:
        print(f"resealed: {reordered:,} decoded to the same tensors in another order, {files:,} to the same "
              "tensors with other attached files: a writer who recomputes the model and stream digests can "
              "reorder tensor units and drop, repeat or move attached files (§7.4: digests guard against "
              "accident, not forgery)")
    crcs = [e for (_, v), e in stats.items() if v == VARIANTS[0]]
    print(f"issue 12 target, every edit with the CRCs recomputed detected ({sum(e['inputs'] for e in crcs):,} "
          "inputs) and 0 foreign exceptions: " + ("met" if not foreign and all(
              e["detected"] == e["inputs"] for e in crcs) else "NOT MET"))
    changed = sum(sum(e["changed"].values()) for e in stats.values())
    values = sum(v for e in stats.values() for k, v in e["changed"].items() if "values" in k)
    print(f"resealed edits that decoded to other tensors: {changed:,} (names, or the dtype/shape of empty "
          f"tensors, which only the model digest binds); to other values (what the content digests cover): "
          f"{values:,}" + (" (!! see the FAILURE lines)" if values else ""))
    return ok


SECTIONS = ("mutations", "flips", "bombs", "words", "memory", "integrity")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=None, help="mutated inputs (default 20000; --quick 2000)")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--corpus", type=int, default=12, help="random models in the corpus (default 12)")
    parser.add_argument("--quick", action="store_true",
                        help="a small run of every section (the integrity one over ~10,000 inputs)")
    parser.add_argument("--jobs", type=int, default=1, help="processes for the integrity section (default 1)")
    parser.add_argument("--section", action="append", choices=SECTIONS,
                        help="run only this section (repeatable; default all)")
    parser.add_argument("--flip-streams", type=int, default=None,
                        help="integrity: streams whose every bit is flipped (default 7; --quick 1)")
    parser.add_argument("--unit-streams", type=int, default=None,
                        help="integrity: streams whose units are edited (default 40; --quick 4)")
    args = parser.parse_args(argv)
    sections = set(args.section or SECTIONS)
    count = args.count if args.count is not None else 2000 if args.quick else 20000
    ok = True
    if "mutations" in sections:
        mutation_figures(args.seed, count, args.corpus)
    corpus = make_corpus(args.seed, 2, large_every=2, conformance=False, old_every=0)
    flips = [("small stream (tests/fuzzing.small_stream)", small_stream()),
             ("small stream without digests", small_stream(digests=False)),
             ("random model, no contexts",
              make_corpus(args.seed + 1, 1, large_every=0, conformance=False)[0].data)]
    if "flips" in sections:
        bit_flip_figures(flips[:2] if args.quick else flips)
    if "bombs" in sections:
        bomb_figures([(name, data) for name, data in flips] + [(s.label, s.data) for s in corpus])
    if "words" in sections:
        word_figures(20 if args.quick else 200)
    if "memory" in sections:
        output_bomb_figures(args.quick)
    if "integrity" in sections:
        ok = integrity_figures(args.seed, jobs=args.jobs,
                               flip_streams=args.flip_streams or (1 if args.quick else 7),
                               unit_streams=args.unit_streams or (4 if args.quick else 40),
                               word_models=20 if args.quick else 200)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
