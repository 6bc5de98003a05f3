"""The decoder's promises under any input (issue 5), checked by seeded mutation fuzzing.

1. only BitstreamError escapes;  2. bounded time;  3. nothing allocated from an unchecked size;
4. a change with the original CRCs is rejected or decodes identically;  5. exact consumption;
6. no code runs and nothing is opened because of the input.

Most mutations recompute the unit CRCs (``fuzzing.fix_crcs``) so that they reach the parser,
the range decoder and the reconstruction; the tests check that they do. Half of those are
resealed (``fuzzing.reseal``: a format 4.0 stream's STREAM_END rewritten too), so that they
also reach the content digests and the end of the stream. The corpus mixes 4.0 streams with
3.0 and 2.0 ones (written without digests). ``tools/fuzz_mutations.py``
runs the same mutators for as long as you like; ``tools/fuzz_figures.py`` prints the figures.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from fuzzing import (
    BOMBS,
    FOREIGN,
    MUTATORS,
    REORDERING,
    SIZE_FIELDS,
    Field,
    field_map,
    fingerprint,
    fix_crcs,
    make_corpus,
    mutations,
    reseal,
    run_decoder,
    same_or_rejected,
    single_bit_flips,
    small_stream,
    unit_edits,
    units,
    version_major,
)
from hypothesis import given
from hypothesis import strategies as st

import nncodec_unify as nu
from nncodec_unify import BitstreamError, CodingMode, EncoderConfig, Limits, TensorRule
from nncodec_unify.codec.bitio import ByteWriter
from nncodec_unify.codec.decoder import describe
from nncodec_unify.codec.format import DEFAULT_LIMITS, DIGEST_SIZE, INTEGRITY_MAJOR, MAGIC, DType, UnitType
from nncodec_unify.codec.syntax import (
    ModelHeader,
    TensorHeader,
    write_file_header,
    write_model_header,
    write_tensor_header,
    write_unit,
)

SEED = 20240501


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(SEED, 10)


@pytest.fixture(scope="module")
def expected(corpus):
    return {s.label: run_decoder(s.data).tensors for s in corpus if s.valid}


def _failures(outcomes) -> str:
    return "\n".join(f"{label}: {o.message}" for label, o in outcomes[:10])


# ---------------------------------------------------------------------------------------------
# invariants 1 and 4 under seeded mutation


def test_corpus_covers_every_size_field_and_mode(corpus):
    # format 4.0 and (tied weights) 5.0 streams and, without digests, 3.0 and 2.0 ones
    assert {version_major(s.data) for s in corpus if s.label.startswith("random model")} == {2, 3, 4, 5}
    names = {f.name for s in corpus for f in s.fields}
    assert SIZE_FIELDS <= names, SIZE_FIELDS - names
    elements = {f.element for s in corpus for f in s.fields}
    # row/column contexts, escape symbols and all three planes of a UNIFIED payload are present
    for needed in ("dense_levels.row_class_table.alphabet_size", "dense_levels.col_class_count",
                   "block_map.value_count", "unified_magnitudes.word_count", "unified_signs.sign_bits",
                   "dense_levels.raw_bits", "raw_data", "content_digest", "stream_digest", "alias_name"):
        assert any(e.endswith(needed) for e in elements), needed


def test_mutations_raise_only_bitstream_errors(corpus):
    """Invariant 1 on 6000 mutations, most with recomputed CRCs; and proof that they get deep."""
    escaped, errors_at = [], collections.Counter()
    outcomes = collections.Counter()
    for mutation in mutations(corpus, SEED, 6000):
        outcome = run_decoder(mutation.data)
        outcomes[outcome.error or "ok"] += 1
        if not outcome.ours:
            escaped.append((f"{mutation.sample.label} {mutation.mutator}", outcome))
        elif mutation.crcs_fixed and outcome.error:
            errors_at[outcome.message.split(" ", 1)[0].split("[")[0]] += 1
    assert not escaped, _failures(escaped)
    # The recomputed CRCs let mutations through to the coded data: errors are met deep inside
    # level planes, and some mutated streams decode.
    deep = [e for e in errors_at if e.startswith(("dense_levels.", "block_map.", "unified_magnitudes."))]
    assert len(deep) >= 8, errors_at
    # ... and in format 4.0 to the content digests (resealed or not) and the STREAM_END checks
    assert errors_at["content_digest"] >= 5, errors_at
    assert errors_at["model_digest"] + errors_at["stream_digest"] + errors_at["unit_count"] >= 1, errors_at
    assert outcomes["ok"] >= 200 and outcomes["ChecksumError"] < 3000, outcomes


def test_every_conformance_stream_under_every_mutator(corpus, expected):
    """Each conformance stream, valid and invalid, gets every mutator twice: once with the CRCs
    recomputed (invariant 1), once without (invariant 1, and 4 for the valid ones)."""
    streams = [s for s in corpus if s.label.startswith("conformance/")]
    assert len(streams) >= 150, "the conformance suite (74 valid + 164 invalid streams) went missing"
    escaped, broken = [], []
    for index, sample in enumerate(streams):
        rng = np.random.default_rng([SEED, index])
        other = streams[(index + 1) % len(streams)].data
        for name, mutator in sorted(MUTATORS.items()):
            mutated = mutator(rng, sample.data, sample, other)
            for data, fixed in ((fix_crcs(mutated), True), (mutated, False)):
                outcome = run_decoder(data)
                label = f"{sample.label} {name} crcs {'fixed' if fixed else 'kept'}"
                if not outcome.ours:
                    escaped.append((label, outcome))
                elif (sample.valid and not fixed and name not in FOREIGN | REORDERING
                      and not same_or_rejected(outcome, expected[sample.label])):
                    broken.append((label, outcome))
    assert not escaped, _failures(escaped)
    assert not broken, _failures(broken)


def test_describe_raises_only_bitstream_errors(corpus):
    escaped = []
    for mutation in mutations(corpus, SEED + 1, 800):
        outcome = run_decoder(mutation.data, function=describe)
        if not outcome.ours:
            escaped.append((mutation.mutator, outcome))
    assert not escaped, _failures(escaped)


def test_changes_under_the_original_crcs_are_rejected_or_harmless(corpus, expected):
    """Invariant 4 on 3000 mutations whose CRCs were left as they were."""
    broken = []
    for mutation in mutations(corpus, SEED + 2, 3000, fix_probability=0.0):
        if not mutation.sample.valid or mutation.steps & FOREIGN:
            continue
        outcome = run_decoder(mutation.data)
        assert outcome.ours, outcome.message
        original = expected[mutation.sample.label]
        if mutation.steps & REORDERING and outcome.error is None:
            # whole units moved with their CRCs: only a reordering of the same tensors can pass,
            # and only in a 2.x/3.x stream (4.0: STREAM_END binds the units' order and number)
            assert sorted(outcome.tensors) == sorted(original)
            assert version_major(mutation.sample.data) < INTEGRITY_MAJOR or outcome.tensors == original, (
                f"{mutation.sample.label} {mutation.mutator}")
        elif not same_or_rejected(outcome, original):
            broken.append((f"{mutation.sample.label} {mutation.mutator}", outcome))
    assert not broken, _failures(broken)


def _accepted_flips(data: bytes, *, fix: bool = False) -> list[int]:
    """The bits of ``data`` whose flip alone (CRCs recomputed after it if ``fix``) decodes; each
    must decode to the original tensors."""
    original = fingerprint(nu.decode_tensors(data))
    accepted = []
    for bit, flipped in single_bit_flips(data):
        if fix:
            flipped = fix_crcs(flipped)
            if flipped == data:  # a flip in a CRC, undone by recomputing it: no edit
                continue
        outcome = run_decoder(flipped)
        assert outcome.ours, (bit, outcome.message)
        if outcome.error is None:
            assert outcome.tensors == original, bit
            accepted.append(bit)
    return accepted


def test_every_single_bit_flip_is_detected():
    """Invariant 4, exhaustively: each of a 4.0 stream's bits flipped alone is detected, even
    version_minor's (any minor version is read, §4.1, but the stream digest covers the file
    header, §5.8)."""
    assert _accepted_flips(small_stream()) == []


def test_every_single_bit_flip_with_fixed_crcs_is_detected_in_format_4():
    """With the CRCs recomputed after the flip (a buggy encoder, or a careless hostile one),
    the stream digest still detects every flip of a 4.0 stream."""
    assert _accepted_flips(small_stream(), fix=True) == []


def test_every_single_bit_flip_of_a_3_0_stream_is_detected_but_version_minor():
    """Format 3.0 (no digests): the only flips that decode are those of version_minor, which
    has no CRC (any minor version is read, §4.1), and they decode identically."""
    data = small_stream(digests=False)
    assert version_major(data) == 3
    accepted = _accepted_flips(data)
    assert {bit // 8 for bit in accepted} == {len(MAGIC) + 1}  # version_minor's byte, all 8 of its bits
    assert len(accepted) == 8


def test_every_single_bit_flip_with_fixed_crcs_raises_only_ours():
    """Invariant 1 when a flip is 'blessed' by recomputing the CRC, or by resealing the whole
    stream (a buggy or hostile encoder), in formats 4.0 and 3.0. Resealed, a 4.0 flip is
    rejected (by the content digest, if nothing else) or changes only what the content digest
    does not cover: the tensor's name, dtype or shape, never its canonical bytes."""
    escaped, changed = [], []
    for data in (small_stream(), small_stream(digests=False)):
        original = fingerprint(nu.decode_tensors(data))
        for bit, flipped in single_bit_flips(data):
            for edited in (fix_crcs(flipped), reseal(flipped)):
                outcome = run_decoder(edited)
                if not outcome.ours:
                    escaped.append((f"bit {bit}", outcome))
            if version_major(data) >= INTEGRITY_MAJOR and outcome.error is None:  # resealed, decoded
                # the canonical bytes (fingerprint()[4]) of every tensor are the encoder's
                if [t[4] for t in outcome.tensors] != [t[4] for t in original]:
                    changed.append(f"bit {bit}")
    assert not escaped, _failures(escaped)
    assert not changed, changed[:10]


def test_units_swapped_dropped_or_repeated_are_detected_in_format_4():
    """Format 4.0 binds the units' order and number (§5.8): every swap, drop and repetition of
    whole units (their CRCs valid) is rejected. In 3.0 a swap of two tensor units decodes, to
    the same tensors in another order (the gap 4.0 closes)."""
    data = small_stream()
    end_offset, _ = units(data)[-1]
    data = reseal(data[:end_offset] + _ancillary_unit() + data[end_offset:])  # a unit to skip, too
    elements = collections.Counter()
    for _, label, edited in unit_edits(data):
        with pytest.raises(BitstreamError) as info:
            nu.decode(edited)
        elements[info.value.element] += 1
    # tensors swapped: the model digest; the ancillary unit lost or repeated: the unit count;
    # moved: the stream digest (the rest is found before STREAM_END: tensor_count, name, ...)
    assert elements["model_digest"] and elements["unit_count"] and elements["stream_digest"], elements
    old = small_stream(digests=False)
    original = fingerprint(nu.decode_tensors(old))
    swapped = [label for kind, label, edited in unit_edits(old) if kind == "swap"
               and run_decoder(edited).tensors not in (None, original)]
    assert swapped == ["swap 1 2", "swap 1 3", "swap 2 3"]


# ---------------------------------------------------------------------------------------------
# invariants 2 and 3: size bombs, limits, memory


def _set_field(data: bytes, field: Field, value: int) -> bytes:
    out = bytearray(data)
    out[field.offset:field.offset + field.size] = value.to_bytes(field.size, "little")
    return fix_crcs(bytes(out))


def _bomb_targets(corpus) -> list[tuple[bytes, Field]]:
    """Every size field of the small stream; in two corpus streams (one with contexts), the
    first field of each kind (``magnitude_table[7].alphabet_size`` is like ``[0]``'s)."""
    small = small_stream()
    targets = [(small, f) for f in field_map(small) if f.name in SIZE_FIELDS]
    for sample in corpus[:2]:
        kinds = set()
        for field in sample.fields:
            kind = re.sub(r"\[\d+\]", "", field.element)
            if field.name in SIZE_FIELDS and kind not in kinds:
                kinds.add(kind)
                targets.append((sample.data, field))
    return targets


def test_size_bombs_are_rejected_without_allocating(corpus):
    """Size fields set to huge values (CRCs recomputed), decoded with the default limits: each
    is rejected, or decodes, within 2 s and a small fixed memory budget."""
    targets = _bomb_targets(corpus)
    tracemalloc.start()
    try:
        baseline = max(run_decoder(data, limits=DEFAULT_LIMITS, measure_memory=True).peak_bytes
                       for data in {data for data, _ in targets})
        seen, slow, greedy, escaped = set(), [], [], []
        for data, field in targets:
            seen.add(field.name)
            for value in BOMBS[field.kind]:
                outcome = run_decoder(_set_field(data, field, value), limits=DEFAULT_LIMITS, measure_memory=True)
                label = f"{field.element}={value:#x}"
                if not outcome.ours:
                    escaped.append((label, outcome))
                if outcome.seconds > 2.0:
                    slow.append((label, outcome))
                if outcome.peak_bytes > baseline + (1 << 20):
                    greedy.append((f"{label} peak {outcome.peak_bytes}", outcome))
    finally:
        tracemalloc.stop()
    assert seen == SIZE_FIELDS
    assert not escaped, _failures(escaped)
    assert not slow, _failures(slow)
    assert not greedy, _failures(greedy)


def _file_header() -> bytes:
    writer = ByteWriter()
    write_file_header(writer)
    return writer.getvalue()


_FILE_HEADER = _file_header()


def _stream_of(*payloads: tuple[int, bytes]) -> bytes:
    writer = ByteWriter()
    write_file_header(writer)
    for unit_type, payload in payloads:
        write_unit(writer, unit_type, payload)
    return writer.getvalue()


def _model_header(count: int) -> bytes:
    writer = ByteWriter()
    write_model_header(writer, ModelHeader(count))
    return writer.getvalue()


def _tensor_header(shape: tuple[int, ...], mode: CodingMode = CodingMode.DENSE, dtype=DType.FLOAT32) -> bytes:
    writer = ByteWriter()  # write_file_header writes format 4.0: the header ends with a content digest
    write_tensor_header(writer, TensorHeader("t", dtype, shape, mode, bytes(DIGEST_SIZE)))
    return writer.getvalue()


@pytest.mark.parametrize("shape", [(1 << 20, 1 << 20), (0xFFFFFFFF,) * 8, (1 << 16, 1 << 16, 2)])
@pytest.mark.parametrize("mode", [CodingMode.RAW, CodingMode.DENSE, CodingMode.UNIFIED])
def test_a_header_declaring_2_to_the_40_elements_is_rejected_at_once(shape, mode):
    data = _stream_of((UnitType.MODEL_HEADER, _model_header(1)), (UnitType.TENSOR, _tensor_header(shape, mode)))
    tracemalloc.start()
    try:
        outcome = run_decoder(data, limits=DEFAULT_LIMITS, measure_memory=True)
    finally:
        tracemalloc.stop()
    assert outcome.error == "LimitExceededError" and "dims" in outcome.message
    assert outcome.peak_bytes < 64 << 10 and outcome.seconds < 0.1


def test_tightened_limits_are_checked_before_decoding(corpus):
    """A device integrator's limits: a stream over them is refused before its planes are read."""
    data = corpus[0].data
    outputs = sum(t.array.nbytes for t in nu.decode_tensors(data).tensors)
    for limits in (Limits(max_total_output_bytes=64), Limits(max_elements_per_tensor=16), Limits(max_ndim=1),
                   Limits(max_name_length=4), Limits(max_tensor_count=3), Limits(max_alphabet_size=2)):
        with pytest.raises(nu.LimitExceededError):
            nu.decode(data, limits=limits)
    assert nu.decode(data, limits=Limits(max_total_output_bytes=outputs))  # bfloat16-free: stored = output


@pytest.mark.parametrize("block", [(255, 1), (1, 255), (255, 255)])
@pytest.mark.parametrize("shape", [(1, 1 << 15), (1 << 15, 1)])
def test_blocks_larger_than_the_matrix_cost_no_extra_memory(block, shape):
    """Regression: expand_blocks allocated block_rows x cols elements (577x the output)."""
    rng = np.random.default_rng(1)
    levels = rng.integers(-3, 4, size=shape[0] * shape[1])
    levels[: levels.size // 2] = 0
    data = nu.encode({"w": (levels * 2.0 ** -8).astype(np.float32).reshape(shape)},
                     config=EncoderConfig(block=block))
    tracemalloc.start()
    try:
        outcome = run_decoder(data, limits=DEFAULT_LIMITS, measure_memory=True)
    finally:
        tracemalloc.stop()
    assert outcome.error is None
    assert outcome.peak_bytes < 40 * levels.size  # about 4-8 bytes per element are needed


def test_decoding_time_is_linear_in_the_declared_output():
    """A ~110-byte-per-tensor stream declaring 2**22 zeros decodes at the speed of the output."""
    data = nu.encode({f"z{i}": np.zeros((1 << 11, 1 << 11), np.float32) for i in range(4)})
    # format 4.0: about 80 bytes per tensor as in 3.0, plus its 32-byte content digest, plus
    # the 78-byte STREAM_END unit (520 bytes in all)
    assert len(data) < 600
    outcome = run_decoder(data, limits=DEFAULT_LIMITS)
    assert outcome.error is None and outcome.seconds < 2.0


# ---------------------------------------------------------------------------------------------
# invariant 5: exact consumption


def test_trailing_bytes_are_rejected():
    data = small_stream()
    rng = np.random.default_rng(SEED)
    last_offset, last_size = units(data)[-1]
    for tail in [b"\x00", b"\x00" * 5, b"\xff" * 10, rng.bytes(3), rng.bytes(64), data[last_offset:]]:
        with pytest.raises(BitstreamError):
            nu.decode(data + tail)


def _ancillary_unit() -> bytes:
    writer = ByteWriter()
    write_unit(writer, 200, b"future metadata", ancillary=True)
    return writer.getvalue()


def test_a_trailing_ancillary_unit_is_skipped_and_changes_nothing():
    """The one legitimate addition (§4.3): an unknown ancillary unit after the last tensor. In
    format 4.0 it comes before STREAM_END, which then counts and hashes it (the writer reseals
    the stream); after STREAM_END nothing may follow, and an unsealed insertion is detected."""
    for data in (small_stream(), small_stream(digests=False)):
        original = fingerprint(nu.decode_tensors(data))
        if version_major(data) < INTEGRITY_MAJOR:  # 3.0: appended after the last tensor unit
            assert fingerprint(nu.decode_tensors(data + _ancillary_unit())) == original
            continue
        end_offset, _ = units(data)[-1]
        assert data[end_offset] == UnitType.STREAM_END
        inserted = data[:end_offset] + _ancillary_unit() + data[end_offset:]
        assert fingerprint(nu.decode_tensors(reseal(inserted))) == original
        with pytest.raises(BitstreamError) as info:  # not resealed: the unit count differs
            nu.decode(inserted)
        assert info.value.element == "unit_count"
        with pytest.raises(BitstreamError) as info:  # after STREAM_END, resealed or not
            nu.decode(reseal(data + _ancillary_unit()))
        assert info.value.element == "stream_end"


def _grow_unit(data: bytes, unit_index: int, at: int, insert: bytes) -> bytes:
    """Insert bytes at absolute offset ``at`` inside unit ``unit_index``, fixing its length."""
    offset, size = units(data)[unit_index]
    out = bytearray(data[:at] + insert + data[at:])
    length = size - 10 + len(insert)
    out[offset + 2:offset + 6] = length.to_bytes(4, "little")
    return fix_crcs(bytes(out))


def test_surplus_bytes_inside_a_unit_are_rejected():
    data = small_stream()
    for index, (offset, size) in enumerate(units(data)):
        payload_end = offset + size - 4
        for extra in (b"\x00", b"\x00\x00\x00\x00", b"\x01\x02\x03"):
            with pytest.raises(BitstreamError):
                nu.decode(_grow_unit(data, index, payload_end, extra))


def _word_fields(data: bytes) -> list[Field]:
    from fuzzing import field_map

    return [f for f in field_map(data) if f.element.endswith(".word_count")]


def test_surplus_words_and_a_point_far_above_lower_are_rejected():
    """§6.9.4 end check: every word must be read, and the point must end within 2**33 - 1
    above ``lower``; a missing word reads as zero, so it may decode (§6.9.1)."""
    model = {"w": np.random.default_rng(3).normal(size=(40, 50)).astype(np.float32)}
    data = nu.encode(model, config=EncoderConfig(rules=(TensorRule("w", mode=CodingMode.DENSE),)))
    (field,) = [f for f in _word_fields(data) if f.element.startswith("dense_levels")]
    count = int.from_bytes(data[field.offset:field.offset + 4], "little")
    words_at = field.offset + 4
    tensor_unit = 1
    # the decoder reads at most one word past the end, so two surplus words are never read
    for extra in (b"\x00" * 8, b"\xff" * 8, b"\x12\x34\x56\x78" * 3):
        grown = bytearray(_grow_unit(data, tensor_unit, words_at + 4 * count, extra))
        grown[field.offset:field.offset + 4] = (count + len(extra) // 4).to_bytes(4, "little")
        with pytest.raises(BitstreamError, match="word_count"):
            nu.decode(fix_crcs(bytes(grown)))
    # the final word is the encoder's point word: raising it by 3 puts the point 3 * 2**32
    # above where the encoder left it, beyond 2**33 - 1 above lower (this stream decodes the
    # same symbols up to the end)
    last = words_at + 4 * (count - 1)
    raised = bytearray(data)
    raised[last:last + 4] = ((int.from_bytes(data[last:last + 4], "little") + 3) % 2**32).to_bytes(4, "little")
    with pytest.raises(BitstreamError, match="word_count"):
        nu.decode(fix_crcs(bytes(raised)))
    # one word fewer: the missing word reads as zero, so the end check may pass; in format
    # 4.0 the stream digest detects it (§6.9.4), and resealed, the stream is rejected or
    # decodes to the same tensor (the content digest, §7.4)
    offset, size = units(data)[tensor_unit]
    shrunk = bytearray(data[:words_at + 4 * (count - 1)] + data[words_at + 4 * count:])
    shrunk[offset + 2:offset + 6] = (size - 14).to_bytes(4, "little")
    shrunk[field.offset:field.offset + 4] = (count - 1).to_bytes(4, "little")
    with pytest.raises(BitstreamError):
        nu.decode(fix_crcs(bytes(shrunk)))
    original = nu.decode(data)["w"]
    try:
        assert nu.decode(reseal(bytes(shrunk)))["w"].tobytes() == original.tobytes()
    except BitstreamError:
        pass


# ---------------------------------------------------------------------------------------------
# invariant 6: no code runs, nothing is opened


_FORBIDDEN_EVENTS = {"open", "exec", "compile", "import", "pickle.find_class", "marshal.loads", "builtins.input",
                     "code.__new__", "ctypes.dlopen"}
_FORBIDDEN_PREFIXES = ("os.", "subprocess.", "socket.", "shutil.", "tempfile.", "urllib.", "http.", "glob.")
_audit = {"active": False, "events": []}


def _audit_hook(event: str, args) -> None:
    if _audit["active"] and (event in _FORBIDDEN_EVENTS or event.startswith(_FORBIDDEN_PREFIXES)):
        _audit["events"].append((event, repr(args)[:120]))


def test_decoding_opens_nothing_and_runs_nothing(corpus):
    """Audit hooks see every open, import, exec and unpickling: none happens while decoding
    valid, mutated or path-like-named streams."""
    hostile = nu.encode({"../../etc/passwd": np.ones(2, np.float32), "/tmp/x; rm -rf /": np.ones(1, np.float32),
                         "__import__('os').system('id')": np.ones(1, np.float32)})
    inputs = [hostile] + [m.data for m in mutations(corpus, SEED + 3, 600)]
    run_decoder(corpus[0].data)  # warm up: lazy imports of numpy and the package happen now
    if _audit_hook not in getattr(sys, "_nncodec_audit_hooks", ()):
        sys.addaudithook(_audit_hook)  # audit hooks cannot be removed: install once per process
        sys._nncodec_audit_hooks = (_audit_hook,)
    _audit["events"].clear()
    _audit["active"] = True
    try:
        for data in inputs:
            run_decoder(data)
            run_decoder(data, function=describe)
    finally:
        _audit["active"] = False
    assert not _audit["events"], _audit["events"][:5]
    assert set(nu.decode(hostile)) == {"../../etc/passwd", "/tmp/x; rm -rf /", "__import__('os').system('id')"}


# ---------------------------------------------------------------------------------------------
# hypothesis: arbitrary bytes, and arbitrary units with valid CRCs


@given(st.binary(max_size=512))
def test_arbitrary_bytes(data):
    assert run_decoder(data).ours
    assert run_decoder(_FILE_HEADER + data).ours


def _unit(unit_type: int, flags: int, payload: bytes) -> bytes:
    header = bytes((unit_type, flags)) + len(payload).to_bytes(4, "little")
    return header + payload + zlib.crc32(header + payload).to_bytes(4, "little")


_units = st.tuples(st.sampled_from([1, 2, 2, 2, 0, 3, 4, 255]), st.sampled_from([0, 0, 0, 1, 2]),
                   st.binary(max_size=96))


@given(st.binary(min_size=4, max_size=4), st.lists(_units, max_size=4))
def test_arbitrary_units_with_valid_crcs(count, parts):
    """Random payloads behind valid framing reach the model and tensor header parsers."""
    data = _FILE_HEADER + _unit(1, 0, count) + b"".join(_unit(*p) for p in parts)
    outcome = run_decoder(data)
    assert outcome.ours, outcome.message


_SMALL_STREAMS = (small_stream(), small_stream(digests=False))


@given(st.data())
def test_arbitrary_edits_of_a_valid_stream(data):
    """Hypothesis picks positions and values (and shrinks a failure to the fewest edits), in
    a 4.0 or a 3.0 stream, then fixes the CRCs or reseals the stream."""
    stream = bytearray(data.draw(st.sampled_from(_SMALL_STREAMS)))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(stream) - 1))
        stream[at] = data.draw(st.integers(0, 255))
    outcome = run_decoder(data.draw(st.sampled_from([fix_crcs, reseal]))(bytes(stream)))
    assert outcome.ours, outcome.message


# ---------------------------------------------------------------------------------------------
# regressions found by fuzzing


def test_reconstruction_does_not_depend_on_the_callers_floating_point_state():
    """Regression: float16 underflow raised FloatingPointError under np.seterr(all='raise')."""
    model = {"tiny": np.array([[2.0 ** -26, 0.0]], np.float32), "huge": np.array([[70000.0, 1.0]], np.float32)}
    unified = CodingMode.UNIFIED  # asked for: RAW would be smaller for two elements
    config = EncoderConfig(rules=(TensorRule("tiny", qp=-104, mode=unified), TensorRule("huge", qp=0, mode=unified)))
    # digests=False (format 3.0): the edit changes the decoded tensor, which a 4.0 stream's
    # content digest would reject; this test is about the reconstruction behind it
    data = nu.encode(model, config=dataclasses.replace(config, digests=False))
    as_half = bytearray(data)
    for field in field_map(data):
        if field.element == "dtype":  # float32 -> float16, CRCs recomputed below
            as_half[field.offset] = DType.FLOAT16
    with np.errstate(all="raise"):
        values = nu.decode(fix_crcs(bytes(as_half)))
    assert values["tiny"].dtype == np.float16 and values["tiny"][0, 0] == 0
    assert values["huge"][0, 0] == np.inf and values["huge"][0, 1] == 1


REGRESSIONS = sorted((Path(__file__).parent / "fuzz_regressions").glob("*"))


@pytest.mark.parametrize("path", [p for p in REGRESSIONS if p.suffix != ".md"], ids=lambda p: p.name)
def test_fuzz_regressions(path):
    """Every input in tests/fuzz_regressions/ (see its README) decodes cleanly or raises ours,
    in bounded time and memory."""
    data = path.read_bytes()
    if path.suffix == ".nnu":
        cases = [(data, nu.decode_tensors), (fix_crcs(data), nu.decode_tensors), (reseal(data), nu.decode_tensors),
                 (data, describe)]
    else:  # an atheris output: mode byte, then the stream (tools/fuzz_atheris.py)
        mode, stream = (data[0], data[1:]) if data else (0, b"")
        stream = reseal(stream) if mode & 4 else fix_crcs(stream) if mode & 1 else stream
        cases = [(stream, describe if mode & 2 else nu.decode_tensors)]
    tracemalloc.start()
    try:
        for stream, function in cases:
            outcome = run_decoder(stream, function=function, limits=DEFAULT_LIMITS, measure_memory=True)
            assert outcome.ours, outcome.message
            assert outcome.seconds < 2.0
            assert outcome.peak_bytes < (4 << 20) + 64 * len(stream)
    finally:
        tracemalloc.stop()
