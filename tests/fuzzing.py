"""Shared machinery of the fuzz tests and ``tools/fuzz_*.py``.

* a seeded **corpus**: freshly encoded random models (every dtype, every coding mode, block
  shapes, escape symbols, row/column contexts, pruned/unified/dense blocks) plus the streams
  of ``conformance/`` when that folder holds any;
* **mutators** (bit flips, byte changes, insertions, deletions, truncations, duplications,
  splices of two streams, integer fields set to boundary values) and :func:`fix_crcs`, which
  recomputes every unit's CRC-32 so that a mutation reaches the parser, the entropy decoder
  and the reconstruction instead of stopping at the checksum; :func:`reseal` also rewrites a
  4.x stream's STREAM_END unit (unit count, model digest, stream digest), as a hostile writer
  would, so that only the content digests and the decoder's own checks remain;
* a **field map** of every element the decoder reads (name, offset, width), recorded by
  instrumenting :class:`nncodec_unify.codec.bitio.ByteReader`, so size fields can be aimed at;
  the corpus mixes format 4.0 streams (the encoder's default) with 3.0 and 2.0 ones
  (``digests=False``), so that the paths of the older formats stay fuzzed;
* :func:`run_decoder`, which decodes one input with numpy warnings turned into errors and
  records what escaped, how long it took and the peak memory numpy allocated.

Everything is deterministic given a seed. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

import nncodec_unify as nu
from nncodec_unify.codec import bitio
from nncodec_unify.codec.config import EncoderConfig, TensorRule
from nncodec_unify.codec.format import (
    ALIAS_MAJOR,
    DIGEST_SIZE,
    FILE_HEADER_SIZE,
    INTEGRITY_MAJOR,
    MAGIC,
    STREAM_END_SIZE,
    UNIT_CRC_SIZE,
    UNIT_FLAG_ANCILLARY,
    UNIT_HEADER_SIZE,
    CodingMode,
    Limits,
    UnitType,
)

REPO = Path(__file__).resolve().parent.parent

# Limits a device integrator might set; they keep a fuzzing run's legitimate allocations small
# (a mutated stream may be *valid* and declare a large constant tensor).
FUZZ_LIMITS = Limits(max_total_output_bytes=1 << 27, max_elements_per_tensor=1 << 24)

# The integer fields whose value sizes something: every one gets a size bomb.
SIZE_FIELDS = frozenset({
    "payload_length", "tensor_count", "name_length", "ndim", "dims", "value_count", "direct_bits",
    "mantissa_bits", "row_class_count", "col_class_count", "alphabet_size", "frequency_bits",
    "word_count", "raw_byte_count", "sign_byte_count", "block_rows", "block_cols", "alias_count",
    "alias_name_length",
})


# ---------------------------------------------------------------------------------------------
# corpus


def structured_levels(rng: np.random.Generator, rows: int, cols: int, block: tuple[int, int],
                      *, max_level: int = 60, outliers: int = 3, scales: bool = False) -> np.ndarray:
    """Integer levels with pruned, unified (equal magnitude, mixed signs) and dense blocks.

    ``outliers`` large levels force escape symbols and raw bits; ``scales`` gives rows and
    columns different magnitudes so that the encoder chooses row/column contexts.
    """
    levels = rng.integers(-max_level, max_level + 1, size=(rows, cols), dtype=np.int64)
    if scales and rows and cols:
        row_scale = np.exp2(rng.integers(0, 6, size=rows))[:, None]
        col_scale = np.exp2(rng.integers(0, 7, size=cols))[None, :]
        levels = np.rint(levels * row_scale * col_scale).astype(np.int64)
    block_rows, block_cols = block
    for i in range(0, rows, block_rows):
        for j in range(0, cols, block_cols):
            window = levels[i:i + block_rows, j:j + block_cols]
            draw = rng.random()
            if draw < 0.3:
                window[...] = 0
            elif draw < 0.6:
                window[...] = int(rng.integers(1, 4 * max_level)) * rng.choice([-1, 1], size=window.shape)
    if levels.size and outliers:
        levels.flat[rng.integers(0, levels.size, outliers)] = rng.integers(-200_000, 200_000, outliers)
    return levels


def random_model(rng: np.random.Generator, *, large: bool = False) -> tuple[dict[str, np.ndarray], EncoderConfig]:
    """A small model touching every dtype and coding mode, and the config that codes it.

    ``large`` adds a matrix big enough (>= 4096 values) for row/column contexts.
    """
    block = [(4, 4), (2, 8), (1, 1), (3, 5), (8, 2)][int(rng.integers(0, 5))]
    step = 2.0 ** -8
    model: dict[str, np.ndarray] = {}
    out_channels, in_channels = int(rng.integers(1, 9)), int(rng.integers(1, 4))
    model["conv.weight"] = (structured_levels(rng, out_channels, in_channels * 9, block) * step
                            ).astype(np.float32).reshape(out_channels, in_channels, 3, 3)
    rows, cols = int(rng.integers(1, 24)), int(rng.integers(1, 40))
    model["fc.weight"] = (structured_levels(rng, rows, cols, block) * step).astype(np.float32)
    model["fc.bias"] = rng.normal(size=int(rng.integers(0, 20))).astype(np.float32)
    model["half"] = (structured_levels(rng, 6, 10, block, max_level=20) * 2.0 ** -6).astype(np.float16)
    model["double"] = rng.normal(size=(int(rng.integers(1, 6)), 7))
    model["dense2d"] = (structured_levels(rng, 5, 9, block) * step).astype(np.float32)
    model["unified1d"] = (rng.integers(-3, 4, size=int(rng.integers(1, 30))) * step).astype(np.float32)
    model["raw.float"] = rng.normal(size=(3, 2)).astype(np.float32)
    model["ints"] = rng.integers(-2**40, 2**40, size=(int(rng.integers(0, 5)),))
    model["small.ints"] = rng.integers(0, 255, size=(2, 3)).astype(np.uint8)
    model["mask"] = rng.random(int(rng.integers(0, 12))) > 0.5
    model["scalar"] = np.float32(rng.normal())
    model["empty"] = np.zeros((0, 4), dtype=np.float32)
    model["non.finite"] = np.array([[np.nan, 1.0], [np.inf, -2.0]], dtype=np.float32)
    if large:  # >= 4096 values in one plane: the encoder chooses row/column contexts
        row_scale = np.exp2(rng.integers(0, 8, size=72))[:, None]
        col_scale = np.exp2(rng.integers(0, 8, size=64))[None, :]
        levels = np.rint(rng.laplace(size=(72, 64)) * row_scale * col_scale / 4)
        model["big.dense"] = (levels * step).astype(np.float32)
    config = EncoderConfig(
        qp=int(rng.choice([-40, -32, -24])), block=block,
        rules=(TensorRule("dense2d", mode=CodingMode.DENSE), TensorRule("double", mode=CodingMode.DENSE),
               TensorRule("big.dense", mode=CodingMode.DENSE),
               TensorRule("unified1d", mode=CodingMode.UNIFIED), TensorRule("raw.*", mode=CodingMode.RAW),
               TensorRule("half", mode=CodingMode.UNIFIED)),
        use_contexts=large or bool(rng.random() < 0.8))
    return model, config


def small_stream(*, digests: bool = True) -> bytes:
    """A ~400-byte format 4.0 stream (~250 bytes and format 3.0 without ``digests``) with every
    kind of block, escape symbols (raw bits), signs, a DENSE vector and a RAW tensor: small
    enough to flip every bit of."""
    levels = np.array([[0, 0, 5, -5, 1, 2, 300, -1],
                       [0, 0, -5, 5, 3, -4, 0, 7],
                       [2, -2, 0, 0, 9, 9, -9, 9],
                       [-2, 2, 0, 0, 1, 0, 9, -9]])
    model = {"w": (levels * 2.0 ** -6).astype(np.float32),
             "b": np.array([0.5, -0.25, 0.0, 3.0], dtype=np.float32),
             "i": np.array([-1, 0, 7], dtype=np.int8)}
    return nu.encode(model, config=EncoderConfig(qp=-24, vector_qp=-24, block=(2, 2), digests=digests))


def conformance_streams(kind: str) -> list[tuple[str, bytes]]:
    """The streams of ``conformance/<kind>/`` ('valid' or 'invalid'), if there are any."""
    folder = REPO / "conformance" / kind
    if not folder.is_dir():
        return []
    return [(f"conformance/{kind}/{p.name}", p.read_bytes()) for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix == ".nnu"]


@dataclasses.dataclass(frozen=True)
class Sample:
    """A stream to mutate: its label, bytes, whether it is valid, and its field map."""

    label: str
    data: bytes
    valid: bool
    fields: tuple[Field, ...]


def make_corpus(seed: int, count: int, *, large_every: int = 4, conformance: bool = True,
                old_every: int = 3) -> list[Sample]:
    """``count`` encoded random models (every ``large_every``-th with contexts), then the
    conformance streams.

    The models are format 4.0 streams (the encoder's default), format 5.0 at odd indexes
    (two more names for one tensor: tied weights), except every ``old_every``-th (index 2, 5,
    8, ...), written without digests: alternately 3.0 and 2.0, so that the paths of the older
    formats stay fuzzed. ``old_every=0``: 4.x and 5.0 streams only.
    """
    rng = np.random.default_rng(seed)
    streams = []
    for index in range(count):
        model, config = random_model(rng, large=large_every > 0 and index % large_every == 0)
        label = f"random model {seed}/{index}"
        if old_every and index % old_every == old_every - 1:
            config = dataclasses.replace(config, digests=False, dependent=(index // old_every) % 2 == 0)
        elif index % 2:  # tied weights: a 5.0 stream (§5.2 alias names)
            model["fc.tied"] = model["embed.tied"] = model["fc.weight"]
        data = nu.encode(model, config=config)
        streams.append((label if data[len(MAGIC)] >= INTEGRITY_MAJOR else f"{label} ({data[len(MAGIC)]}.0)", data))
    if conformance:
        streams += conformance_streams("valid")
    samples = [Sample(label, data, True, field_map(data)) for label, data in streams]
    if conformance:
        samples += [Sample(label, data, False, field_map(data)) for label, data in conformance_streams("invalid")]
    return samples


# ---------------------------------------------------------------------------------------------
# framing and CRCs


def units(data: bytes) -> list[tuple[int, int]]:
    """(offset, total size) of each unit whose framing fits in ``data``, in order."""
    found, pos = [], FILE_HEADER_SIZE
    while pos + UNIT_HEADER_SIZE <= len(data):
        length = int.from_bytes(data[pos + 2:pos + 6], "little")
        size = UNIT_HEADER_SIZE + length + UNIT_CRC_SIZE
        if pos + size > len(data):
            break
        found.append((pos, size))
        pos += size
    return found


def fix_crcs(data: bytes) -> bytes:
    """``data`` with every framed unit's CRC-32 recomputed over its header and payload (§4.2)."""
    fixed = bytearray(data)
    for offset, size in units(data):
        end = offset + size - UNIT_CRC_SIZE
        fixed[end:end + UNIT_CRC_SIZE] = zlib.crc32(fixed[offset:end]).to_bytes(4, "little")
    return bytes(fixed)


def version_major(data: bytes) -> int | None:
    """The stream's version_major, or None when ``data`` does not start with the magic number."""
    return data[len(MAGIC)] if len(data) > len(MAGIC) and data.startswith(MAGIC) else None


def _tensor_records(payload: bytes, major: int) -> bytes | None:
    """§5.8 tensor_records of a 4.x/5.x tensor unit's payload: its tensor_header without
    coding_mode, every field as stored, then (5.x) the same under each alias name; None when
    the header does not fit in the payload."""
    if len(payload) < 2:
        return None
    name_end = 2 + int.from_bytes(payload[:2], "little")
    if name_end + 2 > len(payload):
        return None
    dims_end = name_end + 2 + 4 * payload[name_end + 1]
    digest_at = dims_end + 1  # after coding_mode
    if digest_at + DIGEST_SIZE > len(payload):
        return None
    rest = payload[name_end:dims_end] + payload[digest_at:digest_at + DIGEST_SIZE]
    records = payload[:name_end] + rest
    at = digest_at + DIGEST_SIZE
    if major < ALIAS_MAJOR or at + 2 > len(payload):
        return records
    for _ in range(int.from_bytes(payload[at:at + 2], "little")):
        if at + 4 > len(payload):
            break
        alias_end = at + 4 + int.from_bytes(payload[at + 2:at + 4], "little")
        records += payload[at + 2:alias_end] + rest
        at = alias_end - 2
    return records


def reseal(data: bytes) -> bytes:
    """What a hostile writer who fixes every container check, but cannot fix a content digest,
    makes of an edited stream: every CRC recomputed (:func:`fix_crcs`) and, in a 4.x stream,
    the STREAM_END unit (the first critical unit of type 4, the one a decoder checks) rewritten
    with the number of units before it, the model digest of the tensor units before it (from
    their stored content digests, §5.8 tensor_record) and the SHA-256 of every byte before it.

    What can still reject such a stream: the content digests (§7.4) and the decoder's own
    checks. A 2.x/3.x stream, or one without a STREAM_END unit, only gets its CRCs fixed.
    """
    fixed = bytearray(fix_crcs(data))
    if (version_major(data) or 0) < INTEGRITY_MAJOR:
        return bytes(fixed)
    model = hashlib.sha256()
    for index, (offset, size) in enumerate(units(data)):
        unit_type, flags = fixed[offset], fixed[offset + 1]
        payload_at, crc_at = offset + UNIT_HEADER_SIZE, offset + size - UNIT_CRC_SIZE
        critical = not flags & UNIT_FLAG_ANCILLARY
        if critical and unit_type == UnitType.TENSOR:
            record = _tensor_records(bytes(fixed[payload_at:crc_at]), version_major(data))
            if record is not None:
                model.update(record)
        elif critical and unit_type == UnitType.STREAM_END and crc_at - payload_at >= STREAM_END_SIZE:
            fields = index.to_bytes(4, "little") + model.digest() + hashlib.sha256(fixed[:offset]).digest()
            fixed[payload_at:payload_at + STREAM_END_SIZE] = fields
            fixed[crc_at:crc_at + UNIT_CRC_SIZE] = zlib.crc32(fixed[offset:crc_at]).to_bytes(4, "little")
            break
    return bytes(fixed)


# ---------------------------------------------------------------------------------------------
# field map


@dataclasses.dataclass(frozen=True)
class Field:
    """One element the decoder read: spec name (with its path), offset, bytes, descriptor."""

    element: str
    offset: int
    size: int
    kind: str  # u8, u16, i16, u32 or bytes

    @property
    def name(self) -> str:
        """The element's own name: ``dense_levels.magnitude_table[0].alphabet_size`` -> ``alphabet_size``."""
        return self.element.rsplit(".", 1)[-1].split("[")[0]


@contextlib.contextmanager
def _recording(fields: list[Field]) -> Iterator[None]:
    saved = {name: getattr(bitio.ByteReader, name) for name in ("u8", "u16", "i16", "u32", "bytes", "view")}

    def integer(kind: str, size: int) -> Callable:
        def read(self, element):
            offset = self.offset
            value = saved[kind](self, element)
            fields.append(Field(element, offset, size, kind))
            return value
        return read

    def raw(kind: str) -> Callable:
        def read(self, n, element):
            offset = self.offset
            value = saved[kind](self, n, element)
            fields.append(Field(element, offset, n, "bytes"))
            return value
        return read

    for kind, size in (("u8", 1), ("u16", 2), ("i16", 2), ("u32", 4)):
        setattr(bitio.ByteReader, kind, integer(kind, size))
    for kind in ("bytes", "view"):
        setattr(bitio.ByteReader, kind, raw(kind))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(bitio.ByteReader, name, method)


def field_map(data: bytes) -> tuple[Field, ...]:
    """Every element a full decode of ``data`` reads, in order (up to the error, if any).

    Whole-unit views (``payload``) are left out: they are not fields of their own.
    """
    fields: list[Field] = []
    with _recording(fields), contextlib.suppress(nu.BitstreamError):
        nu.decode_tensors(data, limits=FUZZ_LIMITS)
    return tuple(f for f in fields if f.element not in ("payload", "tensor payload"))


# ---------------------------------------------------------------------------------------------
# mutators: each takes (rng, data, sample, other) and returns new bytes


_INTERESTING_U8 = (0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 31, 32, 63, 64, 65, 127, 128, 254, 255)
_INTERESTING_U16 = (0, 1, 2, 255, 256, 624, 625, 1023, 1024, 1025, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
_INTERESTING_U32 = (0, 1, 2, 255, 256, 0xFFFF, 0x10000, 1 << 24, 1 << 30, 0x7FFFFFFF, 0x80000000,
                    0xFFFFFFFE, 0xFFFFFFFF)
BOMBS = {"u8": (255, 128, 64, 9), "u16": (0xFFFF, 0x8000, 1025),
         "u32": (0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 1 << 24, 1 << 20), "i16": (0x7FFF, 0x8000)}


def _position(rng, data: bytes) -> int:
    return int(rng.integers(0, len(data))) if data else 0


def flip_bits(rng, data, sample, other):
    if not data:
        return data
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        out[_position(rng, data)] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def set_byte(rng, data, sample, other):
    if not data:
        return data
    out = bytearray(data)
    value = int(rng.choice(_INTERESTING_U8)) if rng.random() < 0.5 else int(rng.integers(0, 256))
    out[_position(rng, data)] = value
    return bytes(out)


def insert_bytes(rng, data, sample, other):
    at = int(rng.integers(0, len(data) + 1))
    return data[:at] + rng.bytes(int(rng.integers(1, 9))) + data[at:]


def delete_bytes(rng, data, sample, other):
    at = _position(rng, data)
    return data[:at] + data[at + int(rng.integers(1, 9)):]


def truncate(rng, data, sample, other):
    return data[:_position(rng, data)]


def duplicate_range(rng, data, sample, other):
    start = _position(rng, data)
    piece = data[start:start + int(rng.integers(1, 33))]
    at = int(rng.integers(0, len(data) + 1))
    return data[:at] + piece + data[at:]


def splice(rng, data, sample, other):
    """The head of this stream and the tail of another (foreign bytes)."""
    return data[:_position(rng, data)] + other[_position(rng, other):]


def set_field(rng, data, sample, other):
    """An integer field the decoder reads set to a boundary value, a neighbour or noise."""
    fields = [f for f in sample.fields if f.kind != "bytes" and f.offset + f.size <= len(data)]
    if not fields:
        return flip_bits(rng, data, sample, other)
    field = fields[int(rng.integers(0, len(fields)))]
    value = int.from_bytes(data[field.offset:field.offset + field.size], "little")
    top = (1 << (8 * field.size)) - 1
    choices = {"u8": _INTERESTING_U8, "u16": _INTERESTING_U16, "i16": _INTERESTING_U16,
               "u32": _INTERESTING_U32}[field.kind]
    draw = rng.random()
    if draw < 0.5:
        value = int(rng.choice(choices))
    elif draw < 0.8:
        value = (value + int(rng.choice([-2, -1, 1, 2]))) & top
    else:
        value = int(rng.integers(0, top + 1))
    out = bytearray(data)
    out[field.offset:field.offset + field.size] = value.to_bytes(field.size, "little")
    return bytes(out)


def mutate_payload_bytes(rng, data, sample, other):
    """Noise inside one coded byte field (words, raw bits, signs, frequencies, raw data)."""
    fields = [f for f in sample.fields
              if f.kind == "bytes" and f.size and f.element != "magic" and f.offset + f.size <= len(data)]
    if not fields:
        return flip_bits(rng, data, sample, other)
    field = fields[int(rng.integers(0, len(fields)))]
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        at = field.offset + int(rng.integers(0, field.size))
        out[at] = out[at] ^ (1 << int(rng.integers(0, 8))) if rng.random() < 0.7 else int(rng.integers(0, 256))
    return bytes(out)


def shuffle_units(rng, data, sample, other):
    """Drop, duplicate or swap whole units, keeping their CRCs valid."""
    found = units(data)
    if len(found) < 2:
        return truncate(rng, data, sample, other)
    pieces = [data[o:o + s] for o, s in found]
    i, j = (int(x) for x in rng.choice(len(pieces), 2, replace=False))
    draw = rng.random()
    if draw < 0.33:
        del pieces[i]
    elif draw < 0.66:
        pieces.insert(j, pieces[i])
    else:
        pieces[i], pieces[j] = pieces[j], pieces[i]
    end = found[-1][0] + found[-1][1]
    return data[:FILE_HEADER_SIZE] + b"".join(pieces) + data[end:]


# ---------------------------------------------------------------------------------------------
# systematic edits (tests/test_fuzz.py, tools/fuzz_figures.py): CRCs left as they are; the
# caller fixes them (fix_crcs) or reseals the stream (reseal)


def unit_edits(data: bytes) -> Iterator[tuple[str, str, bytes]]:
    """(kind, label, stream): every swap of two units, every unit dropped, every unit repeated
    at every place (kinds ``swap``, ``drop``, ``repeat``). Whole units move with their CRCs."""
    found = units(data)
    if not found:
        return
    pieces = [data[o:o + s] for o, s in found]
    head, tail = data[:found[0][0]], data[found[-1][0] + found[-1][1]:]
    for i in range(len(pieces)):
        for j in range(i + 1, len(pieces)):
            if pieces[i] != pieces[j]:
                swapped = list(pieces)
                swapped[i], swapped[j] = swapped[j], swapped[i]
                yield "swap", f"swap {i} {j}", head + b"".join(swapped) + tail
        yield "drop", f"drop {i}", head + b"".join(pieces[:i] + pieces[i + 1:]) + tail
        for at in range(len(pieces) + 1):
            yield "repeat", f"repeat {i} at {at}", head + b"".join(pieces[:at] + [pieces[i]] + pieces[at:]) + tail


def word_edits(data: bytes, rng: np.random.Generator,
               fields: tuple[Field, ...] | None = None) -> Iterator[tuple[str, str, bytes]]:
    """(kind, label, stream) for each level plane of ``data``: a zero word and a random word
    appended to its words (kind ``append``), its final word dropped (kind ``drop``), with its
    ``word_count`` and its unit's ``payload_length`` changed to match (the CRC is not fixed)."""
    found = units(data)
    for field in fields if fields is not None else field_map(data):
        if not field.element.endswith(".word_count"):
            continue
        unit = [(o, s) for o, s in found if o < field.offset < o + s]
        if not unit:
            continue
        (offset, size), = unit
        count = int.from_bytes(data[field.offset:field.offset + 4], "little")
        words_end = field.offset + 4 + 4 * count
        plane = field.element.rsplit(".", 1)[0]
        edits = [("append", f"{plane} at {field.offset}: zero word appended", b"\0\0\0\0"),
                 ("append", f"{plane} at {field.offset}: random word appended", rng.bytes(4))]
        if count:
            edits.append(("drop", f"{plane} at {field.offset}: final word dropped", None))
        for kind, label, word in edits:
            change = 1 if word is not None else -1
            body = bytearray(data[:words_end] + word + data[words_end:] if word is not None
                             else data[:words_end - 4] + data[words_end:])
            body[offset + 2:offset + 6] = (size - UNIT_HEADER_SIZE - UNIT_CRC_SIZE + 4 * change).to_bytes(4, "little")
            body[field.offset:field.offset + 4] = (count + change).to_bytes(4, "little")
            yield kind, label, bytes(body)


MUTATORS: dict[str, Callable] = {
    "flip_bits": flip_bits, "set_byte": set_byte, "insert_bytes": insert_bytes,
    "delete_bytes": delete_bytes, "truncate": truncate, "duplicate_range": duplicate_range,
    "splice": splice, "set_field": set_field, "mutate_payload_bytes": mutate_payload_bytes,
    "shuffle_units": shuffle_units,
}
FOREIGN = frozenset({"splice"})  # mutators that bring in another stream's bytes
REORDERING = frozenset({"shuffle_units"})  # mutators that move whole units with their CRCs


@dataclasses.dataclass(frozen=True)
class Mutation:
    sample: Sample
    mutator: str  # "flip_bits", or "flip_bits+splice" when two were stacked
    crcs_fixed: bool
    data: bytes
    resealed: bool = False  # the CRCs fixed by :func:`reseal`: a 4.x stream's STREAM_END rewritten too

    @property
    def steps(self) -> set[str]:
        return set(self.mutator.split("+"))


def mutations(corpus: list[Sample], seed: int, count: int, *, fix_probability: float = 0.75,
              reseal_probability: float = 0.5) -> Iterator[Mutation]:
    """``count`` seeded mutations of the corpus; most have their CRCs recomputed, and of those
    a share ``reseal_probability`` is :func:`reseal`-ed (which in a 4.x stream also rewrites
    STREAM_END, so that an edit reaches the content digests and the end of the stream)."""
    rng = np.random.default_rng(seed)
    names = sorted(MUTATORS)
    valid = [s for s in corpus if s.valid] or corpus
    invalid = [s for s in corpus if not s.valid]
    for _ in range(count):
        # three in four mutate a valid stream; the rest an invalid conformance stream, if any
        pool = invalid if invalid and rng.random() < 0.25 else valid
        sample = pool[int(rng.integers(0, len(pool)))]
        other = corpus[int(rng.integers(0, len(corpus)))].data
        name = names[int(rng.integers(0, len(names)))]
        data = MUTATORS[name](rng, sample.data, sample, other)
        if rng.random() < 0.15:  # stack a second mutation now and then
            second = names[int(rng.integers(0, len(names)))]
            data = MUTATORS[second](rng, data, sample, other)
            name += "+" + second
        fixed = rng.random() < fix_probability
        if not fixed:
            yield Mutation(sample, name, False, data)
        elif rng.random() < reseal_probability:
            yield Mutation(sample, name, True, reseal(data), resealed=True)
        else:
            yield Mutation(sample, name, True, fix_crcs(data))


# ---------------------------------------------------------------------------------------------
# running the decoder


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one decode did. ``error`` is the exception's type name, or None on success."""

    error: str | None
    ours: bool  # no exception, or a BitstreamError
    seconds: float
    peak_bytes: int | None
    tensors: tuple | None  # fingerprint of the output (see :func:`fingerprint`)
    message: str = ""
    element: str | None = None  # the BitstreamError's element
    files: tuple | None = None  # the attached files decoded: (path, content) in stream order


def fingerprint(model: nu.DecodedModel) -> tuple:
    """Everything observable about a decoded model: names in order, stored dtypes, numpy dtypes,
    shapes and the exact bytes (NaN payloads included)."""
    return tuple((t.name, int(t.dtype), t.array.dtype.str, t.array.shape, t.array.tobytes())
                 for t in model.tensors)


def run_decoder(data: bytes, *, limits: Limits = FUZZ_LIMITS, measure_memory: bool = False,
                function: Callable = nu.decode_tensors) -> Outcome:
    """Decode ``data`` with numpy warnings as errors; never raises (except KeyboardInterrupt)."""
    tracing = measure_memory and tracemalloc.is_tracing()
    if tracing:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    error, ours, tensors, message, element, files = None, True, None, "", None, None
    try:
        with warnings.catch_warnings(), np.errstate(all="raise"):
            warnings.simplefilter("error")
            result = function(data, limits=limits)
        if isinstance(result, nu.DecodedModel):
            tensors = fingerprint(result)
            files = tuple((f.path, f.content) for f in result.files)
        del result
    except nu.BitstreamError as exc:
        error, message, element = type(exc).__name__, str(exc), exc.element
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: B036 - the point is to see everything that escapes
        error, ours, message = type(exc).__name__, False, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - base if tracing else None
    return Outcome(error, ours, seconds, peak, tensors, message, element, files)


def same_or_rejected(outcome: Outcome, expected: tuple) -> bool:
    """Invariant 4: a changed stream is rejected, or decodes to the very same tensors."""
    return outcome.error is not None or outcome.tensors == expected


def single_bit_flips(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Every stream that differs from ``data`` in exactly one bit."""
    for bit in range(8 * len(data)):
        out = bytearray(data)
        out[bit // 8] ^= 0x80 >> (bit % 8)
        yield bit, bytes(out)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
