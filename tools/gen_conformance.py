#!/usr/bin/env python3
"""Build the conformance suite in ``conformance/`` byte for byte.

    python tools/gen_conformance.py            # (re)write conformance/
    python tools/gen_conformance.py --check    # compare with conformance/, exit 1 on a difference
    python tools/gen_conformance.py --out DIR  # write elsewhere

Every stream is assembled field by field from ``spec/bitstream.md``, with every choice explicit
(binarization, classes, frequency tables, block kinds, qp), so nothing here depends on the
encoder's heuristics. The only code borrowed from ``nncodec_unify`` is the range coder
(``entropy.encode_groups``, i.e. constriction; every plane's words are checked against this
file's own Appendix B encoder), the reconstruction rule (``quant``) for the expected values,
and the reference decoder (and its error categories), which must accept every valid stream with the expected results and
reject every invalid one as expected before anything is written. Every plane is also decoded
here by the letter of §6.5.1 and §6.9 (``SpecDecoder``): valid streams must decode to what was
coded, invalid word streams must have the defect they are built to have, and the coding-order
streams must decode to another hash under format 1.0's order. Format 4.0's content digests,
tensor records, model digests and stream digests (§5.2, §5.8) are computed here with hashlib from
the bytes as written, and format 5.0's alias names (§5.2) with their records in the model digest.
Pseudo-random data come from a SplitMix64 generator defined here, so the output never depends on
numpy's generators.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import hashlib
import json
import sys
import unicodedata
import zlib
from pathlib import Path

import numpy as np

from nncodec_unify.codec.entropy import FrequencyTable, encode_groups
from nncodec_unify.codec.conform import error_category
from nncodec_unify.codec.errors import BitstreamError
from nncodec_unify.codec.format import DType, Limits
from nncodec_unify.codec.quant import dependent_magnitudes, dequantize, step_size, to_output_type

SPEC_REVISION = "5.0.2"
FORMAT_VERSION = "5.0"
VERSION_MAJOR = 2  # the major version of a stream unless a case says otherwise
INTEGRITY_MAJOR = 4  # content_digest in tensor_header (§5.2) and the STREAM_END unit (§5.8)
ALIAS_MAJOR = 5  # alias_count and alias names after content_digest in tensor_header (§5.2)
STREAM_END = 4  # unit_type (§4.2)
MAGIC = b"\x89NNU\r\n\x1a\n"
M64 = (1 << 64) - 1

DTYPE = {"float32": 1, "float16": 2, "bfloat16": 3, "float64": 4, "int8": 5, "int16": 6, "int32": 7,
         "int64": 8, "uint8": 9, "bool": 10, "uint16": 11, "uint32": 12, "uint64": 13}
DTYPE_NAME = {v: k for k, v in DTYPE.items()}
ITEM_SIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "int16": 2, "int32": 4,
             "int64": 8, "uint8": 1, "bool": 1, "uint16": 2, "uint32": 4, "uint64": 8}
INTEGER_DTYPES = {"int8": (-1 << 7, (1 << 7) - 1), "int16": (-1 << 15, (1 << 15) - 1),
                  "int32": (-1 << 31, (1 << 31) - 1), "int64": (-1 << 63, (1 << 63) - 1),
                  "uint8": (0, (1 << 8) - 1), "uint16": (0, (1 << 16) - 1), "uint32": (0, (1 << 32) - 1),
                  "uint64": (0, (1 << 64) - 1)}  # §7.1.1: the range of each integer dtype
RAW, DENSE, UNIFIED = 0, 1, 2
MODE_NAME = {RAW: "raw", DENSE: "dense", UNIFIED: "unified"}
K_DENSE, K_UNIFIED, K_PRUNED = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# deterministic pseudo-random numbers (SplitMix64)


class Rng:
    def __init__(self, seed: int):
        self.state = seed & M64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def laplace_levels(self, count: int, scale: int) -> list[int]:
        """Small signed integers, mostly near zero (a crude geometric distribution)."""
        out = []
        for _ in range(count):
            m = 0
            while self.below(scale + 1) != 0 and m < 60 * scale:
                m += 1
            out.append(-m if self.below(2) else m)
        return out


# ---------------------------------------------------------------------------------------------
# an annotated byte writer: every field remembers its element name and offset, so invalid
# streams can mutate or cut a named field and spec/examples.md can show the layout


@dataclasses.dataclass
class Field:
    element: str
    offset: int
    size: int
    value: str


class W:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.fields: list[Field] = []

    def _put(self, element: str, b: bytes, value) -> None:
        self.fields.append(Field(element, len(self.buf), len(b), str(value)))
        self.buf += b

    def u8(self, element: str, v: int) -> None:
        self._put(element, bytes([v]), v)

    def u16(self, element: str, v: int) -> None:
        self._put(element, v.to_bytes(2, "little"), v)

    def i16(self, element: str, v: int) -> None:
        self._put(element, v.to_bytes(2, "little", signed=True), v)

    def u32(self, element: str, v: int) -> None:
        self._put(element, v.to_bytes(4, "little"), v)

    def raw(self, element: str, b: bytes, value: str | None = None) -> None:
        if value is None:
            value = b.hex(" ") if len(b) <= 16 else f"{len(b)} bytes"
        self._put(element, bytes(b), value)

    def extend(self, other: W, prefix: str = "") -> None:
        base = len(self.buf)
        for f in other.fields:
            self.fields.append(Field(prefix + f.element, base + f.offset, f.size, f.value))
        self.buf += other.buf

    def find(self, element: str, occurrence: int = 0) -> Field:
        matches = [f for f in self.fields if f.element == element]
        return matches[occurrence]

    def bytes(self) -> bytes:
        return bytes(self.buf)


def pack_bits(fields: list[tuple[int, int]], padding: int = 0) -> bytes:
    """§3.3: (value, width) fields MSB first; the padding bits of the last byte set from ``padding``."""
    bits = []
    for value, width in fields:
        bits.extend((value >> (width - 1 - k)) & 1 for k in range(width))
    pad = (-len(bits)) % 8
    bits.extend((padding >> (pad - 1 - k)) & 1 for k in range(pad))
    out = bytearray()
    for i in range(0, len(bits), 8):
        byte = 0
        for bit in bits[i:i + 8]:
            byte = (byte << 1) | bit
        out.append(byte)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Appendix B: the range encoder, to cross-check constriction and to observe carries


class TracingEncoder:
    def __init__(self) -> None:
        self.lower, self.range, self.words, self.inverted = 0, M64, [], None
        self.inversions = self.carries = self.renormalisations = self.max_held = 0
        self.started = False

    def encode(self, s: int, cdf: list[int]) -> None:
        self.started = True
        scale = self.range >> 24
        new_range = scale * (cdf[s + 1] - cdf[s])
        new_lower = (self.lower + scale * cdf[s]) & M64
        if self.inverted is not None and ((new_lower + new_range) & M64) > new_lower:
            held, first = self.inverted
            if new_lower < self.lower:
                self.carries += 1
                self.words += [first + 1] + [0] * (held - 1)
            else:
                self.words += [first] + [0xFFFFFFFF] * (held - 1)
            self.inverted = None
        self.lower, self.range = new_lower, new_range
        if self.range < 1 << 32:
            self.renormalisations += 1
            self.range <<= 32
            word = self.lower >> 32
            self.lower = (self.lower << 32) & M64
            if self.inverted is not None:
                self.inverted = (self.inverted[0] + 1, self.inverted[1])
                self.max_held = max(self.max_held, self.inverted[0])
            elif ((self.lower + self.range) & M64) > self.lower:
                self.words.append(word)
            else:
                self.inversions += 1
                self.inverted = (1, word)

    def finish(self) -> tuple[list[int], int]:
        """The words, and ``extra`` (whether the final zero word was written)."""
        if not self.started:
            return [], 0
        words = list(self.words)
        point = (self.lower + (1 << 32) - 1) & M64
        if self.inverted is not None:
            held, first = self.inverted
            if point >= self.lower:
                words += [first] + [0xFFFFFFFF] * (held - 1)
            else:
                self.carries += 1
                words += [first + 1] + [0] * (held - 1)
        words.append(point >> 32)
        extra = int(((self.lower + self.range) & M64) >> 32 == point >> 32)
        if extra:
            words.append(0)
        return words, extra


def cdf_of(frequencies: list[int]) -> list[int]:
    """§6.6.1."""
    n = len(frequencies)
    total = (1 << 24) - n
    big = sum(frequencies)
    w = [f * total // big for f in frequencies]
    w[frequencies.index(max(frequencies))] += total - sum(w)
    cdf = [0]
    for x in w:
        cdf.append(cdf[-1] + x + 1)
    return cdf


# ---------------------------------------------------------------------------------------------
# frequency tables (§6.6)


@dataclasses.dataclass
class Table:
    frequencies: list[int]
    bits: int = 0
    padding: int = 0  # value of the padding bits (invalid streams only)
    alphabet_size: int | None = None  # written instead of len(frequencies) (invalid streams only)

    @property
    def n(self) -> int:
        return len(self.frequencies)


def table_for(symbols: list[int], alphabet: int | None = None, bits: int | None = None) -> Table:
    """A table with the exact symbol counts (scaled down only if a count needs more than 24 bits)."""
    n = alphabet if alphabet is not None else (max(symbols) + 1 if symbols else 1)
    counts = [0] * n
    for s in symbols:
        counts[s] += 1
    if n == 1:
        return Table([1])
    top = max(max(counts), 1)
    if bits is None:
        bits = min(24, max(1, top.bit_length()))
    limit = (1 << bits) - 1
    if top > limit:
        counts = [0 if c == 0 else max(1, c * limit // top) for c in counts]
    if not any(counts):
        counts[0] = 1
    return Table(counts, bits)


def write_table(w: W, t: Table) -> None:
    w.u16("alphabet_size", t.alphabet_size if t.alphabet_size is not None else t.n)
    if t.n > 1:
        w.u8("frequency_bits", t.bits)
        w.raw("frequencies", pack_bits([(f, t.bits) for f in t.frequencies], t.padding),
              ",".join(map(str, t.frequencies)) if t.n <= 8 else f"{t.n} frequencies")


# ---------------------------------------------------------------------------------------------
# §6.4 binarization and §6.5 level planes


def magnitude_alphabet(q: int, m: int) -> int:
    return (1 << q) + (31 - q) * (1 << m)


def binarize(v: int, q: int, m: int) -> tuple[int, int, int]:
    """(symbol, raw bits value, raw width)."""
    if v < (1 << q):
        return v, 0, 0
    e = v.bit_length() - 1
    symbol = (1 << q) + ((e - q) << m) + ((v >> (e - m)) & ((1 << m) - 1))
    width = e - m
    return symbol, v & ((1 << width) - 1), width


@dataclasses.dataclass
class PlaneOptions:
    """Every choice an encoder makes for one plane. ``None`` fields take simple defaults."""

    q: int = 8
    m: int = 0
    row_classes: list[int] | None = None
    col_classes: list[int] | None = None
    row_class_count: int | None = None
    col_class_count: int | None = None
    row_table: Table | None = None
    col_table: Table | None = None
    tables: dict[int, Table] | None = None  # per context
    table_bits: int | None = None
    alphabet: int | None = None  # magnitude tables' alphabet size (default: largest symbol + 1)
    # invalid streams only
    fields: dict[str, int] = dataclasses.field(default_factory=dict)
    words: list[int] | None = None
    extra_words: list[int] = dataclasses.field(default_factory=list)
    drop_words: int = 0
    raw_bits: bytes | None = None
    raw_padding: int = 0


def dl(**options) -> dict[str, PlaneOptions]:
    """The planes of a DENSE tensor: options for ``dense_levels``."""
    return {"dense_levels": PlaneOptions(**options)}


@dataclasses.dataclass
class PlaneStats:
    words: int = 0
    extra: int = 0
    carries: int = 0
    inversions: int = 0
    escapes: int = 0
    zero_width_escapes: int = 0
    contexts: int = 1
    max_held: int = 0
    name: str = ""
    values: list[int] = dataclasses.field(default_factory=list)  # the plane's values (masked positions, scan order)
    decoded: PlaneDecoding | None = None  # what §6.5.1 makes of the words as written


# ---------------------------------------------------------------------------------------------
# §6.5.1 and §6.9: the decoding process, literally, to check every plane as written and to see
# what a decoder that assigns symbols in another order (format 1.0's scan order) would get


class QuantileError(Exception):
    pass


class SpecDecoder:
    """§6.9.1-3, with the state that the end check (§6.9.4) looks at; ``trace`` records each step."""

    def __init__(self, words: list[int]) -> None:
        self.words, self.next_word, self.reads, self.started = list(words), 0, 0, False
        self.lower = self.range = self.point = 0
        self.trace: list[tuple[int, int, int, int, int]] = []  # (scale, quantile, symbol, lower, range)

    def read_word(self) -> int:
        self.reads += 1
        if self.next_word < len(self.words):
            self.next_word += 1
            return self.words[self.next_word - 1]
        return 0

    def decode(self, cdf: list[int]) -> int:
        if not self.started:
            self.started = True
            self.lower, self.range = 0, M64
            self.point = self.read_word() << 32
            self.point |= self.read_word()
        scale = self.range >> 24
        quantile = ((self.point - self.lower) & M64) // scale
        if quantile >= 1 << 24:
            raise QuantileError(quantile)
        s = bisect.bisect_right(cdf, quantile, 0, len(cdf) - 1) - 1
        self.lower = (self.lower + scale * cdf[s]) & M64
        self.range = scale * (cdf[s + 1] - cdf[s])
        if self.range < 1 << 32:
            self.lower = (self.lower << 32) & M64
            self.range <<= 32
            self.point = ((self.point << 32) & M64) | self.read_word()
        self.trace.append((scale, quantile, s, self.lower, self.range))
        return s

    def end_check(self) -> bool:
        """§6.9.4."""
        if not self.started:
            return not self.words
        return self.reads >= len(self.words) and ((self.point - self.lower) & M64) < (1 << 33) - 1


@dataclasses.dataclass
class PlaneDecoding:
    """The result of §6.5.1 on a plane as written."""

    decoder: SpecDecoder
    error: str | None = None  # "quantile", "end check", "raw bits" or another failure
    symbols: list[int] | None = None  # per masked position in scan order (format 2.0's assignment)
    values: list[int] | None = None
    symbols_v1: list[int] | None = None  # the same symbols assigned per context in scan order (format 1.0)
    values_v1: list[int] | None = None


def symbol_base(s: int, q: int, m: int) -> tuple[int, int]:
    """§6.4: a symbol's smallest value and its raw width."""
    if s < (1 << q):
        return s, 0
    j = s - (1 << q)
    e = q + (j >> m)
    return (1 << e) | ((j & ((1 << m) - 1)) << (e - m)), e - m


def add_raw_bits(symbols: list[int], raw: bytes, q: int, m: int) -> list[int] | None:
    """§6.7: the values, or None if raw_byte_count or the padding is wrong."""
    escapes = sorted((s, k) for k, s in enumerate(symbols) if s >= (1 << q))
    bits = "".join(f"{b:08b}" for b in raw)
    values, at = [symbol_base(s, q, m)[0] for s in symbols], 0
    for s, k in escapes:
        width = symbol_base(s, q, m)[1]
        values[k] += int(bits[at:at + width] or "0", 2)
        at += width
    if len(raw) != -(-at // 8) or "1" in bits[at:]:
        return None
    return values


def decode_plane_spec(words: list[int], raw: bytes, q: int, m: int, rows: int, cols: int,
                      positions: list[tuple[int, int]], class_tables: tuple[Table | None, Table | None],
                      tables: list[Table]) -> PlaneDecoding:
    """§6.5.1 over the plane's words as written (the syntax is taken as valid)."""
    d = SpecDecoder(words)
    result = PlaneDecoding(d)

    def decode(n: int, t: Table) -> list[int]:
        if n == 0:
            return []
        if t.n == 1:
            return [0] * n
        cdf = cdf_of(t.frequencies)
        return [d.decode(cdf) for _ in range(n)]

    try:
        row_classes = decode(rows, class_tables[0]) if class_tables[0] else [0] * rows
        col_classes = decode(cols, class_tables[1]) if class_tables[1] else [0] * cols
        context = [row_classes[i] + col_classes[j] for i, j in positions]
        coding = sorted(range(len(positions)), key=lambda k: (context[k], row_classes[positions[k][0]], k))
        scan = sorted(range(len(positions)), key=lambda k: context[k])  # stable: scan order within a context
        coded = [s for c, t in enumerate(tables) for s in decode(context.count(c), t)]
    except QuantileError:
        result.error = "quantile"
        return result
    except (IndexError, ValueError, ZeroDivisionError) as exc:  # syntax that a decoder rejects earlier
        result.error = type(exc).__name__
        return result
    if not d.end_check():
        result.error = "end check"
    result.symbols, result.symbols_v1 = [0] * len(positions), [0] * len(positions)
    for k, s in zip(coding, coded, strict=True):
        result.symbols[k] = s
    for k, s in zip(scan, coded, strict=True):
        result.symbols_v1[k] = s
    result.values = add_raw_bits(result.symbols, raw, q, m)
    result.values_v1 = add_raw_bits(result.symbols_v1, raw, q, m)
    if result.values is None and result.error is None:
        result.error = "raw bits"
    return result


def write_plane(w: W, values: list[list[int]], mask, opt: PlaneOptions, stats: list[PlaneStats],
                name: str = "") -> None:
    """§6.5 level_plane over the grid ``values`` (rows of ints) with ``mask`` (same shape or None)."""
    rows = len(values)
    cols = len(values[0]) if rows else 0
    positions = [(i, j) for i in range(rows) for j in range(cols) if mask is None or mask[i][j]]
    f = opt.fields
    w.u32("value_count", f.get("value_count", len(positions)))
    if not positions and "direct_bits" not in f:
        return
    q, m = opt.q, opt.m
    coded = [binarize(values[i][j], q, m) for i, j in positions]
    symbols = [c[0] for c in coded]
    row_classes = opt.row_classes or [0] * rows
    col_classes = opt.col_classes or [0] * cols
    rcc = opt.row_class_count or max(row_classes) + 1
    ccc = opt.col_class_count or max(col_classes) + 1
    contexts = rcc + ccc - 1
    w.u8("direct_bits", f.get("direct_bits", q))
    w.u8("mantissa_bits", f.get("mantissa_bits", m))
    w.u8("row_class_count", f.get("row_class_count", rcc))
    w.u8("col_class_count", f.get("col_class_count", ccc))
    groups: list[tuple[list[int], Table]] = []
    class_tables: list[Table | None] = [None, None]
    for axis, (prefix, count, classes, given) in enumerate((("row", rcc, row_classes, opt.row_table),
                                                           ("col", ccc, col_classes, opt.col_table))):
        if count > 1:
            t = given or table_for(classes)
            sub = W()
            write_table(sub, t)
            w.extend(sub, f"{prefix}_class_table.")
            groups.append((classes, t))
            class_tables[axis] = t
    # §6.5.1 step 3 (format 2.0): within a context, by row class, then scan order
    order = sorted(range(len(positions)),
                   key=lambda k: (row_classes[positions[k][0]] + col_classes[positions[k][1]],
                                  row_classes[positions[k][0]], k))
    by_context: list[list[int]] = [[] for _ in range(contexts)]
    for k in order:
        i, j = positions[k]
        by_context[row_classes[i] + col_classes[j]].append(symbols[k])
    tables = []
    for c in range(contexts):
        t = (opt.tables or {}).get(c) or table_for(by_context[c], opt.alphabet if by_context[c] else None,
                                                  opt.table_bits)
        sub = W()
        write_table(sub, t)
        w.extend(sub, f"magnitude_table[{c}].")
        groups.append((by_context[c], t))
        tables.append(t)
    # range coding: constriction through nncodec_unify, checked against Appendix B
    tracer = TracingEncoder()
    for syms, t in groups:
        if syms and t.n > 1:
            cdf = cdf_of(t.frequencies)
            for s in syms:
                tracer.encode(s, cdf)
    mine, extra = tracer.finish()
    coded_groups = [(np.array(syms, dtype=np.int32), FrequencyTable(np.array(t.frequencies, dtype=np.int64), t.bits))
                    for syms, t in groups if syms]
    words = [int(x) for x in encode_groups(coded_groups)] if coded_groups else []
    assert words == mine, "Appendix B encoder disagrees with constriction"
    if opt.words is not None:
        words = list(opt.words)
    words = words[:len(words) - opt.drop_words] + list(opt.extra_words)
    w.u32("word_count", f.get("word_count", len(words)))
    w.raw("words", b"".join(x.to_bytes(4, "little") for x in words),
          " ".join(f"{x:08x}" for x in words) if len(words) <= 4 else f"{len(words)} words")
    escapes = sorted((s, k, raw, width) for k, (s, raw, width) in enumerate(coded) if s >= (1 << q))
    raw = opt.raw_bits if opt.raw_bits is not None else pack_bits([(r, wd) for _, _, r, wd in escapes], opt.raw_padding)
    w.u32("raw_byte_count", f.get("raw_byte_count", len(raw)))
    w.raw("raw_bits", raw)
    flat = [values[i][j] for i, j in positions]
    decoded = decode_plane_spec(words, raw, q, m, rows, cols, positions, tuple(class_tables), tables)
    stats.append(PlaneStats(len(words), extra, tracer.carries, tracer.inversions, len(escapes),
                            sum(1 for e in escapes if e[3] == 0), contexts, tracer.max_held, name, flat, decoded))


# ---------------------------------------------------------------------------------------------
# tensors (§5)


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    cols = 1
    for d in shape[1:]:
        cols *= d
    return shape[0], cols


@dataclasses.dataclass
class T:
    """One tensor to write: its header, its coding and its expected canonical bytes."""

    name: str | bytes
    dtype: str
    shape: tuple[int, ...]
    mode: int
    raw: bytes = b""  # RAW: raw_data
    levels: list[int] | None = None  # DENSE/UNIFIED: levels in C order
    qp: int = -32
    density: int = 2
    block: tuple[int, int] = (4, 4)
    kinds: list[list[int]] | None = None  # UNIFIED: explicit block kinds
    offsets: list[int] | None = None  # DENSE/UNIFIED: column offsets (§6.10; None: offset_mode 0)
    planes: dict[str, PlaneOptions] = dataclasses.field(default_factory=dict)
    header: dict[str, int] = dataclasses.field(default_factory=dict)  # invalid: field overrides (alias_count too)
    sign_counts: dict[str, int] = dataclasses.field(default_factory=dict)  # invalid: sign_byte_count
    sign_padding: dict[str, int] = dataclasses.field(default_factory=dict)  # invalid: padding bits
    trailing: bytes = b""  # invalid: bytes after the payload
    offset_mode: int | None = None  # invalid: written instead of 0 or 1
    quant_flags: int | None = None  # format 3.x: written after qp_density (§6.1); None: format 2.x syntax
    unified_writer: object = None  # invalid: writes the unified payload instead of _unified
    content_digest: bytes | None = None  # format 4.x: written instead of the SHA-256 of expected() (§5.2)
    no_digest: bool = False  # invalid: a 4.x tensor_header without content_digest (3.x syntax)
    aliases: list[str | bytes] = dataclasses.field(default_factory=list)  # format 5.x: alias names (§5.2)
    stats: list[PlaneStats] = dataclasses.field(default_factory=list)

    def expected(self, levels: list[int] | None = None) -> dict:
        """The manifest entry; with ``levels``, the entry a decoder that got those levels would compute."""
        name = self.name if isinstance(self.name, str) else self.name.decode("utf-8")
        return {"name": name, "dtype": self.dtype, "shape": list(self.shape), "coding_mode": MODE_NAME[self.mode],
                "sha256": hashlib.sha256(self.canonical(levels)).hexdigest()}

    def entries(self) -> list[dict]:
        """The manifest entries of every name a decoder presents (§4.3): the tensor's, then (5.x) one
        per alias in the order stored, with the same dtype, shape and values and ``alias_of``."""
        entry = self.expected()
        aliases = [a if isinstance(a, str) else a.decode("utf-8") for a in self.aliases]
        return [entry] + [{**entry, "name": alias, "alias_of": entry["name"]} for alias in aliases]

    def digest(self) -> bytes:
        """The content_digest a 4.x tensor_header stores (§5.2): the SHA-256 of the canonical bytes."""
        return self.content_digest if self.content_digest is not None else hashlib.sha256(self.canonical()).digest()

    def canonical(self, levels: list[int] | None = None) -> bytes:
        """§7.3: the canonical bytes of the decoded tensor (of a decoder that got ``levels``)."""
        if self.mode == RAW:
            data = self.raw
        elif self.dtype in INTEGER_DTYPES:  # §7.1.1: step 1, each element is its level
            levels = self.levels if levels is None else levels
            lo, hi = INTEGER_DTYPES[self.dtype]
            assert self.qp == 0 and all(lo <= v <= hi for v in levels), (self.name, "not a valid integer tensor")
            data = ints(levels, ITEM_SIZE[self.dtype], lo < 0)
        else:
            step = step_size(self.qp, self.density)
            levels = self.levels if levels is None else levels
            if self.quant_flags == 1:  # §7.1.2: the multiples of the step the states read
                matrix = np.array(levels, dtype=np.int64)
                multiples = dependent_magnitudes(np.abs(matrix)) * np.sign(matrix)
                values = to_output_type(multiples.astype(np.float32) * np.float32(step), DType(DTYPE[self.dtype]))
            else:
                values = dequantize(np.array(levels, dtype=np.int64).astype(np.int32), step,
                                    DType(DTYPE[self.dtype]))
            if self.dtype == "bfloat16":
                data = (np.ascontiguousarray(values, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
            else:
                data = values.astype(values.dtype.newbyteorder("<")).tobytes()
        return data


def tensor_payload(t: T, major: int = VERSION_MAJOR) -> W:
    """§5.2 tensor_payload as a stream of version ``major`` has it."""
    w = W()
    h = t.header
    _name(w, "name", t.name, h.get("name_length"))
    w.u8("dtype", h.get("dtype", DTYPE[t.dtype]))
    w.u8("ndim", h.get("ndim", len(t.shape)))
    for d in t.shape:
        w.u32("dims", d)
    w.u8("coding_mode", h.get("coding_mode", t.mode))
    if major >= INTEGRITY_MAJOR and not t.no_digest:
        digest = t.digest()
        w.raw("content_digest", digest, digest.hex())
    if major >= ALIAS_MAJOR:
        w.u16("alias_count", h.get("alias_count", len(t.aliases)))
        for alias in t.aliases:
            _name(w, "alias_name", alias)
    if t.mode == RAW:
        w.raw("raw_data", t.raw)
    else:
        w.i16("qp", t.qp)
        w.u8("qp_density", t.density)
        if t.quant_flags is not None or major >= 3:  # §6.1: from format 3.0 (0 unless the case says)
            w.u8("quant_flags", t.quant_flags or 0)
        rows, cols = matrix_shape(t.shape)
        levels = [t.levels[r * cols:(r + 1) * cols] for r in range(rows)] if rows * cols else []
        if t.mode == DENSE:
            _dense(w, t, levels, rows, cols)
        else:
            (t.unified_writer or _unified)(w, t, levels, rows, cols)
    if t.trailing:
        w.raw("trailing", t.trailing)
    return w


def _name(w: W, element: str, name: str | bytes, length: int | None = None) -> None:
    """§5.2 ``name_length`` and ``name`` (or ``alias_name_length`` and ``alias_name``): UTF-8 unless
    given as bytes; ``length`` (invalid streams) is written instead of the true length."""
    raw = name.encode("utf-8") if isinstance(name, str) else name
    w.u16(f"{element}_length", len(raw) if length is None else length)
    w.raw(element, raw, repr(raw.decode("utf-8", "replace")) if len(raw) <= 40 else f"{len(raw)} bytes")


def _signs(w: W, t: T, section: str, negative: list[bool]) -> None:
    packed = pack_bits([(int(n), 1) for n in negative], t.sign_padding.get(section, 0))
    w.u32(f"{section}.sign_byte_count", t.sign_counts.get(section, len(packed)))
    w.raw(f"{section}.sign_bits", packed)


def _plane(w: W, t: T, name: str, grid, mask) -> None:
    sub = W()
    write_plane(sub, grid, mask, t.planes.get(name, PlaneOptions()), t.stats, name)
    w.extend(sub, f"{name}.")


def zigzag(v: int) -> int:
    """§6.10: an offset's code (0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4, ...)."""
    return 2 * v if v >= 0 else -2 * v - 1


def column_offsets(t: T, cols: int) -> list[int]:
    """The offset of every matrix column (0s for offset_mode 0)."""
    if t.offsets is None:
        return [0] * cols
    assert len(t.offsets) == cols, (t.name, len(t.offsets), cols)
    return list(t.offsets)


def residuals(t: T, levels, cols: int, dense_mask=None) -> list[list[int]]:
    """§5.5, §5.6, §6.10: the grid with each dense element's level less its column's offset
    (elements outside ``dense_mask`` unchanged)."""
    off = column_offsets(t, cols)
    return [[v - off[c] if dense_mask is None or dense_mask[r][c] else v for c, v in enumerate(row)]
            for r, row in enumerate(levels)]


def _offsets(w: W, t: T, cols: int) -> None:
    """§6.10 dense_offsets(cols)."""
    w.u8("offset_mode", t.offset_mode if t.offset_mode is not None else int(t.offsets is not None))
    if t.offsets is not None:
        _plane(w, t, "column_offsets", [[zigzag(o) for o in column_offsets(t, cols)]], None)


def _dense(w: W, t: T, levels, rows: int, cols: int) -> None:
    _offsets(w, t, cols)
    res = residuals(t, levels, cols)
    _plane(w, t, "dense_levels", [[abs(v) for v in row] for row in res] if rows * cols else [], None)
    _signs(w, t, "dense_signs", [v < 0 for row in res for v in row if v])


def decoded_planes(t: T) -> dict[str, PlaneStats]:
    """Write ``t`` and return its non-empty planes, each decoded by §6.5.1 as written."""
    t.stats = []
    tensor_payload(t)
    planes, t.stats = {p.name: p for p in t.stats}, []
    return planes


def check_planes(t: T) -> None:
    """Every plane of a valid tensor decodes, by the letter of §6.5.1 and §6.9, to what was coded."""
    for name, p in decoded_planes(t).items():
        d = p.decoded
        assert d.error is None and d.values == p.values, f"{t.name!r}.{name}: {d.error}"


def levels_under_v1_order(t: T) -> list[int]:
    """The levels a decoder that assigns each context's symbols in scan order (format 1.0's §6.5.1
    step 3) would reconstruct from ``t``'s stream, with the same words, raw bits and sign bits."""
    planes = decoded_planes(t)
    rows, cols = matrix_shape(t.shape)
    grid = [t.levels[r * cols:(r + 1) * cols] for r in range(rows)]
    off = column_offsets(t, cols)
    if "column_offsets" in planes:
        codes = planes["column_offsets"].decoded.values_v1
        off = [c // 2 if c % 2 == 0 else -(c + 1) // 2 for c in codes]
    if t.mode == DENSE:
        if "dense_levels" not in planes:
            return list(t.levels)
        res = [v for row in residuals(t, grid, cols) for v in row]
        mags = planes["dense_levels"].decoded.values_v1
        signs = iter([v < 0 for v in res if v])
        return [(-v if v and next(signs) else v) + off[k % cols] for k, v in enumerate(mags)]
    assert t.mode == UNIFIED and t.unified_writer is None
    br, bc = t.block
    kinds = t.kinds or block_kinds(grid, rows, cols, br, bc)
    if "block_map" in planes:  # a different block map would change the masks: not modelled here
        assert planes["block_map"].decoded.values_v1 == planes["block_map"].values, "block map order-dependent"
    out = [row[:] for row in grid]
    if "unified_magnitudes" in planes:
        mags = iter(planes["unified_magnitudes"].decoded.values_v1)
        block_mag = {(a, b): next(mags) + 1 for a in range(len(kinds)) for b in range(len(kinds[0]))
                     if kinds[a][b] == K_UNIFIED}
        for r in range(rows):
            for c in range(cols):
                if (r // br, c // bc) in block_mag:
                    out[r][c] = -block_mag[r // br, c // bc] if grid[r][c] < 0 else block_mag[r // br, c // bc]
    dense = [(r, c) for r in range(rows) for c in range(cols) if kinds[r // br][c // bc] == K_DENSE]
    res = residuals(t, grid, cols)
    signs = iter([res[r][c] < 0 for r, c in dense if res[r][c]])
    mags = planes["dense_levels"].decoded.values_v1 if "dense_levels" in planes else [0] * len(dense)
    for (r, c), v in zip(dense, mags, strict=True):
        out[r][c] = (-v if v and next(signs) else v) + off[c]
    return [v for row in out for v in row]


def assert_order_matters(t: T, *planes: str) -> None:
    """The named planes decode to other values, and the tensor to another hash, if each context's
    symbols are assigned in scan order (format 1.0) instead of coding order."""
    decoded = decoded_planes(t)
    for name in planes:
        d = decoded[name].decoded
        assert d.symbols != d.symbols_v1 and d.values_v1 != decoded[name].values, name
    assert t.expected(levels_under_v1_order(t))["sha256"] != t.expected()["sha256"]


def block_kinds(levels, rows: int, cols: int, br: int, bc: int) -> list[list[int]]:
    """§6.3's recommended derivation."""
    gr, gc = -(-rows // br), -(-cols // bc)
    kinds = []
    for a in range(gr):
        row = []
        for b in range(gc):
            mags = {abs(levels[r][c]) for r in range(a * br, min(rows, (a + 1) * br))
                    for c in range(b * bc, min(cols, (b + 1) * bc))}
            row.append(K_PRUNED if mags == {0} else K_UNIFIED if len(mags) == 1 else K_DENSE)
        kinds.append(row)
    return kinds


def _unified(w: W, t: T, levels, rows: int, cols: int) -> None:
    br, bc = t.block
    w.u8("block_rows", t.header.get("block_rows", br))
    w.u8("block_cols", t.header.get("block_cols", bc))
    if rows * cols == 0:
        gr, gc = -(-rows // br), -(-cols // bc)
        for name in ("block_map", "unified_magnitudes"):
            _plane(w, t, name, [[0] * gc for _ in range(gr)] if gr * gc else [], None if gr * gc else [])
        _signs(w, t, "unified_signs", [])
        _offsets(w, t, cols)
        _plane(w, t, "dense_levels", [], [])
        _signs(w, t, "dense_signs", [])
        return
    kinds = t.kinds or block_kinds(levels, rows, cols, br, bc)
    gr, gc = len(kinds), len(kinds[0])
    _plane(w, t, "block_map", kinds, None)
    unified = [[k == K_UNIFIED for k in row] for row in kinds]
    mags = [[0] * gc for _ in range(gr)]
    for a in range(gr):
        for b in range(gc):
            if unified[a][b]:
                block = {abs(levels[r][c]) for r in range(a * br, min(rows, (a + 1) * br))
                         for c in range(b * bc, min(cols, (b + 1) * bc))}
                assert len(block) == 1 and 0 not in block, "a UNIFIED block needs one non-zero magnitude"
                mags[a][b] = block.pop() - 1
            elif kinds[a][b] == K_PRUNED:
                assert all(levels[r][c] == 0 for r in range(a * br, min(rows, (a + 1) * br))
                           for c in range(b * bc, min(cols, (b + 1) * bc)))
    _plane(w, t, "unified_magnitudes", mags, unified)
    kind_of = [[kinds[r // br][c // bc] for c in range(cols)] for r in range(rows)]
    _signs(w, t, "unified_signs", [levels[r][c] < 0 for r in range(rows) for c in range(cols)
                                   if kind_of[r][c] == K_UNIFIED])
    dense_mask = [[k == K_DENSE for k in row] for row in kind_of]
    _offsets(w, t, cols)
    res = residuals(t, levels, cols, dense_mask)
    _plane(w, t, "dense_levels", [[abs(v) for v in row] for row in res], dense_mask)
    _signs(w, t, "dense_signs", [res[r][c] < 0 for r in range(rows) for c in range(cols)
                                 if dense_mask[r][c] and res[r][c]])


# ---------------------------------------------------------------------------------------------
# units and streams (§4)


@dataclasses.dataclass
class Unit:
    unit_type: int
    payload: W
    flags: int = 0
    crc_xor: int = 0  # invalid: corrupt the CRC
    length: int | None = None  # invalid: declared payload_length


def model_header(count: int, extra: bytes = b"") -> Unit:
    w = W()
    w.u32("tensor_count", count)
    if extra:
        w.raw("trailing", extra)
    return Unit(1, w)


def attached(path: str | bytes, content: bytes, *, critical: bool = False, path_length: int | None = None) -> Unit:
    """An ATTACHED_FILE unit (§5.7, format 3.1)."""
    raw = path.encode("utf-8") if isinstance(path, str) else path
    w = W()
    w.u16("path_length", len(raw) if path_length is None else path_length)
    w.raw("path", raw, repr(raw))
    if content:
        w.raw("content", content)
    return Unit(3, w, flags=0 if critical else 1)


def ancillary(unit_type: int, payload: bytes) -> Unit:
    w = W()
    w.raw("payload", payload)
    return Unit(unit_type, w, flags=1)


def tensor_unit(t: T, major: int = VERSION_MAJOR) -> Unit:
    return Unit(2, tensor_payload(t, major))


@dataclasses.dataclass
class End:
    """The STREAM_END unit of a 4.x stream (§5.8). Its fields are computed from the units before it
    (or from ``like``: the units of the stream that an invalid stream was made from); the other
    fields are overrides for invalid streams."""

    unit_count: int | None = None
    model_digest: bytes | None = None
    stream_digest: bytes | None = None
    like: list[Unit] | None = None
    trailing: bytes = b""  # bytes after stream_digest, inside the payload
    flags: int = 0
    crc_xor: int = 0


def tensor_records(u: Unit, aliases: bool = True) -> list[bytes]:
    """§5.8 tensor_record of a TENSOR unit: its tensor_header without coding_mode (and without the
    alias names), as stored; then (5.x) the record of each alias name, the same with
    ``alias_name_length`` and ``alias_name`` in place of ``name_length`` and ``name``.
    ``aliases=False`` leaves the alias records out (invalid streams)."""
    p = u.payload

    def stored(element: str, occurrence: int = 0) -> bytes:
        f = p.find(element, occurrence)
        return bytes(p.buf[f.offset:f.offset + f.size])

    digest = stored("content_digest") if any(f.element == "content_digest" for f in p.fields) else b""
    rest = bytes(p.buf[p.find("dtype").offset:p.find("coding_mode").offset]) + digest  # dtype, ndim, dims
    names = [stored("name_length") + stored("name")]
    if aliases:
        names += [stored("alias_name_length", k) + stored("alias_name", k)
                  for k in range(sum(f.element == "alias_name" for f in p.fields))]
    return [name + rest for name in names]


def model_digest(units: list[Unit], aliases: bool = True) -> bytes:
    """§5.8: the SHA-256 of the tensor_records of the (critical) TENSOR units, in stream order, each
    tensor's alias records (5.x) right after its own."""
    return hashlib.sha256(b"".join(record for u in units if u.unit_type == 2 and not u.flags & 1
                                   for record in tensor_records(u, aliases))).digest()


def stream_end_unit(units: list[Unit], end: End, *, major: int, minor: int, flags: int) -> Unit:
    """The STREAM_END unit after ``units`` (§5.8): unit_count, model_digest, stream_digest."""
    like = end.like if end.like is not None else units
    before = assemble(like, major=major, minor=minor, flags=flags, end=False).bytes()
    w = W()
    w.u32("unit_count", len(like) if end.unit_count is None else end.unit_count)
    for element, digest in (("model_digest", end.model_digest or model_digest(like)),
                            ("stream_digest", end.stream_digest or hashlib.sha256(before).digest())):
        w.raw(element, digest, digest.hex())
    if end.trailing:
        w.raw("trailing", end.trailing)
    return Unit(STREAM_END, w, flags=end.flags, crc_xor=end.crc_xor)


def assemble(units: list[Unit], *, major: int = VERSION_MAJOR, minor: int = 0, flags: int = 0,
             end: End | bool | None = None) -> W:
    """The file header and ``units``; in a stream of major version 4 or later, then a STREAM_END
    unit (§5.8) unless ``end`` is False (``None``: by the version; an ``End``: with its overrides)."""
    if end is None:
        end = major >= INTEGRITY_MAJOR
    if end is True:
        end = End()
    if end:
        units = list(units) + [stream_end_unit(units, end, major=major, minor=minor, flags=flags)]
    w = W()
    w.raw("magic", MAGIC, "89 4e 4e 55 0d 0a 1a 0a")
    w.u8("version_major", major)
    w.u8("version_minor", minor)
    w.u16("header_flags", flags)
    for u in units:
        start = len(w.buf)
        w.u8("unit_type", u.unit_type)
        w.u8("unit_flags", u.flags)
        w.u32("payload_length", u.payload.buf.__len__() if u.length is None else u.length)
        w.extend(u.payload)
        crc = zlib.crc32(bytes(w.buf[start:])) ^ u.crc_xor
        w.u32("unit_crc", crc)
    return w


def stream_units(tensors: list[T], *, extra_units: dict[int, list[Unit]] | None = None, major: int = VERSION_MAJOR,
                 tensor_count: int | None = None) -> list[Unit]:
    """A model header and one unit per tensor; ``extra_units[i]`` go before tensor i."""
    units = [model_header(len(tensors) if tensor_count is None else tensor_count)]
    for i, t in enumerate(tensors):
        units += (extra_units or {}).get(i, [])
        units.append(tensor_unit(t, major))
    units += (extra_units or {}).get(len(tensors), [])
    return units


def stream(tensors: list[T], *, extra_units: dict[int, list[Unit]] | None = None, tensor_count: int | None = None,
           **kw) -> W:
    """A stream with a model header and one unit per tensor; ``extra_units[i]`` go before tensor i
    (``extra_units[len(tensors)]`` after the last, before STREAM_END in a 4.x stream)."""
    units = stream_units(tensors, extra_units=extra_units, major=kw.get("major", VERSION_MAJOR),
                         tensor_count=tensor_count)
    return assemble(units, **kw)


def attached_files_of(data: bytes) -> list[dict]:
    """The attached files (§5.7) of a valid stream, read from its unit framing alone: every
    ancillary unit of type 3 in a stream of version 3.1 or later, in order, as the manifest
    lists them (path, size and SHA-256 of the content)."""
    major, minor = data[8], data[9]
    files: list[dict] = []
    at = 12
    while at < len(data):
        unit_type, flags, length = data[at], data[at + 1], int.from_bytes(data[at + 2:at + 6], "little")
        payload = data[at + 6:at + 6 + length]
        if unit_type == 3 and flags & 1 and (major, minor) >= (3, 1):
            path_length = int.from_bytes(payload[:2], "little")
            content = payload[2 + path_length:]
            files.append({"path": payload[2:2 + path_length].decode("utf-8"), "bytes": len(content),
                          "sha256": hashlib.sha256(content).hexdigest()})
        at += 6 + length + 4
    return files


def _unit_start(w: W, offset: int) -> int:
    """The offset of the unit of ``w`` that holds byte ``offset``."""
    return max(f.offset for f in w.fields if f.element == "unit_type" and f.offset <= offset)


def _last_unit_start(w: W) -> int:
    return max(f.offset for f in w.fields if f.element == "unit_type")


def reseal(data: bytes) -> bytes:
    """In a 4.x or 5.x stream that ends with a 68-byte STREAM_END unit, recompute its unit_count,
    model_digest (from the tensor headers as they now are, alias names included) and stream_digest, and its CRC, after
    a unit before it was edited (§5.8): the edit stays the stream's one defect."""
    if len(data) < 12 or data[8] < INTEGRITY_MAJOR:
        return data
    at, units = 12, []
    while at + 6 <= len(data):
        length = int.from_bytes(data[at + 2:at + 6], "little")
        units.append((at, data[at], data[at + 1], data[at + 6:at + 6 + length]))
        at += 10 + length
    if at != len(data) or not units or units[-1][1] != STREAM_END or len(units[-1][3]) != 68:
        return data
    start, _, _, old = units[-1]
    model = old[4:36]
    try:  # a tensor header cut short has no record: the model digest is then kept as it was
        records = []
        for _, unit_type, flags, payload in units[:-1]:
            if unit_type == 2 and not flags & 1:
                n = int.from_bytes(payload[:2], "little")
                mode_at = 4 + n + 4 * payload[3 + n]
                assert len(payload) >= mode_at + 33
                rest = payload[2 + n:mode_at] + payload[mode_at + 1:mode_at + 33]
                names, at = [payload[:2 + n]], mode_at + 33
                if data[8] >= ALIAS_MAJOR:  # §5.8: an alias's record is the tensor's under its name
                    for _ in range(int.from_bytes(payload[at:at + 2], "little")):
                        n = int.from_bytes(payload[at + 2:at + 4], "little")
                        assert len(payload) >= at + 4 + n
                        names.append(payload[at + 2:at + 4 + n])
                        at += 2 + n
                records += [name + rest for name in names]
        model = hashlib.sha256(b"".join(records)).digest()
    except (IndexError, AssertionError):
        pass
    payload = (len(units) - 1).to_bytes(4, "little") + model + hashlib.sha256(data[:start]).digest()
    header = data[start:start + 6]
    return data[:start] + header + payload + zlib.crc32(header + payload).to_bytes(4, "little")


def patch(w: W, element: str, value: bytes, occurrence: int = 0) -> bytes:
    """Overwrite a field and recompute the CRCs (and, in a 4.x stream, the STREAM_END unit,
    unless the field is in it)."""
    data = bytearray(w.bytes())
    f = w.find(element, occurrence)
    data[f.offset:f.offset + len(value)] = value
    data = refresh_crcs(w, bytes(data))
    return reseal(data) if _unit_start(w, f.offset) != _last_unit_start(w) else data


def refresh_crcs(w: W, data: bytes) -> bytes:
    """Recompute every unit's CRC (the layout of ``w`` must still hold)."""
    data = bytearray(data)
    for k, f in enumerate(w.fields):
        if f.element == "unit_crc":
            start = max(g.offset for g in w.fields[:k] if g.element == "unit_type")
            data[f.offset:f.offset + 4] = zlib.crc32(bytes(data[start:f.offset])).to_bytes(4, "little")
    return bytes(data)


def cut_inside(w: W, element: str, occurrence: int = 0, keep: int | None = None) -> bytes:
    """Cut the payload of the unit that holds ``element`` inside it (its first ``keep`` bytes
    kept, default all but one) and reframe the unit (length and CRC), so the parser meets the end
    of the payload there; the units after it stay (in a 4.x stream, the STREAM_END resealed)."""
    f = w.find(element, occurrence)
    start = _unit_start(w, f.offset)
    keep = f.size - 1 if keep is None else keep
    data = w.bytes()
    end = start + 10 + int.from_bytes(data[start + 2:start + 6], "little")
    payload = data[start + 6:f.offset + keep]
    header = data[start:start + 2] + len(payload).to_bytes(4, "little")
    data = data[:start] + header + payload + zlib.crc32(header + payload).to_bytes(4, "little") + data[end:]
    return reseal(data) if start != _last_unit_start(w) else data


# ---------------------------------------------------------------------------------------------
# the cases


@dataclasses.dataclass
class Case:
    slug: str
    description: str
    sections: list[str]
    data: bytes
    tensors: list[T] | None = None  # valid streams
    error: tuple[str, str] | None = None  # invalid streams: (category, element)
    limits: dict[str, int] | None = None
    layout: W | None = None
    mentions: str | None = None  # invalid streams: what the reference decoder's message must name



def f32_bits(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in values)


def ints(values: list[int], size: int, signed: bool) -> bytes:
    return b"".join(v.to_bytes(size, "little", signed=signed) for v in values)


def levels_grid(rng: Rng, rows: int, cols: int, scale: int) -> list[int]:
    return rng.laplace_levels(rows * cols, scale)


def valid_cases() -> list[Case]:
    cases: list[Case] = []

    def add(slug, description, sections, tensors, *, limits=None, extra_units=None, **kw):
        for t in tensors:
            check_planes(t)
        w = stream(tensors, extra_units=extra_units, **kw)
        cases.append(Case(slug, description, sections, w.bytes(), tensors=tensors, limits=limits, layout=w))

    rng = Rng(2024)
    add("empty-model", "a model header with tensor_count 0 and nothing else: the smallest valid stream",
        ["4.1", "4.2", "4.3", "5.1"], [])
    add("raw-int8-tiny", "one RAW int8 tensor of shape (3,): the first example of spec/examples.md",
        ["5.2", "5.4"], [T("w", "int8", (3,), RAW, ints([-128, 0, 127], 1, True))])
    dense_tiny = T("w", "float32", (2, 2), DENSE, levels=[0, 3, -1, 0], qp=-8, density=2,
                   planes={"dense_levels": PlaneOptions(q=2, m=0)})
    add("dense-tiny", "one DENSE float32 2x2 tensor, single context: the second example of spec/examples.md",
        ["5.5", "6.1", "6.5", "6.6", "6.8", "6.9", "7.1"], [dense_tiny])

    # RAW of every dtype, with extreme and special values
    specials32 = [0x00000000, 0x80000000, 0x3F800000, 0xBFC00000, 0x7F800000, 0xFF800000, 0x7FC00000,
                  0x7FA00001, 0xFFFFFFFF, 0x00000001, 0x807FFFFF, 0x7F7FFFFF]
    raw_sets = {
        "float32": (specials32, 4, False, (3, 4)),
        "float16": ([0x0000, 0x8000, 0x3C00, 0x7C00, 0xFC00, 0x7E00, 0x7D01, 0x0001, 0x83FF, 0x7BFF, 0xFFFF, 0x3555],
                    2, False, (2, 2, 3)),
        "bfloat16": ([0x0000, 0x8000, 0x3F80, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0x0001, 0x807F, 0x7F7F, 0xFFFF, 0x3EAB],
                     2, False, (12,)),
        "float64": ([0, 1 << 63, 0x3FF0000000000000, 0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000,
                     0x7FF0000000000001, 1, 0x800FFFFFFFFFFFFF, 0x7FEFFFFFFFFFFFFF], 8, False, (5, 2)),
        "int8": ([-128, -1, 0, 1, 127], 1, True, (5,)),
        "int16": ([-32768, -1, 0, 1, 32767, 258], 2, True, (2, 3)),
        "int32": ([-(1 << 31), -1, 0, 1, (1 << 31) - 1, 0x01020304], 4, True, (6, 1)),
        "int64": ([-(1 << 63), -1, 0, 1, (1 << 63) - 1, 0x0102030405060708], 8, True, (3, 2)),
        "uint8": ([0, 1, 127, 128, 255], 1, False, (5,)),
        "bool": ([0, 1, 1, 0, 1, 0], 1, False, (2, 3)),
        "uint16": ([0, 1, 0x8000, 0xFFFF], 2, False, (4,)),
        "uint32": ([0, 1, 0x80000000, 0xFFFFFFFF], 4, False, (2, 2)),
        "uint64": ([0, 1, 1 << 63, M64], 8, False, (1, 4)),
    }
    for dtype, (values, size, signed, shape) in raw_sets.items():
        add(f"raw-{dtype}", f"RAW {dtype}{list(shape)}: extreme values"
            + (", NaN payloads, infinities, signed zeros, subnormals (bits kept exactly)"
               if dtype.startswith(("f", "b")) and dtype != "bool" else ""),
            ["5.2", "5.4", "7.3"], [T(f"{dtype}.tensor", dtype, shape, RAW, ints(values, size, signed))])
    add("raw-shapes", "RAW tensors of rank 0 (a scalar), rank 8 (the default max_ndim), empty shapes (0,) and "
        "(2,0,3), and an empty tensor with a dimension of 2**32-1",
        ["5.2", "5.4", "8"],
        [T("scalar", "float32", (), RAW, f32_bits([0x40490FDB])),
         T("rank8", "int16", (1, 2, 1, 1, 2, 1, 1, 1), RAW, ints([1, -2, 3, -4], 2, True)),
         T("empty", "float64", (0,), RAW, b""),
         T("empty3", "uint8", (2, 0, 3), RAW, b""),
         T("empty-huge", "float32", (0, 0xFFFFFFFF), RAW, b"")])

    # DENSE
    lv = levels_grid(rng, 6, 9, 3)
    add("dense-single-context", "DENSE float32 6x9, direct_bits 3, mantissa_bits 1, one context, escapes with raw bits",
        ["5.5", "6.4", "6.5", "6.7", "6.8", "7.1"],
        [T("layer.weight", "float32", (6, 9), DENSE, levels=lv, qp=-20, planes=dl(q=3, m=1))])
    lv = levels_grid(rng, 12, 16, 4)
    rc = [i % 3 for i in range(12)]
    cc = [(j // 3) % 4 for j in range(16)]
    add("dense-row-and-column-classes", "DENSE 12x16 with 3 row classes and 4 column classes: 6 contexts, "
        "class tables, symbols grouped by context, then by row class (coding order)",
        ["5.5", "6.5", "6.5.1", "6.6"],
        [T("ctx", "float32", (12, 16), DENSE, levels=lv, qp=-12,
           planes={"dense_levels": PlaneOptions(q=2, m=1, row_classes=rc, col_classes=cc)})])
    order = Rng(20)
    lv = order.laplace_levels(6 * 10, 3)
    t = T("order", "float32", (6, 10), DENSE, levels=lv, qp=-16,
          planes=dl(q=2, m=1, row_classes=[1, 0, 1, 2, 0, 2], col_classes=[0, 2, 1, 0, 1, 2, 0, 1, 2, 0]))
    assert_order_matters(t, "dense_levels")
    add("dense-coding-order", "DENSE 6x10 whose contexts 1, 2 and 3 hold rows of two or three row classes "
        "interleaved in scan order: each context's symbols go by row class, then scan order (§6.5.1 step 3), "
        "so a decoder using scan order alone gets other levels",
        ["6.5", "6.5.1"], [t])
    lv = levels_grid(rng, 5, 8, 2)
    add("dense-classes-with-empty-contexts", "DENSE 5x8 with row_class_count 5 and col_class_count 4 but few "
        "contexts used: empty contexts have one-symbol magnitude tables; a class table whose alphabet is "
        "smaller than its class count",
        ["6.5", "6.5.1", "6.6"],
        [T("sparse-ctx", "float32", (5, 8), DENSE, levels=lv,
           planes={"dense_levels": PlaneOptions(q=2, m=0, row_classes=[0, 0, 2, 2, 0], col_classes=[1] * 8,
                                                 row_class_count=5, col_class_count=4)})])
    big = [0, 1, 2, 3, 4, 5, 7, 8, 100, 1000, 65535, 65536, (1 << 24) + 1, (1 << 30), (1 << 31) - 1, 6]
    lv = [v if k % 2 else -v for k, v in enumerate(big)]
    add("dense-escapes-q0", "DENSE with direct_bits 0 and mantissa_bits 0: every non-zero magnitude escapes; "
        "levels up to 2**31-1 (the largest), raw bits of every width; float32(level) rounds for |level| > 2**24",
        ["6.4", "6.7", "7.1"],
        [T("escapes", "float32", (4, 4), DENSE, levels=lv, qp=-124, density=0,
           planes={"dense_levels": PlaneOptions(q=0, m=0)})])
    vals = [0, 255, 256, 257, 511, 4095, 4096, 99999, (1 << 24) - 1, (1 << 29) + 12345, (1 << 31) - 1, 300]
    add("dense-escapes-q8-m4", "DENSE with direct_bits 8 and mantissa_bits 4, the largest binarization "
        "(624 symbols): the magnitude table has the maximum alphabet, most frequencies zero",
        ["6.4", "6.6", "6.7"],
        [T("q8m4", "float32", (12,), DENSE, levels=[-v if k % 3 == 0 else v for k, v in enumerate(vals)], qp=-40,
           planes={"dense_levels": PlaneOptions(q=8, m=4, alphabet=magnitude_alphabet(8, 4))})])
    add("dense-zero-width-escapes", "escape symbols whose raw width is 0 (direct_bits = mantissa_bits = 2, "
        "magnitudes 4..7): raw_byte_count 0 although escapes occur",
        ["6.4", "6.7"],
        [T("zw", "float32", (2, 4), DENSE, levels=[4, -5, 6, 7, 0, 1, -3, 4],
           planes={"dense_levels": PlaneOptions(q=2, m=2)})])
    add("dense-all-zero", "DENSE 3x7 of zeros: a one-symbol table, no words, no signs",
        ["5.5", "6.5.1", "6.6", "6.9.4"],
        [T("zeros", "float32", (3, 7), DENSE, levels=[0] * 21)])
    add("dense-scalar-vector-empty", "DENSE tensors of rank 0 (1x1 matrix), rank 1 (1xN), and empty shapes "
        "(0,), (3,0) and (4294967295,0): an empty plane is its value_count",
        ["5.5", "6.2", "6.5"],
        [T("s", "float32", (), DENSE, levels=[-7], qp=-10, planes={"dense_levels": PlaneOptions(q=1, m=1)}),
         T("v", "float32", (5,), DENSE, levels=[1, 0, -2, 3, 0]),
         T("e0", "float32", (0,), DENSE, levels=[]),
         T("e1", "float32", (3, 0), DENSE, levels=[]),
         T("e2", "float16", (0xFFFFFFFF, 0), DENSE, levels=[])])

    # UNIFIED
    def unified_levels(rows, cols, br, bc, kinds, rng, scale=3):
        lv = [[0] * cols for _ in range(rows)]
        for a in range(len(kinds)):
            for b in range(len(kinds[0])):
                cells = [(r, c) for r in range(a * br, min(rows, (a + 1) * br))
                         for c in range(b * bc, min(cols, (b + 1) * bc))]
                if kinds[a][b] == K_UNIFIED:
                    m = 1 + rng.below(5)
                    for r, c in cells:
                        lv[r][c] = m if rng.below(2) else -m
                elif kinds[a][b] == K_DENSE:
                    vals = rng.laplace_levels(len(cells), scale)
                    if len({abs(v) for v in vals}) < 2:
                        vals[0] = abs(vals[0]) + 1
                        vals[-1] = 0
                    for (r, c), v in zip(cells, vals, strict=True):
                        lv[r][c] = v
        return [v for row in lv for v in row]

    kinds = [[K_UNIFIED, K_PRUNED, K_DENSE], [K_DENSE, K_UNIFIED, K_PRUNED], [K_PRUNED, K_DENSE, K_UNIFIED]]
    add("unified-three-kinds-partial-edges", "UNIFIED 7x10 in 3x4 blocks (grid 3x3, partial bottom and right "
        "blocks) with all three block kinds; unified_signs in matrix scan order",
        ["5.6", "6.2", "6.3", "6.5", "6.8"],
        [T("fc.weight", "float32", (7, 10), UNIFIED, levels=unified_levels(7, 10, 3, 4, kinds, rng), block=(3, 4),
           qp=-30, planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=1, m=1),
                           "dense_levels": PlaneOptions(q=2, m=1)})])
    kinds = [[(a + 2 * b) % 3 for b in range(4)] for a in range(3)]
    add("unified-conv4d", "UNIFIED convolution weight (6,3,3,3) viewed as 6x27 in 2x7 blocks (grid 3x4, partial "
        "right column)",
        ["5.6", "6.2"],
        [T("conv1.weight", "float32", (6, 3, 3, 3), UNIFIED, levels=unified_levels(6, 27, 2, 7, kinds, rng),
           block=(2, 7), planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=3),
                                 "dense_levels": PlaneOptions(q=3)})])
    lv = levels_grid(rng, 5, 6, 2)
    add("unified-all-dense", "UNIFIED where every block is DENSE: the block map is a constant (one-symbol, no "
        "words), no unified magnitudes, no unified signs, the dense plane covers every element",
        ["5.6", "6.3", "6.5.1"],
        [T("all-dense", "float32", (5, 6), UNIFIED, levels=lv, block=(2, 2), kinds=[[K_DENSE] * 3 for _ in range(3)],
           planes={"dense_levels": PlaneOptions(q=2)})])
    add("unified-all-pruned", "UNIFIED of zeros: every block PRUNED (block map symbols 2 only), empty unified and "
        "dense planes",
        ["5.6", "6.3"],
        [T("all-pruned", "float32", (4, 8), UNIFIED, levels=[0] * 32, block=(2, 4),
           planes={"block_map": PlaneOptions(q=2)})])
    lv = [(-1 if rng.below(2) else 1) for _ in range(6 * 8)]
    add("unified-all-magnitude-one", "UNIFIED where every block is UNIFIED with magnitude 1: unified_magnitudes "
        "stores 0 for each (a one-symbol table), only signs vary",
        ["5.6", "6.3", "6.5"],
        [T("ones", "float32", (6, 8), UNIFIED, levels=lv, block=(3, 4), planes={"block_map": PlaneOptions(q=1)})])
    lv = [0, 0, 5, 5, 5, 5, 0, 0, -2, 2, 3, 1] + [0, 0, 5, -5, 5, 5, 0, 0, 2, 2, 1, 1]
    add("unified-noncanonical-kinds", "UNIFIED with DENSE blocks that an encoder would call PRUNED or UNIFIED (all "
        "zero, all equal): valid, decoded as coded",
        ["6.3"],
        [T("noncanonical", "float32", (2, 12), UNIFIED, levels=lv, block=(2, 2),
           kinds=[[K_DENSE, K_DENSE, K_UNIFIED, K_PRUNED, K_DENSE, K_DENSE]],
           planes={"block_map": PlaneOptions(q=1), "dense_levels": PlaneOptions(q=3)})])
    lv1 = levels_grid(rng, 3, 4, 1)
    lv2 = [[-3, 3, 3, -3, 3, 3], [3, 3, -3, 3, 3, 3], [3, -3, 3, 3, 3, 3], [3, 3, 3, 3, 3, -3], [-3, 3, 3, 3, 3, 3]]
    add("unified-extreme-block-shapes", "UNIFIED with 1x1 blocks (every element a block) and with 255x255 blocks "
        "(one partial block larger than the 5x6 matrix)",
        ["5.6", "6.2"],
        [T("b1x1", "float32", (3, 4), UNIFIED, levels=lv1, block=(1, 1), planes={"block_map": PlaneOptions(q=2)}),
         T("b255", "float32", (5, 6), UNIFIED, levels=[v for row in lv2 for v in row], block=(255, 255))])
    add("unified-scalar-vector-empty", "UNIFIED tensors of rank 0, rank 1 (1x9 in 1x4 blocks), and empty shapes "
        "(0,4), (3,0), (0,4294967295) and (4294967295,0) in 2x2 blocks",
        ["5.6", "6.2", "6.5"],
        [T("s", "bfloat16", (), UNIFIED, levels=[-9], block=(2, 2)),
         T("v", "float32", (9,), UNIFIED, levels=[2, -2, 2, 2, 0, 0, 0, 0, 7], block=(1, 4),
           planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=2)}),
         T("e0", "float32", (0, 4), UNIFIED, levels=[], block=(2, 2)),
         T("e1", "float32", (3, 0), UNIFIED, levels=[], block=(2, 2)),
         T("e2", "float32", (0, 0xFFFFFFFF), UNIFIED, levels=[], block=(2, 2)),
         T("e3", "float64", (0xFFFFFFFF, 0), UNIFIED, levels=[], block=(2, 2))])
    kinds = [[(a * 7 + b * 3 + (a * b) % 5) % 3 if a != 4 and b != 4 else 1 + (a + b) % 2 for b in range(6)]
             for a in range(5)]
    lv = unified_levels(10, 18, 2, 3, kinds, rng, scale=5)
    add("unified-planes-with-contexts", "UNIFIED 10x18 in 2x3 blocks where every plane has classes: the block map "
        "and unified magnitudes over the 5x6 grid, the masked dense plane over the matrix (rows and columns without "
        "dense elements still carry classes)",
        ["5.6", "6.5", "6.5.1"],
        [T("ctx", "float32", (10, 18), UNIFIED, levels=lv, block=(2, 3),
           planes={"block_map": PlaneOptions(q=2, row_classes=[0, 1, 1, 0, 2], col_classes=[0, 0, 1, 1, 0, 1]),
                   "unified_magnitudes": PlaneOptions(q=2, m=1, row_classes=[1, 0, 1, 0, 1], col_classes=[0] * 6),
                   "dense_levels": PlaneOptions(q=3, m=2, row_classes=[r % 4 for r in range(10)],
                                                col_classes=[(c // 2) % 3 for c in range(18)])})])
    order = Rng(21)
    kinds = [[K_DENSE, K_UNIFIED, K_DENSE, K_PRUNED, K_DENSE, K_UNIFIED],
             [K_UNIFIED, K_DENSE, K_PRUNED, K_DENSE, K_UNIFIED, K_DENSE],
             [K_DENSE, K_PRUNED, K_UNIFIED, K_DENSE, K_DENSE, K_UNIFIED],
             [K_UNIFIED, K_DENSE, K_DENSE, K_UNIFIED, K_PRUNED, K_DENSE]]
    t = T("order", "float32", (8, 12), UNIFIED, levels=unified_levels(8, 12, 2, 2, kinds, order, scale=4),
          block=(2, 2), qp=-20,
          planes={"block_map": PlaneOptions(q=2, row_classes=[0, 1, 0, 1], col_classes=[0] * 6),
                  "unified_magnitudes": PlaneOptions(q=2, row_classes=[1, 0, 1, 0],
                                                     col_classes=[0, 1, 0, 1, 1, 0]),
                  "dense_levels": PlaneOptions(q=2, m=1, row_classes=[2, 0, 1, 0, 2, 1, 1, 0],
                                               col_classes=[0, 1, 2, 0, 1, 2, 2, 1, 0, 0, 1, 2])})
    assert_order_matters(t, "unified_magnitudes", "dense_levels")
    add("unified-coding-order", "UNIFIED 8x12 in 2x2 blocks (all three kinds) whose masked planes have contexts "
        "holding several row classes interleaved in scan order: the dense plane's and the unified magnitudes' "
        "symbols go, within a context, by row class, then scan order over the masked positions (§6.5.1 step 3); "
        "the block map has contexts whose coding order is its scan order",
        ["5.6", "6.5", "6.5.1"], [t])
    top = (1 << 31) - 1
    add("unified-largest-magnitudes", "UNIFIED block of magnitude 2**31-1 (stored 2**31-2, the largest) and a "
        "dense level of 2**31-1",
        ["5.6", "6.4", "7.1"],
        [T("top", "float32", (2, 4), UNIFIED, levels=[top, -top, 5, -top, top, top, 0, 2], block=(2, 2), qp=-120,
           density=0, planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=0),
                              "dense_levels": PlaneOptions(q=0)})])

    # reconstruction and output types
    lv = [1, -1, 2, 3, -1000, 1 << 20, -(1 << 24) - 1, (1 << 24) + 3, 0, 7, -7, 65519]
    add("output-float16", "DENSE float16: results below the normal range (subnormal, negative ones rounding to -0), "
        "ties to even, overflow to infinity",
        ["7.1", "7.3"],
        [T("tiny", "float16", (12,), DENSE, levels=lv, qp=-100, density=2, planes={"dense_levels": PlaneOptions(q=0)}),
         T("huge", "float16", (12,), DENSE, levels=lv, qp=-4, density=2, planes={"dense_levels": PlaneOptions(q=0)}),
         T("edges", "float16", (8,), DENSE, levels=[65504, 65519, 65520, -65520, 2049, 2051, 1, -1], qp=0,
           density=2, planes={"dense_levels": PlaneOptions(q=0)})])
    lv = [1, 3, 257, 259, 65793, -65795, (1 << 31) - 1, -12345, 0, 129, 385, 511]
    add("output-bfloat16", "DENSE and UNIFIED bfloat16: rounding of the binary32 product to bfloat16, ties to even, "
        "overflow to infinity; canonical bytes are the 16-bit patterns",
        ["7.1", "7.3"],
        [T("bf", "bfloat16", (3, 4), DENSE, levels=lv, qp=0, density=2, planes={"dense_levels": PlaneOptions(q=0)}),
         T("bf-big", "bfloat16", (12,), DENSE, levels=lv, qp=387, density=2, planes=dl(q=0)),
         T("bf-unified", "bfloat16", (2, 2), UNIFIED, levels=[-5, 5, 5, 5], block=(2, 2), qp=-3),
         T("bf-edges", "bfloat16", (4,), DENSE, levels=[0xFF8000 * 16, -0xFF8000 * 16, 0xFF0000 * 16, 0xFF7FFF * 16],
           qp=100, density=0, planes={"dense_levels": PlaneOptions(q=0)})])
    add("output-float64", "DENSE float64: the binary32 product widened exactly",
        ["7.1", "7.3"],
        [T("f64", "float64", (2, 3), DENSE, levels=[1, -3, 5, (1 << 24) + 1, 0, -(1 << 30) - 1], qp=-57, density=3,
           planes={"dense_levels": PlaneOptions(q=0)})])
    qps = []
    lv = [1, -1, 3, (1 << 24) + 1, -(1 << 31) + 1, 0]
    for d, (lo, hi) in enumerate([(-126, 100), (-250, 203), (-496, 411), (-984, 831), (-1952, 1679)]):
        qps += [T(f"d{d}.min", "float32", (6,), DENSE, levels=lv, qp=lo, density=d, planes=dl(q=0)),
                T(f"d{d}.max", "float32", (6,), DENSE, levels=lv, qp=hi, density=d, planes=dl(q=0))]
    add("qp-extremes", "the smallest and largest legal qp at every qp_density 0..4 (step 2**-126 to just under "
        "2**105): products that overflow to infinity",
        ["6.1", "7.1"], qps)

    # many tensors, names, units, versions
    many = []
    for k in range(300):
        mode = k % 3
        if mode == RAW:
            many.append(T(f"t{k:03d}", "int8", (2,), RAW, ints([k % 128, -(k % 100)], 1, True)))
        else:
            many.append(T(f"t{k:03d}", "float32", (2, 2), mode, levels=[k % 5, -(k % 3), 0, 1], block=(2, 1)))
    add("many-tensors", "300 small tensors in all three modes", ["4.3", "5.1"], many)
    names = ["é", unicodedata.normalize("NFD", "é"), "层.权重", "🧠.weight", "Ω" * 512, "a/b:c d\\e",
             "x" * 1024, "\u0000nul", "\u202eRTL"]
    add("unicode-names", "names with 2-, 3- and 4-byte UTF-8, é in NFC and NFD as two different names, a name of "
        "1024 bytes (the default max_name_length), U+0000 and U+202E",
        ["5.2"], [T(n, "uint8", (1,), RAW, bytes([k])) for k, n in enumerate(names)])
    add("ancillary-units", "unknown ancillary units (types 0, 3, 200, 255; empty and 70000-byte payloads) after "
        "the model header, between tensors and at the end: skipped",
        ["4.2", "4.3"],
        [T("a", "int32", (1,), RAW, ints([1], 4, True)), T("b", "int32", (1,), RAW, ints([2], 4, True))],
        extra_units={0: [ancillary(3, b"")], 1: [ancillary(0, b"meta"), ancillary(255, bytes(70000))],
                     2: [ancillary(200, b"\x00\x01")]})
    add("newer-minor-version", "version_minor 255: a 2.0 decoder reads any 2.x stream",
        ["4.1", "10"], [T("w", "uint16", (2,), RAW, ints([1, 2], 2, False))], minor=255)

    # frequency tables, classes and range coder edge cases
    lv = [rng.below(3) for _ in range(40)] + [2, 1]
    add("frequency-table-extremes", "frequency_bits 24 with 2**24-1 and 0 entries, frequency_bits 1, tied "
        "largest frequencies (the remainder goes to the first), trailing zero-frequency symbols, and a coded "
        "symbol whose frequency is 0 (probability 1/2**24)",
        ["6.6", "6.6.1", "6.9"],
        [T("f24", "float32", (42,), DENSE, levels=lv,
           planes={"dense_levels": PlaneOptions(q=2, tables={0: Table([(1 << 24) - 1, 0, 3, 0, 0], 24)})}),
         T("f1", "float32", (8,), DENSE, levels=[0, 1, 1, 0, 2, 1, 0, 1],
           planes={"dense_levels": PlaneOptions(q=2, tables={0: Table([1, 1, 0, 1], 1)})}),
         T("tie", "float32", (6,), DENSE, levels=[0, 1, 2, 2, 1, 0],
           planes={"dense_levels": PlaneOptions(q=2, tables={0: Table([5, 7, 7, 2, 0, 0, 0, 0, 0, 0, 0, 0], 3)})})])
    rcs = list(range(64)) + [0] * 6
    add("class-extremes", "row_class_count 64 and col_class_count 64 (127 contexts, most of them empty, each with "
        "its table); 64-symbol class tables",
        ["6.5", "6.5.1"],
        [T("classes", "float32", (70, 64), DENSE, levels=[(r + c) % 3 for r in range(70) for c in range(64)],
           planes={"dense_levels": PlaneOptions(q=2, row_classes=rcs, col_classes=list(range(63, -1, -1)))})])
    add("range-coder-word-counts", "planes whose words end without and with the final zero word (extra 0 and 1), "
        "a plane of one word, and a long run of near-certain symbols",
        ["6.9", "6.9.4"], range_coder_tensors(rng))
    add("range-coder-carry", "a plane whose encoding propagates carries into held-back words (both resolutions), "
        "so lower + range wraps past 2**64 while decoding",
        ["6.9.3", "Appendix B"], carry_tensors())
    # §6.9.4 (format 2.0): words past the end read as zero, so final zero words may be left out
    omitted = random_table_tensor("extra-1", 313, 1, 31)
    assert observed(omitted).extra == 1
    omitted.planes["dense_levels"].drop_words = 1
    add("words-final-zero-word-omitted", "a plane missing its final zero word (extra 1, Appendix B) decodes as if "
        "it were there: the decoder reads a zero past the end in its place",
        ["6.9.1", "6.9.4"], [omitted])
    zero = all_zero_words_plane()
    zero.planes["dense_levels"].drop_words = observed(zero).words
    add("words-all-zero-omitted", "a plane whose encoder words are all zero, stored with word_count 0: the range "
        "decoder is initialised (a two-symbol table) and reads only zeros, and the end check passes",
        ["6.9.2", "6.9.4"], [zero])
    add("words-zero-word-appended", "a zero word appended to a plane whose encoder wrote no final zero word "
        "(extra 0): the decoder reads it where it would read a zero past the end, so it is not surplus",
        ["6.9.4"], [rich_tensor("appended", extra_words=[0])])
    largest = rich_tensor("largest-distance")
    largest.planes["dense_levels"].words = words_with_distance(rich_tensor(), (1 << 33) - 2)
    assert point_distance(largest) == (True, (1 << 33) - 2)
    add("end-check-largest-distance", "the final words chosen so that every word is read and point - lower = "
        "2**33 - 2 after the last step, the largest the end check accepts (the symbols decode as coded)",
        ["6.9.4"], [largest])

    # limits
    add("limits-at-maximum", "every limit met exactly (custom limits in the manifest): tensor count, name "
        "length, ndim, elements per tensor, total output bytes, alphabet size",
        ["8"],
        [T("abcdefghij", "float32", (1, 3, 4), DENSE, levels=[k % 5 for k in range(12)],
           planes={"dense_levels": PlaneOptions(q=3)}),
         T("b", "bfloat16", (2, 2), RAW, ints([0x3F80, 0, 0x4000, 0xBF80], 2, False)),
         T("c", "uint8", (4,), RAW, b"\x01\x02\x03\x04")],
        limits={"max_tensor_count": 3, "max_name_length": 10, "max_ndim": 3, "max_elements_per_tensor": 12,
                "max_total_output_bytes": 12 * 4 + 4 * 2 + 4, "max_alphabet_size": 5})

    # column offsets (§6.10): the dense planes code residuals, level = residual + offset[column]
    orng = Rng(610)
    off = [3, -2, 0, 5, -1, 0, 7, -4]
    res = orng.laplace_levels(6 * 8, 2)
    for r in range(6):
        res[r * 8 + 3] = res[r * 8 + 6] = 0  # columns whose levels all equal their offset: no signs there
    res[8 + 1], res[3 * 8 + 7] = 2, 4  # residuals that cancel their offset: level 0, one sign
    lv = with_offsets(res, off, 8)
    assert sum(1 for v in res if v) < sum(1 for v in lv if v)
    assert lv[8 + 1] == lv[3 * 8 + 7] == 0 and res[8 + 1] and res[3 * 8 + 7]
    add("dense-column-offsets", "DENSE 6x8 with offset_mode 1: positive, negative and zero column offsets "
        "(zigzag codes 0..14, escapes with raw bits in column_offsets); two columns whose residuals are all 0 "
        "(their levels equal the offset, no sign bits), and levels 0 whose residual is not 0 (a sign bit each)",
        ["5.5", "6.10", "6.5", "6.8", "7.1"],
        [T("emb.weight", "float32", (6, 8), DENSE, levels=lv, qp=-16, offsets=off,
           planes={"column_offsets": PlaneOptions(q=3, m=1), "dense_levels": PlaneOptions(q=2, m=1)})])
    off = [-3, 1, 0, 2, -1, 4]
    lv = with_offsets(orng.laplace_levels(5 * 6, 2), off, 6)
    add("unified-all-dense-column-offsets", "UNIFIED 5x6 in 2x2 blocks, every block DENSE, with column "
        "offsets: dense_offsets follows the (empty) unified_signs and covers every column",
        ["5.6", "6.10"],
        [T("all-dense", "float32", (5, 6), UNIFIED, levels=lv, block=(2, 2), kinds=[[K_DENSE] * 3 for _ in range(3)],
           offsets=off, planes={"column_offsets": PlaneOptions(q=2), "dense_levels": PlaneOptions(q=2)})])
    kinds = [[K_DENSE, K_UNIFIED, K_PRUNED, K_DENSE], [K_UNIFIED, K_DENSE, K_DENSE, K_PRUNED],
             [K_PRUNED, K_DENSE, K_UNIFIED, K_DENSE]]
    off = [2, -3, 1, -1, 4, -2, 5, -5]
    lv = unified_levels(6, 8, 2, 2, kinds, orng)
    dense_mask = [[kinds[r // 2][c // 2] == K_DENSE for c in range(8)] for r in range(6)]
    lv = [v + off[k % 8] if dense_mask[k // 8][k % 8] else v for k, v in enumerate(lv)]
    t = T("mixed", "float32", (6, 8), UNIFIED, levels=lv, block=(2, 2), kinds=kinds, qp=-24, offsets=off,
          planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=3),
                  "column_offsets": PlaneOptions(q=3), "dense_levels": PlaneOptions(q=3, m=1)})
    for kind in (K_UNIFIED, K_PRUNED):  # a decoder that added the offsets there would get another tensor
        wrong = [v + off[k % 8] if kinds[k // 16][k % 8 // 2] == kind else v for k, v in enumerate(lv)]
        assert t.expected(wrong)["sha256"] != t.expected()["sha256"]
    add("unified-column-offsets-dense-blocks-only", "UNIFIED 6x8 in 2x2 blocks of all three kinds with non-zero "
        "offsets in every column: the offsets apply to the elements of DENSE blocks only, never to UNIFIED or "
        "PRUNED ones (adding them there gives another hash)",
        ["5.6", "6.10", "7.1"], [t])
    lv16 = with_offsets([v * 37 for v in orng.laplace_levels(4 * 6, 3)], [2049, -3001, 0, 1501, -777, 65], 6)
    lvbf = unified_levels(4, 6, 2, 2, [[K_DENSE, K_UNIFIED, K_DENSE], [K_PRUNED, K_DENSE, K_DENSE]], orng, scale=4)
    offbf = [257, -129, 3, -385, 511, -1]
    lvbf = [v + offbf[k % 6] if [[0, 1, 0], [2, 0, 0]][k // 12][k % 6 // 2] == K_DENSE else v
            for k, v in enumerate(lvbf)]
    lv64 = with_offsets([1, -1, 0, 3, (1 << 20) + 1, -5], [(1 << 24) + 1, -7], 2)
    add("column-offsets-output-types", "column offsets in float16 (DENSE; products that round to float16), "
        "bfloat16 (UNIFIED with all three block kinds; rounding to bfloat16) and float64 (DENSE; levels beyond "
        "2**24 whose binary32 conversion rounds)",
        ["6.10", "7.1", "7.3"],
        [T("f16", "float16", (4, 6), DENSE, levels=lv16, qp=-20, offsets=[2049, -3001, 0, 1501, -777, 65],
           planes={"column_offsets": PlaneOptions(q=4, m=2), "dense_levels": PlaneOptions(q=4, m=2)}),
         T("bf16", "bfloat16", (4, 6), UNIFIED, levels=lvbf, block=(2, 2), qp=-7, offsets=offbf,
           kinds=[[K_DENSE, K_UNIFIED, K_DENSE], [K_PRUNED, K_DENSE, K_DENSE]],
           planes={"block_map": PlaneOptions(q=2), "column_offsets": PlaneOptions(q=3),
                   "dense_levels": PlaneOptions(q=3)}),
         T("f64", "float64", (3, 2), DENSE, levels=lv64, qp=-57, density=3, offsets=[(1 << 24) + 1, -7],
           planes=dl(q=0))])
    # levels whose products round: float32(L) * step must use the level L, not float32(residual) * step +
    # float32(offset) * step (the reference decoder takes its int64 path: |L| * 5 >= 2**24)
    off = [(1 << 23) + 1, -(1 << 23) - 3, 5, -7, (1 << 22) + 3, 0]
    res = [(-1 if orng.below(2) else 1) * ((1 << 23) + orng.below(1 << 20)) for _ in range(4 * 6)]
    res[6 + 1] = (1 << 23) + 3  # cancels its offset: level 0
    lv = with_offsets(res, off, 6)
    t = T("big", "float32", (4, 6), DENSE, levels=lv, qp=-31, offsets=off,
          planes={"column_offsets": PlaneOptions(q=2), "dense_levels": PlaneOptions(q=2, m=2)})
    step = step_size(-31, 2)
    assert float(step) == 1.25 * 2 ** -8 and (max(map(abs, res)) + max(map(abs, off))) * 5 >= 1 << 24
    assert any(abs(v) > 1 << 24 and int(np.float32(v)) != v for v in lv) and lv[6 + 1] == 0
    two = (np.array(res, dtype=np.float32) * step
           + np.array(off * 4, dtype=np.float32) * step).astype(np.float32)
    assert hashlib.sha256(two.astype("<f4").tobytes()).hexdigest() != t.expected()["sha256"]
    add("column-offsets-large-levels", "DENSE 4x6 at qp -31 (step 1.25 * 2**-8) with residuals and offsets near "
        "±2**23: levels up to about 2**24 + 2**20, whose products round (and whose binary32 conversion rounds "
        "beyond 2**24); the value is float32(L) * step of the summed level L, which differs from "
        "float32(residual) * step + float32(offset) * step",
        ["6.10", "7.1"], [t])
    top = (1 << 31) - 1
    off = [(1 << 30) - 1, -(1 << 30)]
    res = [1 << 30, -((1 << 30) - 1), -top, top, 0, 1]
    lv = with_offsets(res, off, 2)
    assert lv == [top, -top, -(1 << 30), (1 << 30) - 1, (1 << 30) - 1, -(1 << 30) + 1]
    add("column-offsets-extremes", "the extreme offsets 2**30 - 1 and -2**30 (zigzag codes 2**31 - 2 and "
        "2**31 - 1, the largest plane values); levels ±(2**31 - 1) reached through offsets; residual magnitudes "
        "2**31 - 1 whose sign brings residual + offset back in range; a unified block of magnitude 2**31 - 1 in "
        "columns with offsets ±1 (offsets do not apply to it)",
        ["5.6", "6.4", "6.10", "7.1"],
        [T("dense", "float32", (3, 2), DENSE, levels=lv, qp=-120, density=0, offsets=off,
           planes={"column_offsets": PlaneOptions(q=0), "dense_levels": PlaneOptions(q=0)}),
         T("unified", "float32", (2, 4), UNIFIED, levels=[top, -top, 5, -1, -top, top, 1, 2], block=(2, 2),
           qp=-120, density=0, offsets=[1, -1, 3, -2],
           planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=0),
                   "column_offsets": PlaneOptions(q=2), "dense_levels": PlaneOptions(q=2)})])
    add("column-offsets-single-column", "offset_mode 1 with one column: a 5x1 matrix, a scalar (1x1), a 1x7 "
        "vector whose residuals are all 0 (a one-symbol dense plane, no signs), and offset_mode 1 with every "
        "offset 0 (a one-symbol column_offsets plane without words)",
        ["5.5", "6.2", "6.10"],
        [T("col", "float32", (5, 1), DENSE, levels=[-6, -4, -9, -6, 0], offsets=[-6],
           planes={"column_offsets": PlaneOptions(q=4), "dense_levels": PlaneOptions(q=3)}),
         T("scalar", "float32", (), DENSE, levels=[4], offsets=[9], qp=-10),
         T("vector", "float32", (7,), DENSE, levels=[3, -1, 0, 12, -8, 1, 2], offsets=[3, -1, 0, 12, -8, 1, 2],
           planes={"column_offsets": PlaneOptions(q=3, m=1)}),
         T("zero-offsets", "float32", (2, 3), DENSE, levels=[1, 0, -2, 0, 3, 1], offsets=[0, 0, 0])])
    off = [(c % 3) * 2 - 2 + (c // 6) * 9 for c in range(12)]
    lv = with_offsets(orng.laplace_levels(4 * 12, 2), off, 12)
    t = T("classes", "float32", (4, 12), DENSE, levels=lv, offsets=off,
          planes={"column_offsets": PlaneOptions(q=2, m=1, row_classes=[1], row_class_count=2,
                                                 col_classes=[c // 4 for c in range(12)]),
                  "dense_levels": PlaneOptions(q=2, row_classes=[0, 1, 1, 0], col_classes=[c % 2 for c in range(12)])})
    add("column-offsets-with-classes", "a column_offsets plane with classes: row_class_count 2 (its one row in "
        "class 1, so context 0 is empty) and 3 column classes, 4 contexts with their own tables",
        ["6.5", "6.5.1", "6.10"], [t])
    # (offset_mode 1 on a matrix without rows is malformed since 1705cfe: invalid/*-column-offsets-no-rows-*)
    # C = 0 with rows (§6.10): offset_mode 1 with a column_offsets plane of value_count 0 (the reference
    # decoder of a312b15 raised ValueError here; fixed in dd1c0a5)
    add("column-offsets-no-columns", "offset_mode 1 on matrices with rows but no columns (C = 0): DENSE (4, 0), "
        "(0,) (1 x 0), bfloat16 (2, 0, 3) and float16 (4294967295, 0), UNIFIED (0,) and float64 (3, 0) in 2x2 "
        "blocks; each column_offsets plane is just value_count 0, and a DENSE 2x3 with offsets follows them",
        ["5.5", "5.6", "6.2", "6.5", "6.10"],
        [T("d40", "float32", (4, 0), DENSE, levels=[], offsets=[]),
         T("d0", "float32", (0,), DENSE, levels=[], offsets=[]),
         T("d203", "bfloat16", (2, 0, 3), DENSE, levels=[], offsets=[]),
         T("dmax", "float16", (0xFFFFFFFF, 0), DENSE, levels=[], offsets=[]),
         T("u0", "float32", (0,), UNIFIED, levels=[], block=(2, 2), offsets=[]),
         T("u30", "float64", (3, 0), UNIFIED, levels=[], block=(2, 2), offsets=[]),
         T("after", "float32", (2, 3), DENSE, levels=[4, -1, 0, 6, 2, -3], offsets=[5, 0, -2])])

    # integer dtypes in DENSE and UNIFIED (§5.2, §7.1.1): qp 0 (step 1), each element is its level, every
    # level within the dtype's range; levels reach ±(2**31 - 1) at most (§6.4, §6.10)
    top = (1 << 31) - 1
    for dtype in INTEGER_DTYPES:
        lo, hi = reachable(dtype)
        signed = lo < 0
        small = [3, -2, 1, 0] if signed else [3, 2, 1, 0]
        dense_lv = [lo, hi, 0, lo + 1, hi - 1] + small + [1, -1 if signed else 5, hi]
        # UNIFIED 4x6 in 2x2 blocks: a UNIFIED block at the largest magnitude the dtype holds (all negative
        # when only -magnitude fits: int8 -128, int16 -32768), a PRUNED block, DENSE blocks with both
        # extremes, and a UNIFIED block of another magnitude
        big = max(-lo, hi)
        big_signs = [-1] * 4 if -lo > hi else [1, -1, -1, 1] if signed else [1] * 4
        second = (hi, [1, -1, 1, 1]) if -lo > hi else (1, [-1, 1, 1, -1] if signed else [1] * 4)
        grid = [[0] * 6 for _ in range(4)]
        blocks = {(0, 0): [s_ * big for s_ in big_signs], (0, 1): [lo, 0, hi, 1], (1, 0): [hi, 2, 0, lo],
                  (1, 1): [s_ * second[0] for s_ in second[1]], (1, 2): [small[1], hi, lo, small[0]]}
        for (a, b), vals in blocks.items():
            for k, v in enumerate(vals):
                grid[2 * a + k // 2][2 * b + k % 2] = v
        kinds = [[K_UNIFIED, K_DENSE, K_PRUNED], [K_DENSE, K_UNIFIED, K_DENSE]]
        dense_planes = (dl(q=2, m=1, row_classes=[0, 1, 1], col_classes=[0, 0, 1, 1]) if dtype == "int16"
                        else dl(q=2 if hi < 1 << 16 else 0, m=1 if hi < 1 << 16 else 0))
        add(f"integer-{dtype}", f"DENSE {dtype} 3x4 and UNIFIED {dtype} 4x6 in 2x2 blocks at qp 0 (step 1: each "
            f"element is its level, canonical bytes the {dtype} values): the extreme levels {lo} and {hi}; a "
            f"UNIFIED block of magnitude {big}" + (" with every sign negative" if -lo > hi else "")
            + ", a PRUNED block and DENSE blocks holding both extremes",
            ["5.2", "5.5", "5.6", "6.1", "7.1.1", "7.3"],
            [T(f"{dtype}.dense", dtype, (3, 4), DENSE, levels=dense_lv, qp=0, planes=dense_planes),
             T(f"{dtype}.unified", dtype, (4, 6), UNIFIED, levels=[v for row in grid for v in row], qp=0,
               block=(2, 2), kinds=kinds,
               planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=0),
                       "dense_levels": PlaneOptions(q=2 if hi < 1 << 16 else 0)})])
    # column offsets (§6.10) on integer tensors: level = residual + offset reaches each dtype's limits
    off8, res8 = [100, -100, -1, 0], [27, -28, 128, 5, 0, 0, -127, -5]
    assert with_offsets(res8, off8, 4) == [127, -128, 127, 5, 100, -100, -128, -5]
    off_u8, res_u8 = [200, 5, -1], [55, -5, 256, -200, 250, 1]
    assert with_offsets(res_u8, off_u8, 3) == [255, 0, 255, 0, 255, 0]
    off16, res16 = [30000, -30000], [2767, -2768, -30000, 30000]
    off_wide, res_wide = [(1 << 30) - 1, -(1 << 30)], [1 << 30, -((1 << 30) - 1), -((1 << 30) - 1), 1 << 30]
    assert with_offsets(res_wide, off_wide, 2) == [top, -top, 0, 0]
    u16_kinds = [[K_DENSE, K_UNIFIED], [K_PRUNED, K_DENSE]]
    u16_off = [65535 - 35, -7, 1, 2]
    u16_lv = [65535, 0, 65535, 65535, 0, 65535, 65535, 65535, 0, 0, 9, 0, 0, 0, 1, 65535]
    u16 = T("uint16.unified", "uint16", (4, 4), UNIFIED, levels=u16_lv, qp=0, block=(2, 2), kinds=u16_kinds,
            offsets=u16_off, planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=0),
                                     "column_offsets": PlaneOptions(q=2), "dense_levels": PlaneOptions(q=2, m=1)})
    # a decoder that added the offsets of columns 2 and 3 (1 and 2) to the UNIFIED block would get 65536 and
    # 65537 and reject the stream
    assert max(v + u16_off[k % 4] for k, v in enumerate(u16_lv) if u16_kinds[k // 8][k % 4 // 2] == K_UNIFIED) > 65535
    add("integer-column-offsets-limits", "column offsets on integer tensors whose sums reach the dtype's limits: "
        "int8 127 and -128 (one from a residual of 128, which int8 cannot hold), uint8 255 and 0 (from negative "
        "residuals), int16 32767 and -32768, int32 and int64 ±(2**31 - 1) and uint32 and uint64 2**31 - 1 from "
        "the extreme offsets 2**30 - 1 and -2**30; a UNIFIED uint16 whose UNIFIED block of magnitude 65535 lies "
        "in columns with offsets 1 and 2 (offsets do not apply to it)",
        ["5.5", "5.6", "6.10", "7.1.1"],
        [T("int8", "int8", (2, 4), DENSE, levels=with_offsets(res8, off8, 4), qp=0, offsets=off8,
           planes={"column_offsets": PlaneOptions(q=3), "dense_levels": PlaneOptions(q=2, m=1)}),
         T("uint8", "uint8", (2, 3), DENSE, levels=with_offsets(res_u8, off_u8, 3), qp=0, offsets=off_u8,
           planes={"column_offsets": PlaneOptions(q=2), "dense_levels": PlaneOptions(q=2)}),
         T("int16", "int16", (2, 2), DENSE, levels=with_offsets(res16, off16, 2), qp=0, offsets=off16,
           planes={"column_offsets": PlaneOptions(q=0), "dense_levels": PlaneOptions(q=0)}),
         T("int32", "int32", (2, 2), DENSE, levels=with_offsets(res_wide, off_wide, 2), qp=0, offsets=off_wide,
           planes={"column_offsets": PlaneOptions(q=0), "dense_levels": PlaneOptions(q=0)}),
         T("int64", "int64", (2, 2), DENSE, levels=with_offsets(res_wide, off_wide, 2), qp=0, offsets=off_wide,
           planes={"column_offsets": PlaneOptions(q=0), "dense_levels": PlaneOptions(q=0)}),
         T("uint32", "uint32", (1, 2), DENSE, levels=[top, 0], qp=0, offsets=[(1 << 30) - 1, -(1 << 30)],
           planes={"column_offsets": PlaneOptions(q=0), "dense_levels": PlaneOptions(q=0)}),
         T("uint64", "uint64", (2,), DENSE, levels=[top, 1], qp=0, offsets=[(1 << 30) - 1, 1 << 29],
           planes={"column_offsets": PlaneOptions(q=0), "dense_levels": PlaneOptions(q=0)}),
         u16])
    add("integer-qp-0-every-density", "integer tensors at qp 0 with qp_density 0, 1, 3 and 4: qp 0 is the step 1 "
        "at every density, so the levels are the values whatever qp_density says",
        ["6.1", "7.1.1"],
        [T("d0", "int8", (4,), DENSE, levels=[-128, 127, 3, -3], qp=0, density=0, planes=dl(q=2, m=1)),
         T("d1", "uint16", (2, 4), UNIFIED, levels=[7, 7, 0, 0, 7, 7, 0, 65535], qp=0, density=1, block=(2, 2),
           planes={"block_map": PlaneOptions(q=2), "dense_levels": PlaneOptions(q=2)}),
         T("d3", "int64", (3,), DENSE, levels=[-top, 0, top], qp=0, density=3, planes=dl(q=0)),
         T("d4", "uint32", (2, 2), DENSE, levels=[top, 0, 1, 2], qp=0, density=4, planes=dl(q=1))])
    add("integer-scalar-vector-empty", "integer DENSE and UNIFIED tensors of rank 0 (int8 -128; uint64 2**31 - 1; "
        "a uint8 255 from an offset of 200), rank 1, and empty shapes (0,), (3,0), (0,4294967295), "
        "(4294967295,0) and (4,0) (the last with offset_mode 1 and C = 0)",
        ["5.5", "5.6", "6.2", "6.10", "7.1.1"],
        [T("s8", "int8", (), DENSE, levels=[-128], qp=0, planes=dl(q=2, m=1)),
         T("s64", "uint64", (), UNIFIED, levels=[top], qp=0, block=(2, 2),
           planes={"unified_magnitudes": PlaneOptions(q=0)}),
         T("s-offset", "uint8", (), DENSE, levels=[255], qp=0, offsets=[200],
           planes={"column_offsets": PlaneOptions(q=3, m=1), "dense_levels": PlaneOptions(q=3, m=1)}),
         T("v16", "int16", (5,), DENSE, levels=[-32768, 0, 1, -1, 32767], qp=0, planes=dl(q=0)),
         T("v32", "uint32", (6,), UNIFIED, levels=[4, 4, 4, 0, 0, 0], qp=0, block=(1, 3),
           planes={"block_map": PlaneOptions(q=2)}),
         T("e8", "uint8", (0,), DENSE, levels=[], qp=0),
         T("e32", "int32", (3, 0), UNIFIED, levels=[], qp=0, block=(2, 2)),
         T("e64", "int64", (0, 0xFFFFFFFF), UNIFIED, levels=[], qp=0, block=(2, 2)),
         T("e16", "uint16", (0xFFFFFFFF, 0), DENSE, levels=[], qp=0),
         T("e-offsets", "int16", (4, 0), DENSE, levels=[], qp=0, offsets=[])])
    # §7.1.2 dependent quantization (format 3.0)
    lv = levels_grid(rng, 6, 25, 3)
    lv[7], lv[100] = (1 << 31) - 1, -((1 << 31) - 1)  # multiples near 2**32: float32(multiple) rounds
    add("dq-dense", "format 3.0: a DENSE float32 6x25 tensor with quant_flags 1: 150 positions, so two whole "
        "segments of 64 and a partial third, each restarting in state 0; two levels of magnitude 2**31 - 1 read "
        "as multiples near 2**32 that float32 rounds",
        ["6.1", "7.1.2", "10"], [T("dq", "float32", (6, 25), DENSE, levels=lv, qp=-40, quant_flags=1,
                                   planes={"dense_levels": PlaneOptions(q=2, m=1)})], major=3)
    kinds = [[(a + b) % 3 for b in range(5)] for a in range(3)]
    add("dq-unified-offsets-float16", "format 3.0: UNIFIED float16 (5,18) in 2x4 blocks (partial edges) with "
        "every block kind, column offsets on the dense blocks, quant_flags 1: every element, unified and pruned "
        "blocks included, is read in scan order by the quantizer its state selects",
        ["5.6", "6.10", "7.1.2"],
        [T("dq-mixed", "float16", (5, 18), UNIFIED, levels=unified_levels(5, 18, 2, 4, kinds, rng), block=(2, 4),
           qp=-24, quant_flags=1, offsets=[(j % 5) - 2 for j in range(18)],
           planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=2),
                   "dense_levels": PlaneOptions(q=2)})], major=3)
    add("dq-flags-zero", "format 3.0 with quant_flags 0: a bfloat16 tensor read by scalar levels as in 2.x, an "
        "int8 tensor (quant_flags 0, qp 0) and a RAW tensor (no quant_params)",
        ["6.1", "7.1", "7.1.1", "10"],
        [T("plain", "bfloat16", (3, 5), DENSE, levels=levels_grid(rng, 3, 5, 4), qp=-12, quant_flags=0),
         T("int", "int8", (4,), DENSE, levels=[-128, 0, 5, 127], qp=0, quant_flags=0),
         T("raw", "int8", (2,), RAW, ints([1, -1], 1, True))], major=3)
    # §5.7 attached files (format 3.1)
    add("attached-files", "format 3.1: three ATTACHED_FILE units (a nested path, an empty file, UTF-8 text) "
        "after the model header and between tensors; they do not change the tensors",
        ["4.2", "4.3", "5.7", "10"],
        [T("w", "float32", (2, 3), DENSE, levels=[1, -2, 0, 3, 0, -1], qp=-8, quant_flags=1,
           planes={"dense_levels": PlaneOptions(q=2)}),
         T("n", "int8", (2,), RAW, ints([7, -7], 1, True))],
        extra_units={0: [attached("config.json", b'{"model_type": "bert"}'), attached("1_Pooling/config.json", b"{}")],
                     1: [attached("vocab/\u00e9t\u00e9.txt", b"")]}, major=3, minor=1)
    # §4.3 rules 7, 8: before format 4.0, unit type 4 is an unknown type
    plain_end = stream_end_unit(stream_units([T("w", "int8", (2,), RAW, ints([1, -1], 1, True))], major=3), End(),
                                major=3, minor=1, flags=0)
    add("type-4-ancillary-before-4-0", "format 3.1: an ancillary unit of type 4 whose payload is a well-formed "
        "stream_end (§5.8): type 4 is unknown before 4.0, so a 4.x decoder skips it in a 3.x stream",
        ["4.2", "4.3", "10"], [T("w", "int8", (2,), RAW, ints([1, -1], 1, True))],
        extra_units={1: [ancillary(STREAM_END, plain_end.payload.bytes())]}, major=3, minor=1)
    cases += integrity_valid_cases(unified_levels, specials32)
    cases += alias_valid_cases(unified_levels)
    # §5.7 (document revision 5.0.2): the longest path the rules allow, and every printable ASCII
    # character they do not exclude
    allowed = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "/\\:")
    add("attached-file-path-limits", "format 3.1: attached files at a path of 8 components, and a name holding "
        "every printable ASCII character but '/', '\\' and ':' (a space, '..' inside a name, a leading '.')",
        ["5.7"], [T("w", "int8", (2,), RAW, ints([1, -1], 1, True))],
        extra_units={0: [attached("a/b/c/d/e/f/g/h.txt", b"eight"), attached("d/." + allowed + "..", b"")]},
        major=3, minor=1)
    add("type-3-ancillary-before-3-1", "format 3.0: an ancillary unit of type 3 holding a well-formed attached_file "
        "payload: type 3 is unknown before 3.1 (§4.3 rule 8), so the unit is skipped and no file is presented",
        ["4.3", "5.7", "10"], [T("w", "int8", (2,), RAW, ints([1, -1], 1, True))],
        extra_units={0: [attached("config.json", b"{}")]}, major=3, minor=0)
    return cases


def valid_adder(cases: list[Case], major: int):
    """``add(slug, description, sections, tensors, *, extra_units, minor, major)``: append a valid
    stream of format ``major``.``minor`` to ``cases`` (its description prefixed "format M.0: " at
    minor 0) and return its layout."""
    default_major = major

    def add(slug, description, sections, tensors, *, extra_units=None, minor=0, major=default_major):
        for t in tensors:
            check_planes(t)
        w = stream(tensors, extra_units=extra_units, major=major, minor=minor)
        cases.append(Case(slug, f"format {major}.0: " + description if minor == 0 else description, sections,
                          w.bytes(), tensors=tensors, layout=w))
        return w
    return add


def integrity_valid_cases(unified_levels, specials32: list[int]) -> list[Case]:
    """Format 4.0 (§5.2 content_digest, §5.8 STREAM_END, §7.4): valid streams."""
    cases: list[Case] = []
    add = valid_adder(cases, INTEGRITY_MAJOR)

    rng = Rng(400)
    add("v4-empty-model", "a model header with tensor_count 0 and the STREAM_END unit: unit_count 1, the model "
        "digest of no tensors (the SHA-256 of no bytes, e3b0c442...), the stream digest of the 26 bytes before it",
        ["4.3", "5.1", "5.8", "Appendix A"], [])
    add("v4-raw-int8-tiny", "one RAW int8 tensor of shape (3,), the tensor of valid/002 with its content_digest, "
        "then STREAM_END: the third example of spec/examples.md",
        ["5.2", "5.4", "5.8", "7.4"], [T("w", "int8", (3,), RAW, ints([-128, 0, 127], 1, True))])
    add("v4-raw-dtypes", "RAW float32 (NaN payloads, infinities, signed zero), float16, bfloat16, bool, uint64, a "
        "float64 scalar (rank 0) and an empty int32 (0, 4), whose content digest is the SHA-256 of no bytes: "
        "content digests over canonical bytes (§7.3: bfloat16 as 16-bit patterns, bool one byte each)",
        ["5.2", "5.4", "7.3", "7.4"],
        [T("f32", "float32", (2, 3), RAW, ints(specials32[:6], 4, False)),
         T("f16", "float16", (3,), RAW, ints([0x3C00, 0xFC00, 0x7E01], 2, False)),
         T("bf16", "bfloat16", (2, 2), RAW, ints([0x3F80, 0x7FC0, 0x8000, 0x0001], 2, False)),
         T("mask", "bool", (5,), RAW, bytes([1, 0, 0, 1, 1])),
         T("ids", "uint64", (2,), RAW, ints([0, M64], 8, False)),
         T("scalar", "float64", (), RAW, ints([0x400921FB54442D18], 8, False)),
         T("empty", "int32", (0, 4), RAW, b"")])
    off = [2, -1, 0, 3]
    add("v4-dense", "DENSE float32 with row and column classes, escapes and raw bits; DENSE float16 with column "
        "offsets; DENSE float64 from levels beyond 2**24; an empty DENSE (0, 3): quant_flags 0 in every "
        "quant_params (§6.1), the content digest after coding_mode",
        ["5.2", "5.5", "6.1", "6.10", "7.1", "7.4"],
        [rich_tensor("dense.classes"),
         T("dense.offsets", "float16", (3, 4), DENSE, levels=with_offsets(rng.laplace_levels(12, 2), off, 4), qp=-20,
           offsets=off, planes={"column_offsets": PlaneOptions(q=2), "dense_levels": PlaneOptions(q=2, m=1)}),
         T("dense.f64", "float64", (5,), DENSE, levels=[1, -3, (1 << 24) + 1, 0, -(1 << 30) - 1], qp=-57, density=3,
           planes=dl(q=0)),
         T("dense.empty", "float32", (0, 3), DENSE, levels=[])])
    kinds = [[K_UNIFIED, K_PRUNED, K_DENSE], [K_DENSE, K_UNIFIED, K_PRUNED]]
    uoff = [1, -2, 0, 0, 3, -1, 2, 0, 1]
    ulv = unified_levels(4, 9, 2, 3, kinds, rng)
    ulv = [v + uoff[k % 9] if kinds[k // 18][k % 9 // 3] == K_DENSE else v for k, v in enumerate(ulv)]
    add("v4-unified", "UNIFIED float32 4x9 in 2x3 blocks with all three block kinds and column offsets on the "
        "DENSE blocks; UNIFIED bfloat16 with a partial block; a UNIFIED scalar",
        ["5.6", "6.3", "6.10", "7.4"],
        [T("unified.w", "float32", (4, 9), UNIFIED, levels=ulv, block=(2, 3), kinds=kinds, qp=-24, offsets=uoff,
           planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=3),
                   "column_offsets": PlaneOptions(q=2), "dense_levels": PlaneOptions(q=3, m=1)}),
         T("unified.bf16", "bfloat16", (3, 3), UNIFIED, levels=[5, -5, 1, 5, 5, -2, 0, 0, 3], block=(2, 2), qp=-3),
         T("unified.scalar", "float32", (), UNIFIED, levels=[-4], block=(2, 2))])
    dq_kinds = [[(a + b) % 3 for b in range(4)] for a in range(2)]
    add("v4-dependent-quantization", "quant_flags 1 (§7.1.2): a DENSE float32 3x50 (150 positions: segments of "
        "64, 64 and 22) and a UNIFIED float16 4x16 with every block kind; the content digests are of the values "
        "the dependent quantizers give",
        ["6.1", "7.1.2", "7.4"],
        [T("dq.dense", "float32", (3, 50), DENSE, levels=rng.laplace_levels(150, 3), qp=-36, quant_flags=1,
           planes=dl(q=2, m=1)),
         T("dq.unified", "float16", (4, 16), UNIFIED, levels=unified_levels(4, 16, 2, 4, dq_kinds, rng), block=(2, 4),
           qp=-24, quant_flags=1, planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=2),
                                          "dense_levels": PlaneOptions(q=2)})])
    top = (1 << 31) - 1
    add("v4-integer", "integer tensors coded losslessly (§7.1.1): DENSE int8 at its extremes, UNIFIED uint16 with "
        "a block of magnitude 65535, DENSE int64 with column offsets reaching ±(2**31 - 1)",
        ["5.5", "5.6", "6.10", "7.1.1", "7.4"],
        [T("int8", "int8", (2, 4), DENSE, levels=[-128, 127, 0, 3, -3, 1, 0, -1], qp=0, planes=dl(q=2, m=1)),
         T("uint16", "uint16", (2, 4), UNIFIED, levels=[65535, 65535, 0, 9, 65535, 65535, 1, 0], qp=0, block=(2, 2),
           planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=0),
                   "dense_levels": PlaneOptions(q=2)}),
         T("int64", "int64", (2, 2), DENSE, levels=[top, -top, 0, 0], qp=0, offsets=[(1 << 30) - 1, -(1 << 30)],
           planes={"column_offsets": PlaneOptions(q=0), "dense_levels": PlaneOptions(q=0)})])
    add("v4-attached-files-minor-0", "ATTACHED_FILE units at version_minor 0 (defined in 4.0 whatever the minor "
        "version, §5.7): counted in unit_count and covered by the stream digest",
        ["4.3", "5.7", "5.8"],
        [T("w", "int8", (2,), RAW, ints([7, -7], 1, True)),
         T("b", "float32", (3,), DENSE, levels=[1, 0, -1], qp=-8)],
        extra_units={0: [attached("config.json", b'{"model_type": "bert"}'), attached("tokenizer/vocab.txt", b"")]})
    add("v4-unknown-ancillary-units", "unknown ancillary units (types 5, 200 and 255; empty, 4-byte and 300-byte "
        "payloads) after the model header, between the tensors and right before STREAM_END: skipped, but counted "
        "in unit_count (6) and covered by the stream digest",
        ["4.2", "4.3", "5.8"],
        [T("a", "int32", (1,), RAW, ints([1], 4, True)), T("b", "uint8", (2,), RAW, b"\x02\x03")],
        extra_units={0: [ancillary(5, b"")], 1: [ancillary(200, b"meta")], 2: [ancillary(255, bytes(300))]})
    add("v4-newer-minor-version", "format 4.7 (version_minor 7) with an ancillary unit of type 9 that a 4.7 encoder "
        "may define: a 4.0 decoder reads it, skipping the unit (§10)",
        ["4.1", "4.3", "5.8", "10"], [T("w", "uint16", (2,), RAW, ints([1, 2], 2, False))],
        extra_units={1: [ancillary(9, b"4.7")]}, minor=7)
    # §5.8: the model digest depends on the decoded tensors, not on how they were coded
    f = T("f", "float32", (2, 3), DENSE, levels=[3, -1, 0, 7, 2, -5], qp=-8, planes=dl(q=2, m=1))
    raw_pair = add("v4-model-digest-raw", "two tensors stored RAW, int8 'w' and float32 'f': the same model "
                   "digest as the next stream, which codes the same tensors DENSE and UNIFIED (informative, §5.8)",
                   ["5.4", "5.8"],
                   [T("w", "int8", (3,), RAW, ints([-128, 0, 127], 1, True)), T("f", "float32", (2, 3), RAW, f.canonical())])
    coded_pair = add("v4-model-digest-coded", "the tensors of the previous stream, 'w' coded UNIFIED (qp 0) and 'f' "
                     "DENSE: other coding modes, other bytes, the same content digests and model digest",
                     ["5.5", "5.6", "5.8"],
                     [T("w", "int8", (3,), UNIFIED, levels=[-128, 0, 127], qp=0, block=(1, 2)), f])
    assert_same_model_digest(raw_pair, coded_pair)
    return cases


def assert_same_model_digest(a: W, b: W) -> None:
    """Two different streams with the same model digest (§5.8)."""
    digests = [w.find("model_digest").value for w in (a, b)]
    assert digests[0] == digests[1] and a.bytes() != b.bytes(), digests


def alias_valid_cases(unified_levels) -> list[Case]:
    """Format 5.0 (§5.2 alias names, §5.8 their records in the model digest): valid streams. The
    manifest lists every name a decoder presents, each alias right after its tensor with the
    tensor's dtype, shape and sha256 and ``alias_of`` (informative: the name it shares values with)."""
    cases: list[Case] = []
    add = valid_adder(cases, ALIAS_MAJOR)
    rng = Rng(500)
    add("v5-raw-int8-tiny-alias", "the tensor of valid/002 with one alias name 'v', then STREAM_END: the fourth "
        "example of spec/examples.md", ["5.2", "5.4", "5.8", "7.4"],
        [T("w", "int8", (3,), RAW, ints([-128, 0, 127], 1, True), aliases=["v"])])
    embed = f32_bits([0x3F800000, 0xBF000000, 0x00000000, 0x80000000, 0x7FC00001, 0x3E800000])
    add("v5-raw-one-alias", "a RAW float32 'embed.weight' with one alias 'lm_head.weight' (tied weights stored "
        "once), then a RAW float16 'bias' with alias_count 0: a decoder presents embed.weight, lm_head.weight "
        "(the same values), bias; the model digest has three records",
        ["4.3", "5.2", "5.4", "5.8"],
        [T("embed.weight", "float32", (2, 3), RAW, embed, aliases=["lm_head.weight"]),
         T("bias", "float16", (3,), RAW, ints([0x3C00, 0x8001, 0x7BFF], 2, False))])
    add("v5-dense-two-aliases", "a DENSE float32 3x4 with two alias names, 'decoder.embed_tokens.weight' and "
        "the non-ASCII 'd\u00e9codeur.\u5d4c\u5165' (2- and 3-byte UTF-8 sequences), presented in the order "
        "stored after the tensor's own name",
        ["4.3", "5.2", "5.5", "5.8"],
        [T("encoder.embed_tokens.weight", "float32", (3, 4), DENSE, levels=rng.laplace_levels(12, 2), qp=-12,
           planes=dl(q=2, m=1), aliases=["decoder.embed_tokens.weight", "d\u00e9codeur.\u5d4c\u5165"])])
    kinds = [[K_UNIFIED, K_DENSE], [K_PRUNED, K_UNIFIED]]
    add("v5-unified-alias-count-0", "a UNIFIED float32 4x6 in 2x3 blocks with every block kind and alias_count 0 "
        "(the common case: two zero bytes after content_digest), then a RAW int8 with one alias",
        ["5.2", "5.6"],
        [T("unified", "float32", (4, 6), UNIFIED, levels=unified_levels(4, 6, 2, 3, kinds, rng), block=(2, 3),
           kinds=kinds, qp=-16, planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=2),
                                        "dense_levels": PlaneOptions(q=2)}),
         T("scale", "int8", (2,), RAW, ints([-5, 5], 1, True), aliases=["scale.tied"])])
    add("v5-empty-tensor-alias", "an empty RAW int32 (0, 4) with an alias: both names are presented with shape "
        "(0, 4) and the content digest of no bytes; an empty DENSE float32 (3, 0) with one too; neither adds "
        "output bytes (§8)",
        ["5.2", "5.4", "5.5", "7.4", "8"],
        [T("empty", "int32", (0, 4), RAW, b"", aliases=["empty.alias"]),
         T("none", "float32", (3, 0), DENSE, levels=[], aliases=["none.alias"])])
    # §5.8: a stream that stores tied weights once has the model digest of one that stores them per name
    tied = T("wte", "float32", (2, 2), DENSE, levels=[1, -2, 0, 5], qp=-8, planes=dl(q=2, m=1),
             aliases=["lm_head"])
    ln = T("ln", "float16", (2,), RAW, ints([0x3C00, 0x0000], 2, False))
    once = add("v5-model-digest-tied", "'wte' (DENSE, alias 'lm_head') and 'ln': the same model digest as the "
               "next stream, a 4.0 stream of the same tensors stored once per name (informative, §5.8)",
               ["5.2", "5.8"], [tied, ln])
    twice = add("v5-model-digest-as-4-0", "the tensors of the previous stream stored once per name, 'wte', "
                "'lm_head' (both DENSE) and 'ln', in the order a 5.x decoder presents them: other bytes, the same "
                "model digest", ["5.8"],
                [dataclasses.replace(tied, aliases=[]), dataclasses.replace(tied, name="lm_head", aliases=[]), ln],
                major=INTEGRITY_MAJOR)
    assert_same_model_digest(once, twice)
    add("v5-newer-minor-version", "format 5.2 (version_minor 2) with an ancillary unit of type 9 that a 5.2 "
        "encoder may define, and a tensor with an alias: a 5.0 decoder reads it, skipping the unit (§10)",
        ["4.1", "4.3", "5.2", "10"], [T("w", "uint16", (2,), RAW, ints([1, 2], 2, False), aliases=["w.tied"])],
        extra_units={1: [ancillary(9, b"5.2")]}, minor=2)
    dq_kinds = [[(a + b) % 3 for b in range(4)] for a in range(2)]
    add("v5-every-feature", "every tool together: ATTACHED_FILE units, an unknown ancillary unit between the "
        "tensors, dependent quantization (DENSE float32 3x50 with an alias; UNIFIED float16 with every block "
        "kind and two aliases), column offsets, a lossless integer tensor, a RAW bool with an alias",
        ["4.3", "5.2", "5.5", "5.6", "5.7", "5.8", "6.10", "7.1.1", "7.1.2", "7.4"],
        [T("dq.dense", "float32", (3, 50), DENSE, levels=rng.laplace_levels(150, 3), qp=-36, quant_flags=1,
           planes=dl(q=2, m=1), aliases=["dq.dense.tied"]),
         T("dq.unified", "float16", (4, 16), UNIFIED, levels=unified_levels(4, 16, 2, 4, dq_kinds, rng), block=(2, 4),
           qp=-24, quant_flags=1, aliases=["dq.unified.a", "dq.unified.b"],
           planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=2),
                   "dense_levels": PlaneOptions(q=2)}),
         T("offsets", "float32", (3, 4), DENSE, levels=with_offsets(rng.laplace_levels(12, 2), [2, -1, 0, 3], 4),
           qp=-20, offsets=[2, -1, 0, 3], planes={"column_offsets": PlaneOptions(q=2), "dense_levels": PlaneOptions(q=2)}),
         T("int8", "int8", (2, 4), DENSE, levels=[-128, 127, 0, 3, -3, 1, 0, -1], qp=0, planes=dl(q=2, m=1)),
         T("mask", "bool", (5,), RAW, bytes([1, 0, 0, 1, 1]), aliases=["mask.tied"])],
        extra_units={0: [attached("config.json", b'{"tie_word_embeddings": true}'), attached("tokenizer/vocab.txt", b"")],
                     2: [ancillary(200, b"meta")]})
    return cases


def reachable(dtype: str) -> tuple[int, int]:
    """The smallest and largest level an integer tensor can hold: the dtype's range within ±(2**31 - 1)."""
    lo, hi = INTEGER_DTYPES[dtype]
    return max(lo, -(1 << 31) + 1), min(hi, (1 << 31) - 1)


def with_offsets(residual_values: list[int], offsets: list[int], cols: int) -> list[int]:
    """Levels (C order) of a matrix whose every element is dense: residual + its column's offset."""
    return [v + offsets[k % cols] for k, v in enumerate(residual_values)]


def random_table_tensor(name: str, seed: int, shortest: int, longest: int) -> T:
    """A DENSE vector coded with a pseudo-random 24-bit frequency table (seeds below were found by search)."""
    r = Rng(seed)
    n = 2 + r.below(6)
    levels = [r.below(n) for _ in range(shortest + r.below(longest - shortest))]
    frequencies = [r.below(1 << (1 + r.below(24))) for _ in range(n)]
    return T(name, "float32", (len(levels),), DENSE, levels=levels,
             planes={"dense_levels": PlaneOptions(q=3, tables={0: Table(frequencies, 24)})})


def observed(t: T) -> PlaneStats:
    t.stats = []
    tensor_payload(t)
    stats, t.stats = t.stats[0], []
    return stats


def range_coder_tensors(rng: Rng) -> list[T]:
    """Planes whose words end with extra = 0 and extra = 1, a one-word plane, and a long skewed run."""
    extra0 = random_table_tensor("extra-0", 7, 1, 31)
    extra1 = random_table_tensor("extra-1", 313, 1, 31)
    assert (observed(extra0).extra, observed(extra1).extra) == (0, 1)
    assert observed(extra1).words == 2  # no renormalisation: the point word and the extra zero word
    one = T("one-word", "float32", (2,), DENSE, levels=[0, 1], planes={"dense_levels": PlaneOptions(q=1)})
    assert observed(one).words == 1
    near = T("near-certain", "float32", (600,), DENSE, levels=[0] * 599 + [1],
             planes={"dense_levels": PlaneOptions(q=1, tables={0: Table([(1 << 20) - 1, 0], 20)})})
    return [extra0, extra1, one, near]


def carry_tensors() -> list[T]:
    """Planes whose encoding holds words back and resolves them both ways (Appendix B)."""
    short = random_table_tensor("carry-short", 2, 30, 230)
    held2 = random_table_tensor("carry-held-2", 96, 30, 230)
    s, h = observed(short), observed(held2)
    assert s.carries >= 1 and s.inversions > s.carries, s
    assert h.max_held >= 2 and h.carries >= 1 and h.inversions > h.carries, h
    return [short, held2]


def rich_tensor(name: str = "r", **options) -> T:
    """A DENSE 4x6 tensor whose plane has classes, four contexts, tables, two words (extra 0) and
    raw bits."""
    return T(name, "float32", (4, 6), DENSE,
             levels=[0, 1, -2, 3, 0, 0, 5, 1, -1, 0, 9, 0, 2, -3, 1, 40, 0, 1, 1, -1, 0, 2, 0, 3],
             planes=dl(q=2, m=1, row_classes=[0, 1, 1, 0], col_classes=[0, 0, 1, 1, 0, 1], **options))


def end_state(t: T, plane: str = "dense_levels") -> tuple[PlaneStats, SpecDecoder]:
    """A plane as written and the §6.9 decoder's state after its last decoding step."""
    p = decoded_planes(t)[plane]
    return p, p.decoded.decoder


def point_distance(t: T, plane: str = "dense_levels") -> tuple[bool, int]:
    """After the plane's last decoding step: whether every word was read, and ``point - lower``."""
    _, d = end_state(t, plane)
    return d.reads >= len(d.words), (d.point - d.lower) & M64


def decoding_error(t: T, plane: str = "dense_levels") -> str | None:
    """What §6.5.1 finds wrong with the plane's words as written (None: nothing)."""
    p, _ = end_state(t, plane)
    return p.decoded.error


def words_with_distance(t: T, distance: int) -> list[int]:
    """The encoder's words of an extra-0 plane with the final word replaced by two, chosen so that
    every word is read and ``point - lower`` is ``distance`` after the last step. The final interval
    is wider than ``distance``, so every symbol decodes as coded."""
    p, d = end_state(t)
    assert p.extra == 0 and d.reads == len(d.words) + 1 and d.range > distance, (p, d.range)
    target = (d.lower + distance) & M64
    return d.words[:-1] + [target >> 32, target & 0xFFFFFFFF]


def all_zero_words_plane() -> T:
    """A plane whose encoder words are all zero (every symbol is the first of a two-symbol table)."""
    t = T("zero-words", "float32", (2, 40), DENSE, levels=[0] * 80,
          planes=dl(q=1, tables={0: Table([1, 1], 1)}))
    p, d = end_state(t)
    assert p.words >= 2 and set(d.words) == {0}, d.words
    return t


# ---------------------------------------------------------------------------------------------
# invalid streams


def invalid_cases() -> list[Case]:
    cases: list[Case] = []

    def add(slug, description, sections, data, error, limits=None):
        cases.append(Case(slug, description, sections, data, error=error, limits=limits))

    def one(t: T, **kw) -> W:
        return stream([t], **kw)

    raw = T("w", "int8", (3,), RAW, ints([1, 2, 3], 1, True))
    good = stream([raw])
    data = good.bytes()
    dense = T("d", "float32", (3, 5), DENSE, levels=[0, 1, -2, 3, 0, 0, 5, 1, -1, 0, 9, 0, 2, -3, 1],
              planes={"dense_levels": PlaneOptions(q=2, m=1)})
    def rich(**kw) -> T:
        """A DENSE tensor whose plane has classes, tables, words and raw bits."""
        return rich_tensor("r", **kw)
    def unified(**kw) -> T:
        """A UNIFIED tensor with all three block kinds."""
        return T("u", "float32", (4, 6), UNIFIED,
                 levels=[3, -3, 0, 0, 1, 2, 3, 3, 0, 0, 0, 4, 0, 0, -1, 1, 7, 7, 0, 0, 1, -1, 7, -7],
                 block=(2, 2), planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=3),
                                       "dense_levels": PlaneOptions(q=3)}, **kw)

    # §4.1 file header
    add("empty-file", "a stream of 0 bytes", ["4.1"], b"", ("malformed", "magic"))
    add("short-magic", "the first 5 bytes of the magic number only", ["4.1"], MAGIC[:5], ("malformed", "magic"))
    add("bad-magic", "one byte of the magic number changed (0x0A to 0x0D: newline translation)", ["4.1"],
        data[:7] + b"\x0d" + data[8:], ("malformed", "magic"))
    add("truncated-version-major", "the magic number and nothing else", ["4.1", "3.5"], MAGIC,
        ("truncated", "version_major"))
    add("truncated-version-minor", "the stream ends after version_major", ["4.1", "3.5"], data[:9],
        ("truncated", "version_minor"))
    add("truncated-header-flags", "the stream ends inside header_flags", ["4.1", "3.5"], data[:11],
        ("truncated", "header_flags"))
    add("major-version-0", "version_major 0", ["4.1", "10"], stream([raw], major=0).bytes(),
        ("unsupported_version", "version_major"))
    add("major-version-1", "version_major 1: format 1.0, whose coding order (§6.5.1) and end check (§6.9.4) "
        "differ, is not read by a 2.x decoder", ["4.1", "10"], stream([raw], major=1).bytes(),
        ("unsupported_version", "version_major"))
    add("major-version-6", "version_major 6 (a future major version; the rest is a 5.0 stream)", ["4.1", "10"],
        stream([raw], major=6).bytes(), ("unsupported_version", "version_major"))
    add("header-flags-bit0", "header_flags 0x0001 (reserved)", ["4.1"], stream([raw], flags=1).bytes(),
        ("malformed", "header_flags"))
    add("header-flags-bit15-newer-minor", "header_flags 0x8000 with version_minor 7: reserved bits are rejected "
        "whatever the minor version", ["4.1", "10"], stream([raw], flags=0x8000, minor=7).bytes(),
        ("malformed", "header_flags"))
    # §4.2 units
    add("no-units", "a file header and no unit", ["4.3"], data[:12], ("truncated", "model_header"))
    add("truncated-unit-flags", "one byte after the file header", ["4.2", "3.5"], data[:13],
        ("truncated", "unit_flags"))
    add("truncated-payload-length", "the stream ends inside the first payload_length", ["4.2", "3.5"], data[:16],
        ("truncated", "payload_length"))
    add("truncated-payload", "the stream ends inside the model header's payload", ["4.2"], data[:20],
        ("truncated", "payload_length"))
    add("truncated-unit-crc", "the stream ends inside the last unit's CRC", ["4.2"], data[:-1],
        ("truncated", "payload_length"))
    bad = bytearray(data)
    bad[good.find("tensor_count").offset] ^= 0x04
    add("crc-payload-bit-flipped", "one bit of the model header's payload flipped", ["4.2"], bytes(bad),
        ("checksum", "unit_crc"))
    bad = bytearray(data)
    bad[-1] ^= 0x80
    add("crc-bit-flipped", "one bit of the last unit_crc flipped", ["4.2"], bytes(bad), ("checksum", "unit_crc"))
    add("crc-of-skipped-unit", "a wrong CRC on an unknown ancillary unit: checked although the unit is skipped",
        ["4.2", "4.3"], assemble([model_header(0), dataclasses.replace(ancillary(9, b"abc"), crc_xor=1)]).bytes(),
        ("checksum", "unit_crc"))
    for bit in (0x02, 0x80):
        add(f"unit-flags-{bit:#04x}", f"unit_flags {bit:#04x} (a reserved bit) on the model header", ["4.2"],
            assemble([dataclasses.replace(model_header(0), flags=bit)]).bytes(), ("malformed", "unit_flags"))
    add("payload-length-overruns", "payload_length of the last unit one larger than the bytes present", ["4.2"],
        assemble([model_header(1),
                  dataclasses.replace(tensor_unit(raw), length=len(tensor_payload(raw).buf) + 1)]).bytes(),
        ("truncated", "payload_length"))
    add("payload-length-huge", "payload_length 0xFFFFFFFF", ["4.2", "8"],
        assemble([dataclasses.replace(model_header(0), length=0xFFFFFFFF)]).bytes(), ("truncated", "payload_length"))
    # §4.3 unit sequence
    add("first-unit-is-tensor", "a TENSOR unit before the model header", ["4.3"],
        assemble([tensor_unit(raw), model_header(1)]).bytes(), ("malformed", "unit_type"))
    add("ancillary-before-model-header", "an ancillary unit before the model header", ["4.3"],
        assemble([ancillary(7, b""), model_header(0)]).bytes(), ("malformed", "unit_type"))
    add("model-header-ancillary-first", "the only model header is marked ancillary", ["4.3"],
        assemble([dataclasses.replace(model_header(0), flags=1)]).bytes(), ("malformed", "unit_type"))
    add("second-model-header", "two model headers", ["4.3"], assemble([model_header(0), model_header(0)]).bytes(),
        ("malformed", "unit_type"))
    add("ancillary-model-header-later", "a second model header marked ancillary: known types must be critical",
        ["4.3"], assemble([model_header(0), dataclasses.replace(model_header(0), flags=1)]).bytes(),
        ("malformed", "unit_flags"))
    add("ancillary-tensor-unit", "a TENSOR unit marked ancillary", ["4.3"],
        assemble([model_header(1), dataclasses.replace(tensor_unit(raw), flags=1)]).bytes(),
        ("malformed", "unit_flags"))
    for t_ in (0, 3, 255):
        add(f"unknown-critical-unit-{t_}", f"a critical unit of unknown type {t_}", ["4.2", "4.3"],
            assemble([model_header(0), Unit(t_, W())]).bytes(), ("malformed", "unit_type"))
    add("more-tensors-than-declared", "tensor_count 1 and two TENSOR units", ["4.3", "5.1"],
        assemble([model_header(1), tensor_unit(raw), tensor_unit(dataclasses.replace(raw, name="x"))]).bytes(),
        ("malformed", "unit_type"))
    add("fewer-tensors-than-declared", "tensor_count 2 and one TENSOR unit", ["4.3", "5.1"],
        assemble([model_header(2), tensor_unit(raw)]).bytes(), ("truncated", "tensor_count"))
    add("trailing-byte", "one byte after the last unit", ["4.3"], data + b"\x00", ("truncated", "unit_flags"))
    add("trailing-zero-bytes", "ten zero bytes after the last unit: an all-zero 'unit' whose CRC fails", ["4.3"],
        data + bytes(10), ("checksum", "unit_crc"))
    # §5.1 model header
    add("model-header-short", "a model header payload of 3 bytes", ["5.1"],
        assemble([Unit(1, _w_raw(b"\x00\x00\x00"))]).bytes(), ("truncated", "tensor_count"))
    add("model-header-trailing", "a model header payload of 5 bytes", ["5.1"],
        assemble([model_header(0, b"\x00")]).bytes(), ("malformed", "model_header"))
    add("limit-tensor-count", "tensor_count 2**20 + 1, above the default max_tensor_count", ["5.1", "8"],
        assemble([model_header((1 << 20) + 1)]).bytes(), ("limit", "tensor_count"))
    add("limit-tensor-count-custom", "three tensors with max_tensor_count 2", ["5.1", "8"],
        stream([raw, dataclasses.replace(raw, name="b"), dataclasses.replace(raw, name="c")]).bytes(),
        ("limit", "tensor_count"), {"max_tensor_count": 2})
    # §5.2 tensor header
    add("name-length-zero", "name_length 0", ["5.2"], one(dataclasses.replace(raw, name=b"")).bytes(),
        ("malformed", "name_length"))
    add("limit-name-length", "name_length 1025 (the payload ends there)", ["5.2", "8"],
        assemble([model_header(1), Unit(2, _w_raw((1025).to_bytes(2, "little")))]).bytes(), ("limit", "name_length"))
    add("limit-name-length-custom", "a 4-byte name with max_name_length 3", ["5.2", "8"],
        one(dataclasses.replace(raw, name="abcd")).bytes(), ("limit", "name_length"), {"max_name_length": 3})
    for slug, name in [("lone-continuation", b"a\x80b"), ("overlong", b"\xc0\xaf"), ("surrogate", b"\xed\xa0\x80"),
                       ("above-10ffff", b"\xf4\x90\x80\x80"), ("cut-sequence", b"ab\xe2\x82"), ("byte-ff", b"\xff")]:
        add(f"name-utf8-{slug}", f"a name that is not well-formed UTF-8 ({slug.replace('-', ' ')})", ["5.2"],
            one(dataclasses.replace(raw, name=name)).bytes(), ("malformed", "name"))
    add("duplicate-names", "two tensors named 'w'", ["5.2"], stream([raw, raw]).bytes(), ("malformed", "name"))
    for v in (0, 14, 255):
        add(f"dtype-{v}", f"dtype {v} (reserved)", ["5.2"], one(dataclasses.replace(raw, header={"dtype": v})).bytes(),
            ("malformed", "dtype"))
    add("limit-ndim", "ndim 9, above the default max_ndim (the payload ends there)", ["5.2", "8"],
        assemble([model_header(1), Unit(2, _w_raw(b"\x01\x00w\x05\x09"))]).bytes(), ("limit", "ndim"))
    add("limit-ndim-custom", "a 3-D tensor with max_ndim 2", ["5.2", "8"],
        one(T("w", "int8", (1, 1, 3), RAW, b"\x01\x02\x03")).bytes(), ("limit", "ndim"), {"max_ndim": 2})
    add("limit-elements", "dims (65536, 65537): more than 2**32 elements", ["5.2", "8"],
        one(T("w", "int8", (65536, 65537), RAW, b"")).bytes(), ("limit", "dims"))
    add("limit-elements-custom", "12 elements with max_elements_per_tensor 11", ["5.2", "8"],
        one(T("w", "uint8", (3, 4), RAW, bytes(12))).bytes(), ("limit", "dims"), {"max_elements_per_tensor": 11})
    add("limit-total-output", "two tensors of 40 and 24 bytes with max_total_output_bytes 63 (bfloat16 counts 2 "
        "bytes)", ["5.2", "8"],
        stream([T("a", "float32", (10,), RAW, bytes(40)), T("b", "bfloat16", (12,), RAW, bytes(24))]).bytes(),
        ("limit", "dims"), {"max_total_output_bytes": 63})
    for v in (3, 255):
        add(f"coding-mode-{v}", f"coding_mode {v} (reserved)", ["5.2"],
            one(dataclasses.replace(raw, header={"coding_mode": v})).bytes(), ("malformed", "coding_mode"))
    # (until format 2.0 allowed DENSE and UNIFIED for integer dtypes, §7.1.1, this stream was
    # dense-mode-for-int32, malformed at coding_mode; its payload has qp -32, not a step-1 payload)
    add("dense-int32-qp-minus-32", "coding_mode DENSE with dtype int32 (allowed) at qp -32, the float default: "
        "an integer tensor's qp must be 0 (step 1)", ["5.2", "6.1", "7.1.1"],
        one(T("w", "int32", (2,), DENSE, levels=[1, 2], qp=-32)).bytes(), ("malformed", "qp"))
    add("unified-mode-for-bool", "coding_mode UNIFIED with dtype bool", ["5.2", "5.3"],
        one(T("w", "bool", (2,), UNIFIED, levels=[1, 1], header={"dtype": 10})).bytes(), ("malformed", "coding_mode"))
    tw = one(T("w", "int16", (2, 3), RAW, bytes(12)))
    for element in ("name_length", "name", "dtype", "ndim", "dims", "coding_mode"):
        add(f"truncated-in-{element.replace('_', '-')}", f"the TENSOR payload ends inside {element} (length and CRC "
            "fixed)", ["5.2", "3.5"], cut_inside(tw, element, occurrence=1 if element == "dims" else 0),
            ("truncated", element))
    # §5.4 raw
    add("raw-data-short", "RAW int16 (2,3) with 11 bytes of data", ["5.4"], cut_inside(tw, "raw_data", keep=11),
        ("malformed", "raw_data"))
    add("raw-data-long", "RAW int8 (3,) with 4 bytes of data", ["5.4"],
        one(dataclasses.replace(raw, trailing=b"\x00")).bytes(), ("malformed", "raw_data"))
    add("raw-bool-2", "a bool element stored as 0x02", ["5.4"], one(T("w", "bool", (3,), RAW, b"\x01\x02\x00")).bytes(),
        ("malformed", "raw_data"))
    # §6.1, §5.6 fixed fields
    add("qp-density-5", "qp_density 5", ["6.1"], one(dataclasses.replace(dense, density=5, qp=0)).bytes(),
        ("malformed", "qp_density"))
    add("qp-below-range", "qp -127 at qp_density 0 (step 2**-127)", ["6.1"],
        one(dataclasses.replace(dense, density=0, qp=-127)).bytes(), ("malformed", "qp"))
    add("qp-above-range", "qp 1680 at qp_density 4", ["6.1"],
        one(dataclasses.replace(dense, density=4, qp=1680)).bytes(),
        ("malformed", "qp"))
    dw = one(dense)
    for element in ("qp", "qp_density"):
        add(f"truncated-in-{element.replace('_', '-')}", f"the payload ends inside {element}", ["6.1", "3.5"],
            cut_inside(dw, element), ("truncated", element))
    uw = one(unified())
    for element in ("block_rows", "block_cols"):
        add(f"truncated-in-{element.replace('_', '-')}", f"the payload ends inside {element}", ["5.6", "3.5"],
            cut_inside(uw, element), ("truncated", element))
        add(f"{element.replace('_', '-')}-zero", f"{element} 0", ["5.6"],
            one(unified(header={element: 0})).bytes(), ("malformed", element))
    # level planes: field values
    for element, value, err in [("value_count", 16, "malformed"), ("direct_bits", 9, "malformed"),
                                ("mantissa_bits", 3, "malformed"), ("row_class_count", 0, "malformed"),
                                ("row_class_count", 65, "malformed"), ("col_class_count", 0, "malformed"),
                                ("col_class_count", 65, "malformed")]:
        add(f"plane-{element.replace('_', '-')}-{value}", f"dense_levels.{element} {value}", ["6.5"],
            patch(dw, f"dense_levels.{element}", value.to_bytes(4 if element == "value_count" else 1, "little")),
            (err, f"dense_levels.{element}"))
    add("plane-mantissa-bits-5", "mantissa_bits 5 with direct_bits 8", ["6.5"],
        one(T("m", "float32", (3,), DENSE, levels=[1, 2, 300], planes=dl(q=8, fields={"mantissa_bits": 5}))).bytes(),
        ("malformed", "dense_levels.mantissa_bits"))
    add("block-map-value-count", "block_map.value_count 5 for a 2x3 block grid", ["5.6", "6.5"],
        patch(uw, "block_map.value_count", (5).to_bytes(4, "little")), ("malformed", "block_map.value_count"))
    add("unified-magnitudes-value-count", "unified_magnitudes.value_count one more than the unified blocks",
        ["5.6", "6.5"], patch(uw, "unified_magnitudes.value_count",
                              (int(uw.find("unified_magnitudes.value_count").value) + 1).to_bytes(4, "little")),
        ("malformed", "unified_magnitudes.value_count"))
    rw = one(rich())
    for element in ("value_count", "direct_bits", "mantissa_bits", "row_class_count", "col_class_count",
                    "row_class_table.alphabet_size", "row_class_table.frequency_bits", "row_class_table.frequencies",
                    "col_class_table.alphabet_size", "magnitude_table[1].frequencies", "word_count", "words",
                    "raw_byte_count", "raw_bits"):
        plane_element = f"dense_levels.{element}"
        expected = plane_element
        if element == "words":
            expected = "dense_levels.word_count"
        if element == "raw_bits":
            expected = "dense_levels.raw_byte_count"
        add(f"truncated-in-plane-{element.replace('_', '-').replace('[', '').replace(']', '').replace('.', '-')}",
            f"the payload ends inside {plane_element}", ["6.5", "6.6", "3.5"], cut_inside(rw, plane_element),
            ("truncated", expected))
    # frequency tables
    add("table-alphabet-zero", "a magnitude table with alphabet_size 0", ["6.6"],
        one(rich(tables={0: Table([1, 2, 3], 2, alphabet_size=0)})).bytes(),
        ("malformed", "dense_levels.magnitude_table[0].alphabet_size"))
    add("table-alphabet-above-classes", "a row class table with alphabet_size 3 for row_class_count 2", ["6.5", "6.6"],
        one(rich(row_table=Table([1, 1, 1], 1))).bytes(), ("malformed", "dense_levels.row_class_table.alphabet_size"))
    add("table-alphabet-above-binarization", "a magnitude table of 63 symbols where direct_bits 2 and "
        "mantissa_bits 1 allow 4 + 29*2 = 62", ["6.4", "6.6"],
        one(rich(tables={0: Table([1] * 63, 1)})).bytes(),
        ("malformed", "dense_levels.magnitude_table[0].alphabet_size"))
    add("limit-alphabet-custom", "a magnitude table of 6 symbols with max_alphabet_size 5", ["6.6", "8"],
        one(T("a", "float32", (6,), DENSE, levels=[0, 1, 2, 3, 4, 5], planes=dl(q=3))).bytes(),
        ("limit", "dense_levels.magnitude_table[0].alphabet_size"), {"max_alphabet_size": 5})
    for bits in (0, 25):
        add(f"table-frequency-bits-{bits}", f"frequency_bits {bits}", ["6.6"],
            one(rich(tables={0: Table([1, 2, 3, 4, 5, 6, 7], bits if bits else 3)})).bytes() if bits else
            patch(rw, "dense_levels.magnitude_table[0].frequency_bits", b"\x00"),
            ("malformed", "dense_levels.magnitude_table[0].frequency_bits"))
    zero_at = "dense_levels.magnitude_table[1].frequencies"
    add("table-all-zero", "a magnitude table whose frequencies are all zero", ["6.6"],
        patch(rw, zero_at, bytes(rw.find(zero_at).size)),
        ("malformed", "dense_levels.magnitude_table[1].frequencies"))
    add("table-padding-bits", "a frequency table whose padding bits are not zero", ["3.3", "6.6"],
        one(rich(tables={0: Table([3, 1, 2], 3, padding=1)})).bytes(),
        ("malformed", "dense_levels.magnitude_table[0].frequencies"))
    # range-coded words
    assert decoding_error(rich(words=[0xFFFFFFFF, 0xFFFFFFFF])) == "quantile"
    add("words-quantile-out-of-range", "words ffffffff ffffffff: the first decoding step's quantile is 2**24",
        ["6.9.3"], one(rich(words=[0xFFFFFFFF, 0xFFFFFFFF])).bytes(), ("malformed", "dense_levels.words"))
    # §6.9.4: rich's plane ends with extra 0 (its decoder reads one zero word past the end)
    assert end_state(rich())[0].extra == 0
    surplus = rich(extra_words=[0, 0])
    assert decoding_error(surplus) == "end check" and end_state(surplus)[1].reads == len(end_state(surplus)[1].words) - 1
    add("words-surplus", "two zero words appended to a plane whose encoder wrote no final zero word: the decoder "
        "reads the first (where it would otherwise read a zero past the end) but never the second", ["6.9.4"],
        one(surplus).bytes(), ("malformed", "dense_levels.word_count"))
    missing = rich(drop_words=1)
    assert decoding_error(missing) == "end check" and point_distance(missing)[1] >= (1 << 33) - 1
    add("words-missing", "the final word (the encoder's point word) left out: read as zero, it leaves point - lower "
        ">= 2**33 - 1 after the last step; missing words are not an error by themselves", ["6.9.1", "6.9.4"],
        one(missing).bytes(), ("malformed", "dense_levels.word_count"))
    words = end_state(rich())[1].words
    raised = rich(words=words[:-1] + [words[-1] + 2])
    assert words[-1] + 2 < 1 << 32 and decoding_error(raised) == "end check"
    assert point_distance(raised)[0] and point_distance(raised)[1] >= (1 << 33) - 1
    assert end_state(raised)[0].decoded.values == end_state(raised)[0].values  # the symbols decode as coded
    add("words-final-word-raised", "the final word raised by 2: every word is read and every symbol decodes as "
        "coded, but point - lower >= 2**33 - 1 after the last step", ["6.9.4"], one(raised).bytes(),
        ("malformed", "dense_levels.word_count"))
    too_far = rich(words=words_with_distance(rich(), (1 << 33) - 1))
    assert decoding_error(too_far) == "end check" and point_distance(too_far) == (True, (1 << 33) - 1)
    assert end_state(too_far)[0].decoded.values == end_state(too_far)[0].values
    add("end-check-distance-too-large", "every word read and point - lower = 2**33 - 1 exactly after the last step "
        "(one more than valid/end-check-largest-distance; the symbols decode as coded)", ["6.9.4"],
        one(too_far).bytes(), ("malformed", "dense_levels.word_count"))
    add("words-for-constant-plane", "a plane of zeros (one-symbol table) with one word", ["6.5.1", "6.9.4"],
        one(T("z", "float32", (2, 2), DENSE, levels=[0] * 4, planes=dl(extra_words=[0]))).bytes(),
        ("malformed", "dense_levels.word_count"))
    add("word-count-overruns", "word_count larger than the bytes left", ["6.5"],
        patch(rw, "dense_levels.word_count", (1000).to_bytes(4, "little")), ("truncated", "dense_levels.word_count"))
    add("raw-byte-count-overruns", "raw_byte_count larger than the bytes left", ["6.5"],
        patch(rw, "dense_levels.raw_byte_count", (1000).to_bytes(4, "little")),
        ("truncated", "dense_levels.raw_byte_count"))
    add("raw-bits-surplus-byte", "one raw byte more than the escapes need", ["6.7"],
        one(rich(raw_bits=_rich_raw(rich) + b"\x00")).bytes(), ("malformed", "dense_levels.raw_byte_count"))
    add("raw-bits-missing-byte", "one raw byte fewer than the escapes need", ["6.7"],
        one(rich(raw_bits=_rich_raw(rich)[:-1])).bytes(), ("malformed", "dense_levels.raw_byte_count"))
    add("raw-bits-padding", "raw bits with a padding bit set", ["3.3", "6.7"], one(rich(raw_padding=1)).bytes(),
        ("malformed", "dense_levels.raw_bits"))
    # signs
    add("sign-byte-count-contradicts", "dense_signs.sign_byte_count one too large", ["6.8"],
        one(dataclasses.replace(dense, sign_counts={"dense_signs": 3})).bytes(),
        ("malformed", "dense_signs.sign_byte_count"))
    add("sign-padding", "a padding bit set after the dense signs", ["3.3", "6.8"],
        one(dataclasses.replace(dense, sign_padding={"dense_signs": 1})).bytes(),
        ("malformed", "dense_signs.sign_bits"))
    add("truncated-in-sign-bits", "the payload ends inside dense_signs.sign_bits", ["6.8", "3.5"],
        cut_inside(dw, "dense_signs.sign_bits", keep=0), ("truncated", "dense_signs.sign_bits"))
    add("truncated-in-sign-byte-count", "the payload ends inside dense_signs.sign_byte_count", ["6.8", "3.5"],
        cut_inside(dw, "dense_signs.sign_byte_count"), ("truncated", "dense_signs.sign_byte_count"))
    add("unified-sign-count-contradicts", "unified_signs.sign_byte_count 0 although unified blocks exist",
        ["5.6", "6.8"],
        one(unified(sign_counts={"unified_signs": 0})).bytes(), ("malformed", "unified_signs.sign_byte_count"))
    add("unified-sign-padding", "a padding bit set after the unified signs", ["5.6", "6.8"],
        one(unified(sign_padding={"unified_signs": 1})).bytes(), ("malformed", "unified_signs.sign_bits"))
    # block map and unified magnitudes
    add("block-kind-3", "a block map value of 3 (reserved)", ["5.6", "6.3"], one(_kind3()).bytes(),
        ("malformed", "block_map"))
    add("unified-magnitude-overflow", "a unified magnitude of 2**31 (stored 2**31-1)", ["5.6"],
        one(_overflow()).bytes(), ("malformed", "unified_magnitudes"))
    add("dense-trailing-bytes", "one byte after the dense payload's last sign section", ["5.3"],
        one(dataclasses.replace(dense, trailing=b"\x00")).bytes(), ("malformed", "tensor_payload"))
    add("unified-trailing-bytes", "one byte after the unified payload", ["5.3"],
        one(unified(trailing=b"\x00")).bytes(), ("malformed", "tensor_payload"))
    surplus = T("u", "float32", (2, 4), UNIFIED, levels=[3, 3, 2, -2, 3, -3, 2, 2], block=(2, 2),
                planes={"unified_magnitudes": PlaneOptions(q=2, extra_words=[7, 7])})
    assert decoding_error(surplus, "unified_magnitudes") == "end check"
    add("unified-words-surplus", "two words 7 appended to the unified_magnitudes plane (extra 0): the first is "
        "read, the second is surplus", ["6.9.4"], one(surplus).bytes(), ("malformed", "unified_magnitudes.word_count"))
    # §6.10 dense_offsets
    offset = T("o", "float32", (3, 4), DENSE, levels=[1, -2, 4, 0, 3, -1, 4, 2, 2, 0, 4, -3], offsets=[2, -1, 4, 0],
               planes={"column_offsets": PlaneOptions(q=2), "dense_levels": PlaneOptions(q=2)})
    ow = one(offset)
    add("offset-mode-2", "offset_mode 2 (reserved) in a DENSE payload", ["5.5", "6.10"],
        patch(ow, "offset_mode", b"\x02"), ("malformed", "offset_mode"))
    add("offset-mode-255", "offset_mode 255 (reserved) in a UNIFIED payload, after unified_signs", ["5.6", "6.10"],
        one(unified(offset_mode=255)).bytes(), ("malformed", "offset_mode"))
    add("column-offsets-value-count", "column_offsets.value_count 5 for a matrix of 4 columns", ["6.5", "6.10"],
        patch(ow, "column_offsets.value_count", (5).to_bytes(4, "little")), ("malformed", "column_offsets.value_count"))
    add("truncated-in-offset-mode", "the payload ends where offset_mode should be (after the quant_params)",
        ["5.5", "6.10", "3.5"], cut_inside(ow, "offset_mode", keep=0), ("truncated", "offset_mode"))
    add("truncated-in-column-offsets", "the payload ends inside column_offsets.words", ["6.5", "6.10", "3.5"],
        cut_inside(ow, "column_offsets.words"), ("truncated", "column_offsets.word_count"))
    top = (1 << 31) - 1
    add("column-offsets-level-overflow", "a DENSE residual of 2**31 - 1 (the largest magnitude) in a column whose "
        "offset is 1: the level 2**31 is out of range", ["6.10", "7.1"],
        one(T("o", "float32", (2, 2), DENSE, levels=[top + 1, 0, 5, -1], offsets=[1, 0],
              planes={"column_offsets": PlaneOptions(q=1), "dense_levels": PlaneOptions(q=0)})).bytes(),
        ("malformed", "column_offsets"))
    add("column-offsets-level-underflow", "a residual of -(2**31 - 1) in a DENSE block of a UNIFIED tensor, in a "
        "column whose offset is -1: the level -2**31 is out of range", ["5.6", "6.10", "7.1"],
        one(T("u", "float32", (2, 4), UNIFIED, levels=[3, -3, -top - 1, 2, 3, 3, 0, 1], block=(2, 2),
              offsets=[0, 0, -1, 0],
              planes={"block_map": PlaneOptions(q=2), "column_offsets": PlaneOptions(q=1),
                      "dense_levels": PlaneOptions(q=0)})).bytes(),
        ("malformed", "column_offsets"))
    # §6.10: offset_mode 1 is malformed for a matrix without rows (checked before column_offsets is read)
    add("column-offsets-no-rows-dense", "offset_mode 1 on a DENSE (0, 3) matrix, followed by a well-formed "
        "column_offsets plane of 3 values", ["5.5", "6.10"],
        one(T("rows0", "float32", (0, 3), DENSE, levels=[], offsets=[1, -2, 0])).bytes(), ("malformed", "offset_mode"))
    add("column-offsets-no-rows-unified", "offset_mode 1 on a UNIFIED (0, 5) matrix in 2x2 blocks (after the empty "
        "block_map, unified_magnitudes and unified_signs), followed by a column_offsets plane of 5 values",
        ["5.6", "6.10"],
        one(T("u0", "float32", (0, 5), UNIFIED, levels=[], block=(2, 2), offsets=[0, 1, 2, -1, -2])).bytes(),
        ("malformed", "offset_mode"))
    add("column-offsets-no-rows-no-columns", "offset_mode 1 on a DENSE (0, 0) matrix with a column_offsets plane of "
        "value_count 0: no rows, so malformed even though C = 0", ["5.5", "6.10"],
        one(T("e", "float32", (0, 0), DENSE, levels=[], offsets=[])).bytes(), ("malformed", "offset_mode"))
    huge = one(T("wide", "float32", (0, 3), DENSE, levels=[], offsets=[0, 0, 0]))
    data = bytearray(huge.bytes())
    for element, occurrence in (("dims", 1), ("column_offsets.value_count", 0)):
        f = huge.find(element, occurrence)
        data[f.offset:f.offset + 4] = (0xFFFFFFFF).to_bytes(4, "little")
    add("column-offsets-no-rows-huge", "offset_mode 1 on a DENSE (0, 4294967295) matrix with a constant "
        "column_offsets plane of value_count 4294967295 (a one-symbol table, no words): no limit bounds the "
        "columns of a matrix without rows, so offset_mode is rejected before the plane is read",
        ["5.5", "6.10", "8"], refresh_crcs(huge, bytes(data)), ("malformed", "offset_mode"))
    # integer dtypes in DENSE and UNIFIED (§5.2, §6.1, §7.1.1)
    add("dense-mode-for-bool", "coding_mode DENSE with dtype bool, followed by a well-formed DENSE payload at qp 0",
        ["5.2"], one(T("w", "bool", (2,), DENSE, levels=[1, 0], qp=0)).bytes(), ("malformed", "coding_mode"))
    add("integer-qp-1", "UNIFIED uint8 at qp 1 (step 1.25), the payload otherwise valid: an integer tensor's qp "
        "must be 0", ["6.1", "7.1.1"],
        one(T("u", "uint8", (2, 4), UNIFIED, levels=[3, 3, 0, 1, 3, 3, 2, 0], qp=1, block=(2, 2))).bytes(),
        ("malformed", "qp"))
    add("integer-qp-4-step-2", "DENSE int16 at qp 4 and qp_density 2 (step 2, a whole number): still not qp 0",
        ["6.1", "7.1.1"], one(T("d", "int16", (3,), DENSE, levels=[-4, 0, 6], qp=4, density=2)).bytes(),
        ("malformed", "qp"))
    add("integer-qp-density-5", "DENSE int8 with qp 3 and qp_density 5: qp_density is checked before an integer "
        "tensor's qp", ["6.1"], one(T("d", "int8", (3,), DENSE, levels=[1, 0, -1], qp=3, density=5)).bytes(),
        ("malformed", "qp_density"))
    top = (1 << 31) - 1
    beyond = [  # (dtype, level, mode, levels of a 2x4 matrix in 2x2 blocks or of a DENSE vector, what it shows)
        ("int8", 128, UNIFIED, [-128, 128, 5, -3, -128, -128, 0, 127],
         "a UNIFIED block of magnitude 128 with one positive sign (-128 fits, 128 does not)"),
        ("int8", -129, DENSE, [-128, 127, -129, 0, 1, -1], "a DENSE level -129 beside -128 and 127"),
        ("uint8", 256, DENSE, [255, 0, 256, 1, 2, 3], "a DENSE level 256 beside 255"),
        ("uint8", -1, UNIFIED, [255, 0, 255, 255, -1, 3, 255, 255],
         "a level -1 in a DENSE block beside a UNIFIED block of magnitude 255"),
        ("int16", 32768, DENSE, [-32768, 32767, 32768, 0], "a DENSE level 32768 beside -32768 and 32767"),
        ("int16", -32769, UNIFIED, [-32769, -32769, 0, 0, -32769, -32769, 0, 0],
         "a UNIFIED block of magnitude 32769, every sign negative, beside a PRUNED block"),
        ("uint16", 65536, UNIFIED, [65536, 65536, 65535, 0, 65536, 65536, 1, 2],
         "a UNIFIED block of magnitude 65536 beside a DENSE block holding 65535"),
        ("uint16", -1, DENSE, [65535, -1, 0, 1], "a DENSE level -1"),
        ("uint32", -1, DENSE, [top, -1, 0], "a DENSE level -1: unsigned types hold no negative level"),
        ("uint64", -top, UNIFIED, [top, -top, 0, 0, top, top, 0, 0],
         "a UNIFIED block of magnitude 2**31 - 1 with one negative sign"),
    ]
    for dtype, level, mode, lv, what in beyond:
        sign = "minus" if level < 0 else "plus"
        t = (T("x", dtype, (2, 4), UNIFIED, levels=lv, qp=0, block=(2, 2),
               planes={"block_map": PlaneOptions(q=2), "unified_magnitudes": PlaneOptions(q=0),
                       "dense_levels": PlaneOptions(q=0)}) if mode == UNIFIED else
             T("x", dtype, (len(lv),), DENSE, levels=lv, qp=0, planes=dl(q=0)))
        add(f"integer-{dtype}-level-{sign}-{abs(level)}", f"{MODE_NAME[mode].upper()} {dtype}: {what}; the level "
            f"{level} is outside the range of {dtype}", ["7.1.1"], one(t).bytes(), ("malformed", "levels"))
    off_u8 = [56, 0]
    add("integer-column-offset-past-uint8-max", "DENSE uint8 whose residual 200 and column offset 56 both fit "
        "uint8 but whose level 256 does not", ["6.10", "7.1.1"],
        one(T("o", "uint8", (2, 2), DENSE, levels=with_offsets([200, 0, 55, 3], off_u8, 2), qp=0, offsets=off_u8,
              planes={"column_offsets": PlaneOptions(q=2), "dense_levels": PlaneOptions(q=2)})).bytes(),
        ("malformed", "levels"))
    off8 = [0, 0, -29, -1]
    lv8 = [127, -127, -100 - 29, 0 - 1, 127, 127, 127 - 29, -127 - 1]
    add("integer-column-offset-below-int8-min", "UNIFIED int8 in 2x2 blocks: in the DENSE block the residual -100 "
        "plus the column offset -29 gives the level -129 (the other levels, -1, 98 and -128 from the residual "
        "-127, fit)", ["5.6", "6.10", "7.1.1"],
        one(T("o", "int8", (2, 4), UNIFIED, levels=lv8, qp=0, block=(2, 2), kinds=[[K_UNIFIED, K_DENSE]],
              offsets=off8, planes={"block_map": PlaneOptions(q=1), "unified_magnitudes": PlaneOptions(q=0),
                                    "column_offsets": PlaneOptions(q=3), "dense_levels": PlaneOptions(q=0)})).bytes(),
        ("malformed", "levels"))
    add("integer-column-offsets-overflow-before-levels", "DENSE int8 with a residual of 2**31 - 1 in a column whose "
        "offset is 1: the level 2**31 breaks both the ±(2**31 - 1) check of the column offsets and the int8 "
        "range, and the first is checked first (two defects)", ["6.10", "7.1.1"],
        one(T("o", "int8", (2,), DENSE, levels=[top + 1, 0], qp=0, offsets=[1, 0],
              planes={"column_offsets": PlaneOptions(q=1), "dense_levels": PlaneOptions(q=0)})).bytes(),
        ("malformed", "column_offsets"))
    add("integer-level-out-of-range-then-trailing-byte", "DENSE uint8 with a level 256 and one byte after the "
        "payload (two defects): the levels are checked once the payload is read, before the bytes after it",
        ["5.3", "7.1.1"],
        one(T("t", "uint8", (2,), DENSE, levels=[256, 0], qp=0, planes=dl(q=0), trailing=b"\x00")).bytes(),
        ("malformed", "levels"))
    add("integer-level-out-of-range-then-sign-padding", "UNIFIED int8 with a UNIFIED block of magnitude 200 (out of "
        "range) and then a padding bit set after the dense signs (two defects): the levels are checked only once "
        "the whole payload is read", ["6.8", "7.1.1"],
        one(T("p", "int8", (2, 4), UNIFIED, levels=[200, 200, 1, -2, -200, 200, 3, 0], qp=0, block=(2, 2),
              planes={"block_map": PlaneOptions(q=1), "unified_magnitudes": PlaneOptions(q=0),
                      "dense_levels": PlaneOptions(q=2)}, sign_padding={"dense_signs": 1})).bytes(),
        ("malformed", "dense_signs.sign_bits"))
    dq = T("w", "float32", (2, 3), DENSE, levels=[1, -2, 0, 3, 0, -1], qp=-8, quant_flags=1,
           planes={"dense_levels": PlaneOptions(q=2)})
    add("quant-flags-reserved-bit", "format 3.0: quant_flags 3 (bit 1 is reserved)", ["6.1"],
        one(dataclasses.replace(dq, quant_flags=3), major=3).bytes(), ("malformed", "quant_flags"))
    add("quant-flags-for-an-integer-tensor", "format 3.0: DENSE int16 (qp 0) with quant_flags 1: integers are "
        "coded losslessly", ["6.1", "7.1.1"],
        one(dataclasses.replace(dq, dtype="int16", qp=0), major=3).bytes(), ("malformed", "quant_flags"))
    add("truncated-quant-flags", "format 3.0: the payload ends after qp_density, where quant_flags belongs",
        ["6.1", "3.5"], cut_inside(one(dq, major=3), "quant_flags", keep=0), ("truncated", "quant_flags"))
    add("format-2-stream-with-quant-flags", "format 2.0 whose quant_params carry a quant_flags byte (2.x has none): "
        "the byte is read as offset_mode 1 and the rest no longer parses", ["6.1", "10"],
        one(dataclasses.replace(dq, quant_flags=1, planes={"dense_levels": PlaneOptions(q=2)}), major=2).bytes(),
        ("malformed", "column_offsets.value_count"))
    plain = T("w", "int8", (2,), RAW, ints([1, 2], 1, True))

    def with_file(unit: Unit, **kw) -> bytes:
        return stream([plain], extra_units={0: [unit]}, major=3, minor=1, **kw).bytes()

    add("attached-file-critical", "format 3.1: an ATTACHED_FILE unit marked critical", ["4.3", "5.7"],
        with_file(attached("config.json", b"{}", critical=True)), ("malformed", "unit_flags"))
    add("attached-file-path-escapes", "format 3.1: attached file path '../config.json'", ["5.7"],
        with_file(attached("../config.json", b"{}")), ("malformed", "path"))
    add("attached-file-path-empty-component", "format 3.1: attached file path 'a//b'", ["5.7"],
        with_file(attached("a//b", b"")), ("malformed", "path"))
    add("attached-file-path-control-character", "format 3.1: attached file path with a newline", ["5.7"],
        with_file(attached("a\nb", b"")), ("malformed", "path"))
    add("attached-file-path-not-utf8", "format 3.1: attached file path bytes ff fe", ["5.7"],
        with_file(attached(b"\xff\xfe", b"")), ("malformed", "path"))
    add("attached-file-duplicate-path", "format 3.1: two attached files named config.json", ["5.7"],
        stream([plain], extra_units={0: [attached("config.json", b"{}"), attached("config.json", b"[]")]},
               major=3, minor=1).bytes(), ("malformed", "path"))
    add("attached-file-truncated-path", "format 3.1: path_length 40 in a 10-byte payload", ["5.7", "3.5"],
        with_file(attached("config", b"", path_length=40)), ("truncated", "path"))
    cases += integrity_invalid_cases(dense, unified)
    cases += alias_invalid_cases()
    # document revision 5.0.1, after the 5.0 streams so that no earlier stream is renumbered:
    # §5.7, §8: an attached file's bytes are output too, in 3.1 and 4.0 streams as in 5.0 (alias_invalid_cases)
    eight = T("w", "int8", (8,), RAW, bytes(8))
    add("attached-file-total-output", "format 3.1: an attached file of 64 bytes with max_total_output_bytes 63",
        ["5.7", "8"], stream([eight], extra_units={0: [attached("a.txt", b"x" * 64)]}, major=3, minor=1).bytes(),
        ("limit", "content"), {"max_total_output_bytes": 63})
    add("v4-attached-file-total-output", "format 4.0: an attached file of 64 bytes with max_total_output_bytes 63",
        ["5.7", "8"], assemble(stream_units([eight], major=4, extra_units={0: [attached("a.txt", b"x" * 64)]}),
                               major=4).bytes(),
        ("limit", "content"), {"max_total_output_bytes": 63})
    # §6.1 (document revision 5.0.1): quant_flags is read, and its reserved bits checked, before an integer's qp
    integer = T("w", "int16", (2, 3), DENSE, levels=[1, -2, 0, 3, 0, -1], qp=1, quant_flags=0,
                planes={"dense_levels": PlaneOptions(q=2)})
    add("integer-qp-1-quant-flags-2", "format 3.0: DENSE int16 at qp 1 with quant_flags 2 (two defects): the "
        "reserved bit is found first", ["6.1", "7.1.1"],
        stream([dataclasses.replace(integer, quant_flags=2)], major=3).bytes(), ("malformed", "quant_flags"))
    add("integer-qp-1-cut-before-quant-flags", "format 3.0: DENSE int16 at qp 1 whose payload ends where "
        "quant_flags belongs: quant_flags is read before the integer's qp is checked", ["6.1", "3.5", "7.1.1"],
        cut_inside(stream([integer], major=3), "quant_flags", keep=0), ("truncated", "quant_flags"))
    add("integer-qp-1-quant-flags-1", "format 3.0: DENSE int16 at qp 1 with quant_flags 1 (two defects): the "
        "qp is checked before the integer's quant_flags", ["6.1", "7.1.1"],
        stream([dataclasses.replace(integer, quant_flags=1)], major=3).bytes(), ("malformed", "qp"))
    # §5.7 path rules and §6.5/§6.6 plane rules that had no stream of their own (document revision 5.0.2)
    for slug, path, what in [("nine-components", "a/b/c/d/e/f/g/h/i", "9 components (at most 8)"),
                             ("dot-component", "a/./b", "the component '.'"),
                             ("backslash", "a\\b", "a backslash"),
                             ("colon", "c:config.json", "a colon"),
                             ("delete-character", "a\x7fb", "the character U+007F"),
                             ("empty", "", "path_length 0 (no component)")]:
        add(f"attached-file-path-{slug}", f"format 3.1: an attached file path with {what}", ["5.7"],
            with_file(attached(path, b"")), ("malformed", "path"))
    add("block-map-frequency-bits-0", "frequency_bits 0 in the block map's magnitude table", ["5.6", "6.6"],
        patch(uw, "block_map.magnitude_table[0].frequency_bits", b"\x00"),
        ("malformed", "block_map.magnitude_table[0].frequency_bits"))
    add("truncated-in-block-map-words", "the payload ends inside block_map.words", ["5.6", "6.5", "3.5"],
        cut_inside(uw, "block_map.words"), ("truncated", "block_map.word_count"))
    add("unified-magnitudes-direct-bits-9", "unified_magnitudes.direct_bits 9", ["5.6", "6.5"],
        patch(uw, "unified_magnitudes.direct_bits", b"\x09"), ("malformed", "unified_magnitudes.direct_bits"))
    add("unified-magnitudes-alphabet-zero", "alphabet_size 0 in the unified magnitudes' table", ["5.6", "6.6"],
        patch(uw, "unified_magnitudes.magnitude_table[0].alphabet_size", b"\x00\x00"),
        ("malformed", "unified_magnitudes.magnitude_table[0].alphabet_size"))
    add("column-offsets-row-class-count-0", "column_offsets.row_class_count 0", ["6.5", "6.10"],
        patch(ow, "column_offsets.row_class_count", b"\x00"), ("malformed", "column_offsets.row_class_count"))
    add("column-offsets-mantissa-bits-3", "column_offsets.mantissa_bits 3 with direct_bits 2", ["6.5", "6.10"],
        patch(ow, "column_offsets.mantissa_bits", b"\x03"), ("malformed", "column_offsets.mantissa_bits"))
    return cases


def integrity_invalid_cases(dense: T, unified) -> list[Case]:
    """Format 4.0 (§4.3, §5.2, §5.8, §7.4): invalid streams, one or more per new rule of §9, and the
    orders of the checks that the spec fixes."""
    cases: list[Case] = []

    def add(slug, description, sections, data, error, mentions=None):
        cases.append(Case(slug, "format 4.0: " + description, sections, data, error=error, mentions=mentions))

    def v4(units: list[Unit], **kw) -> bytes:
        return assemble(units, major=4, **kw).bytes()

    def units_of(tensors: list[T], **kw) -> list[Unit]:
        return stream_units(tensors, major=4, **kw)

    def sha(b: bytes) -> bytes:
        return hashlib.sha256(b).digest()

    raw = T("w", "int8", (3,), RAW, ints([1, 2, 3], 1, True))
    second = T("b", "float32", (2,), RAW, f32_bits([0x3F800000, 0xC0000000]))
    pair = units_of([raw, second])
    good = v4(pair)

    # §7.4 content verification
    be = [-2, 1, 258, -32768, 32767, 0]
    t = T("layer.be", "int16", (2, 3), RAW, ints(be, 2, True),
          content_digest=sha(b"".join(v.to_bytes(2, "big", signed=True) for v in be)))
    add("v4-content-digest-raw-big-endian", "RAW int16 'layer.be' whose content_digest is the SHA-256 of its "
        "values in big-endian order, not of its canonical (little-endian) bytes", ["5.2", "7.3", "7.4"],
        v4(units_of([raw, t])), ("checksum", "content_digest"), "layer.be")
    t = dataclasses.replace(dense, name="layer.dense")
    t.content_digest = sha(t.canonical([v + (k == 7) for k, v in enumerate(t.levels)]))
    add("v4-content-digest-dense-one-element", "DENSE float32 'layer.dense' whose content_digest is of a tensor "
        "that differs in one element (an encoder whose reconstruction differs from §7.1): every other check "
        "passes, model and stream digests included", ["5.2", "7.1", "7.4"],
        v4(units_of([t])), ("checksum", "content_digest"), "layer.dense")
    t = T("layer.bf16", "bfloat16", (2, 4), UNIFIED, levels=[5, -5, 1, 0, 5, 5, -2, 3], block=(2, 2), qp=-3)
    t.content_digest = sha((np.frombuffer(t.canonical(), "<u2").astype("<u4") << 16).astype("<u4").tobytes())
    add("v4-content-digest-bfloat16-widened", "UNIFIED bfloat16 'layer.bf16' whose content_digest is of its values "
        "widened to float32 (4 bytes each), not of the 16-bit patterns (§7.3)", ["5.6", "7.3", "7.4"],
        v4(units_of([t])), ("checksum", "content_digest"), "layer.bf16")
    add("v4-truncated-in-content-digest", "the first tensor_header's payload ends after 16 bytes of content_digest "
        "(length and CRC framed to match; a second tensor and STREAM_END follow)", ["5.2", "3.5"],
        cut_inside(assemble(pair, major=4), "content_digest", keep=16), ("truncated", "content_digest"))
    w = assemble(pair, major=4)
    flipped = bytearray(bytes.fromhex(w.find("content_digest", 1).value))
    flipped[0] ^= 0x80
    add("v4-content-digest-bit-flipped", "the first bit of the second tensor's content_digest flipped (CRC, model "
        "digest and stream digest recomputed): tensor 'b' decodes to other bytes than its digest says",
        ["5.2", "7.4"], patch(w, "content_digest", bytes(flipped), occurrence=1), ("checksum", "content_digest"), "'b'")
    add("v4-tensor-header-without-content-digest", "a RAW float32 (2, 8) tensor written with the 3.x "
        "tensor_header (no content_digest): the first 32 bytes of raw_data are read as the digest, and raw_data "
        "is then 32 bytes short", ["5.2", "5.4", "10"],
        v4(units_of([T("w", "float32", (2, 8), RAW, bytes(range(64)), no_digest=True)])), ("malformed", "raw_data"))
    # §4.3: STREAM_END required, last, critical, after tensor_count tensors
    add("v4-stream-end-missing", "two tensors and no STREAM_END unit", ["4.3", "5.8"],
        v4(pair, end=False), ("truncated", "stream_end"))
    add("v4-stream-end-missing-empty-model", "a model header (tensor_count 0) and nothing else: no STREAM_END", ["4.3", "5.8"],
        v4([model_header(0)], end=False), ("truncated", "stream_end"))
    add("v4-byte-after-stream-end", "one zero byte after STREAM_END: an error before anything of a next unit is "
        "read (not truncated at unit_flags, as in 2.x and 3.x)", ["4.3"], good + b"\x00",
        ("malformed", "stream_end"))
    end1 = stream_end_unit(pair, End(), major=4, minor=0, flags=0)
    end2 = stream_end_unit(pair + [end1], End(), major=4, minor=0, flags=0)
    add("v4-second-stream-end", "a second, well-formed STREAM_END unit (unit_count 4, digests of everything "
        "before it) after the first", ["4.3", "5.8"], v4(pair + [end1, end2], end=False),
        ("malformed", "stream_end"))
    add("v4-ancillary-unit-after-stream-end", "an ancillary unit (type 7, CRC valid) after STREAM_END",
        ["4.3"], v4(pair + [end1, ancillary(7, b"meta")], end=False), ("malformed", "stream_end"))
    add("v4-stream-end-ancillary", "the STREAM_END unit marked ancillary (unit_flags 1)", ["4.2", "4.3", "5.8"],
        v4(pair, end=End(flags=1)), ("malformed", "unit_flags"))
    add("v4-stream-end-before-tensors", "tensor_count 2, one tensor unit, then STREAM_END (its unit_count and "
        "digests match the units before it)", ["4.3", "5.8"], v4(units_of([raw], tensor_count=2)),
        ("truncated", "tensor_count"))
    early = units_of([raw], tensor_count=2)
    add("v4-stream-end-between-tensors", "tensor_count 2 and STREAM_END between the two tensor units: rule 5 "
        "applies at STREAM_END, before the unit after it is looked at", ["4.3", "5.8"],
        v4(early + [stream_end_unit(early, End(), major=4, minor=0, flags=0), tensor_unit(second, 4)], end=False),
        ("truncated", "tensor_count"))
    add("v4-stream-end-first-unit", "a STREAM_END unit and nothing else: the first unit must be a model header",
        ["4.3"], v4([]), ("malformed", "unit_type"))
    add("v4-unknown-critical-unit-5", "a critical unit of type 5 (reserved) before STREAM_END", ["4.2", "4.3"],
        v4(units_of([raw], extra_units={1: [Unit(5, W())]})), ("malformed", "unit_type"))
    add("v4-attached-file-critical", "an ATTACHED_FILE unit marked critical in a 4.0 stream", ["4.3", "5.7"],
        v4(units_of([raw], extra_units={0: [attached("config.json", b"{}", critical=True)]})),
        ("malformed", "unit_flags"))
    add("v4-attached-file-duplicate-path", "two ATTACHED_FILE units named config.json at version_minor 0",
        ["5.7"], v4(units_of([raw], extra_units={0: [attached("config.json", b"{}"), attached("config.json", b"")]})),
        ("malformed", "path"))
    # 2.x and 3.x: type 4 is unknown
    units3 = stream_units([raw], major=3)
    add3 = stream_end_unit(units3, End(), major=3, minor=1, flags=0)
    cases.append(Case("stream-end-in-format-3", "format 3.1: a critical unit of type 4 whose payload is a "
                      "well-formed stream_end: type 4 is unknown before 4.0 (§4.3 rule 7)", ["4.3", "10"],
                      assemble(units3 + [add3], major=3, minor=1).bytes(), error=("malformed", "unit_type")))
    # §5.8 stream_end payload
    add("v4-stream-end-payload-69", "a stream_end payload of 69 bytes (a zero byte after stream_digest)", ["5.8"],
        v4(pair, end=End(trailing=b"\x00")), ("malformed", "stream_end"))
    w = assemble(pair, major=4)
    add("v4-truncated-in-stream-digest", "a stream_end payload of 67 bytes: it ends inside stream_digest",
        ["5.8", "3.5"], cut_inside(w, "stream_digest"), ("truncated", "stream_digest"))
    add("v4-truncated-in-model-digest", "a stream_end payload of 20 bytes: it ends inside model_digest",
        ["5.8", "3.5"], cut_inside(w, "model_digest", keep=16), ("truncated", "model_digest"))
    add("v4-stream-end-empty", "a stream_end payload of 0 bytes", ["5.8", "3.5"], cut_inside(w, "unit_count", keep=0),
        ("truncated", "unit_count"))
    add("v4-unit-count-counts-itself", "unit_count 4 for the 3 units before STREAM_END (an encoder that counted "
        "STREAM_END too)", ["5.8"], v4(pair, end=End(unit_count=len(pair) + 1)), ("malformed", "unit_count"))
    records = b"".join(tensor_payload(x, 4).bytes()[:tensor_payload(x, 4).find("coding_mode").offset + 33]
                       for x in (raw, second))
    add("v4-model-digest-with-coding-mode", "a model_digest over the whole tensor_headers, coding_mode included "
        "(§5.8's tensor_record leaves it out)", ["5.8"], v4(pair, end=End(model_digest=sha(records))),
        ("checksum", "model_digest"))
    add("v4-stream-digest-without-file-header", "a stream_digest over the units only, without the 12-byte file "
        "header", ["5.8"], v4(pair, end=End(stream_digest=sha(assemble(pair, major=4, end=False).bytes()[12:]))),
        ("checksum", "stream_digest"))
    # units removed, repeated, reordered or edited, CRCs valid (the STREAM_END of the stream before)
    three = units_of([raw, second, T("c", "uint8", (2,), RAW, b"\x05\x06")])
    add("v4-tensor-units-swapped", "the first two of three tensor units swapped, each CRC valid: the unit count "
        "holds, the model digest does not", ["5.8"], v4([three[0], three[2], three[1], three[3]], end=End(like=three)),
        ("checksum", "model_digest"))
    add("v4-tensor-unit-dropped", "the second of three tensor units removed: STREAM_END comes after two of the "
        "three tensors tensor_count declares", ["4.3", "5.8"], v4([three[0], three[1], three[3]], end=End(like=three)),
        ("truncated", "tensor_count"))
    files = units_of([raw], extra_units={0: [attached("config.json", b"{}"), attached("tokenizer.json", b"{}")]})
    add("v4-ancillary-unit-dropped", "the second of two ATTACHED_FILE units removed (4 units where unit_count "
        "says 5)", ["5.7", "5.8"], v4([files[0], files[1], files[3]], end=End(like=files)), ("malformed", "unit_count"))
    meta = units_of([raw], extra_units={1: [ancillary(200, b"meta")]})
    add("v4-ancillary-unit-duplicated", "an unknown ancillary unit repeated (4 units where unit_count says 3)",
        ["4.3", "5.8"], v4([meta[0], meta[1], meta[2], meta[2]], end=End(like=meta)), ("malformed", "unit_count"))
    one = units_of([raw])
    add("v4-tensor-unit-duplicated", "the one tensor unit repeated: more tensor units than tensor_count, found "
        "before STREAM_END", ["4.3"], v4([one[0], one[1], one[1]], end=End(like=one)), ("malformed", "unit_type"))
    # §6.9.4 is not exact; the stream digest closes the gap
    base = rich_tensor("r")
    appended = rich_tensor("r", extra_words=[0])
    check_planes(appended)
    assert appended.digest() == base.digest() and end_state(base)[0].extra == 0
    add("v4-word-appended-crc-recomputed", "a zero word appended to a level plane whose encoder wrote no final "
        "zero word, word_count and the unit's CRC updated: the plane passes §6.9.4 and decodes to the same "
        "tensor (content digest and model digest hold, as valid/*-words-zero-word-appended shows for 2.0), but "
        "the stream digest differs", ["6.9.4", "5.8"],
        v4(units_of([appended]), end=End(like=units_of([base]))), ("checksum", "stream_digest"))
    base = random_table_tensor("extra-1", 313, 1, 31)
    dropped = random_table_tensor("extra-1", 313, 1, 31)
    dropped.planes["dense_levels"].drop_words = 1
    check_planes(dropped)
    assert observed(base).extra == 1 and dropped.digest() == base.digest()
    add("v4-final-word-dropped-crc-recomputed", "the final zero word of a level plane left out, word_count and the "
        "unit's CRC updated: it decodes to the same tensor (§6.9.4, as valid/*-words-final-zero-word-omitted shows "
        "for 2.0), but the stream digest differs", ["6.9.4", "5.8"],
        v4(units_of([dropped]), end=End(like=units_of([base]))), ("checksum", "stream_digest"))
    # the order of the checks (two defects each)
    add("v4-stream-end-payload-69-wrong-fields", "a 69-byte stream_end payload whose unit_count and both digests "
        "are also wrong (four defects): the length is checked first", ["5.8"],
        v4(pair, end=End(unit_count=9, model_digest=bytes(32), stream_digest=bytes(32), trailing=b"\x00")),
        ("malformed", "stream_end"))
    add("v4-unit-count-and-model-digest-wrong", "unit_count 0 and a wrong model_digest (two defects): unit_count "
        "is checked first", ["5.8"], v4(pair, end=End(unit_count=0, model_digest=sha(b"x"))),
        ("malformed", "unit_count"))
    add("v4-model-and-stream-digest-wrong", "both digests wrong (two defects): model_digest is checked first",
        ["5.8"], v4(pair, end=End(model_digest=sha(b"x"), stream_digest=sha(b"y"))), ("checksum", "model_digest"))
    add("v4-stream-end-crc-and-digest-wrong", "a wrong stream_digest and a wrong CRC on the STREAM_END unit (two "
        "defects): the CRC is checked before the unit is read", ["4.2", "5.8"],
        v4(pair, end=End(stream_digest=bytes(32), crc_xor=1)), ("checksum", "unit_crc"))
    add("v4-stream-end-ancillary-and-early", "tensor_count 2, one tensor unit, then a STREAM_END marked ancillary "
        "(two defects): rule 5 checks unit_flags first", ["4.3"],
        v4(units_of([raw], tensor_count=2), end=End(flags=1)), ("malformed", "unit_flags"))
    add("v4-tensor-missing-and-no-stream-end", "tensor_count 2, one tensor unit and no STREAM_END (two defects): at "
        "the end of the stream, tensor_count is checked first", ["4.3"], v4(units_of([raw], tensor_count=2), end=False),
        ("truncated", "tensor_count"))
    bad = dataclasses.replace(raw, name="layer.first", content_digest=bytes(32))
    add("v4-content-digest-and-stream-digest-wrong", "a zero content_digest on tensor 'layer.first' and a wrong "
        "stream_digest (two defects): the tensor is verified when it is decoded, before STREAM_END",
        ["5.8", "7.4"], v4(units_of([bad, second]), end=End(stream_digest=bytes(32))), ("checksum", "content_digest"),
        "layer.first")
    add("v4-content-digest-wrong-and-trailing-byte", "a wrong content_digest and one byte after the DENSE payload "
        "(two defects): the content digest is checked after everything else in the payload", ["5.3", "7.4"],
        v4(units_of([dataclasses.replace(dense, trailing=b"\x00", content_digest=bytes(32))])),
        ("malformed", "tensor_payload"))
    add("v4-content-digest-wrong-and-level-out-of-range", "DENSE uint8 with a level 256 and a wrong content_digest "
        "(two defects): the levels are checked first", ["7.1.1", "7.4"],
        v4(units_of([T("x", "uint8", (6,), DENSE, levels=[255, 0, 256, 1, 2, 3], qp=0, planes=dl(q=0),
                       content_digest=bytes(32))])), ("malformed", "levels"))
    unified_bad = unified(content_digest=bytes(32), sign_padding={"unified_signs": 1})
    add("v4-content-digest-wrong-and-sign-padding", "UNIFIED with a padding bit set after the unified signs and a "
        "wrong content_digest (two defects)", ["6.8", "7.4"], v4(units_of([unified_bad])),
        ("malformed", "unified_signs.sign_bits"))
    return cases


def alias_invalid_cases() -> list[Case]:
    """Format 5.0 (§5.2 alias names, §5.8, §8): invalid streams, one or more per 5.0 rule of §9,
    and the 4.x rules of §9 again in 5.0 streams (a 5.x decoder applies them too)."""
    cases: list[Case] = []

    def add(slug, description, sections, data, error, limits=None, mentions=None):
        cases.append(Case(slug, "format 5.0: " + description, sections, data, error=error, limits=limits,
                          mentions=mentions))

    def v5(tensors: list[T], **kw) -> W:
        return stream(tensors, major=ALIAS_MAJOR, **kw)

    def w8(*aliases, name="w") -> T:
        return T(name, "int8", (3,), RAW, ints([1, 2, 3], 1, True), aliases=list(aliases))

    b = T("b", "float32", (2,), RAW, f32_bits([0x3F800000, 0xC0000000]))
    tied = v5([w8("w.tied"), b])

    # §5.2 the alias list
    add("v5-alias-name-length-zero", "'w' with one alias of alias_name_length 0", ["5.2"],
        v5([w8(b"")]).bytes(), ("malformed", "alias_name_length"))
    add("v5-alias-name-length-above-limit", "alias_name_length 14 ('lm_head.weight') with max_name_length 13 "
        "in the manifest; the tensor's own name (1 byte) is within it", ["5.2", "8"],
        v5([w8("lm_head.weight")]).bytes(), ("limit", "alias_name_length"), {"max_name_length": 13})
    add("v5-alias-name-not-utf8", "an alias name 'tied.' followed by ed a0 80, an encoded surrogate U+D800 "
        "(not well-formed UTF-8)", ["5.2"], v5([w8(b"tied.\xed\xa0\x80")]).bytes(), ("malformed", "alias_name"))
    add("v5-alias-count-beyond-the-names", "alias_count 2 with one alias name written: the second "
        "alias_name_length is read from raw_data (01 02: 513) and alias_name then reaches past the payload",
        ["5.2", "3.5"], v5([dataclasses.replace(w8("w.tied"), header={"alias_count": 2})]).bytes(),
        ("truncated", "alias_name"))
    for element, keep, what in (("alias_count", None, "after the first byte of alias_count"),
                                ("alias_name_length", None, "after the first byte of alias_name_length"),
                                ("alias_name", 2, "after 2 of the 6 bytes of the alias name 'w.tied'")):
        add(f"v5-truncated-in-{element.replace('_', '-')}", f"the first tensor_header's payload ends {what}",
            ["5.2", "3.5"], cut_inside(tied, element, keep=keep), ("truncated", element))
    # §5.2 one namespace for names and alias names
    add("v5-alias-equals-own-name", "'w' with the alias name 'w'", ["5.2"], v5([w8("w")]).bytes(),
        ("malformed", "alias_name"))
    add("v5-alias-equals-earlier-name", "'b', then 'w' with the alias name 'b'", ["5.2"],
        v5([b, w8("b")]).bytes(), ("malformed", "alias_name"))
    add("v5-alias-equals-earlier-alias", "'w' with the alias 'tied', then 'x' with the alias 'tied'", ["5.2"],
        v5([w8("tied"), w8("tied", name="x")]).bytes(), ("malformed", "alias_name"))
    add("v5-alias-repeated-in-one-list", "'w' with the aliases 'tied', 'tied'", ["5.2"],
        v5([w8("tied", "tied")]).bytes(), ("malformed", "alias_name"))
    add("v5-alias-normalization-differs-then-repeated", "'w' with the aliases 'caf\u00e9' (U+00E9) and "
        "'cafe\u0301' (e, U+0301: a different name, no normalization), then 'caf\u00e9' again",
        ["5.2"], v5([w8("caf\u00e9", "cafe\u0301", "caf\u00e9")]).bytes(), ("malformed", "alias_name"))
    add("v5-name-equals-earlier-alias", "'w' with the alias 'b', then a tensor named 'b'", ["5.2"],
        v5([w8("b"), b]).bytes(), ("malformed", "name"))
    add("v5-name-and-alias-repeated", "'w', then a second 'w' whose alias 'w' repeats too (two defects): the "
        "tensor's name is checked before its alias names", ["5.2"], v5([w8(), w8("w")]).bytes(),
        ("malformed", "name"))
    add("v5-name-repeated-and-alias-not-utf8", "a second 'w' whose alias name is the byte ff (two defects): the "
        "alias name is read, and its UTF-8 checked, with the header, before the names are compared", ["5.2"],
        v5([w8(), w8(b"\xff")]).bytes(), ("malformed", "alias_name"))
    # §8: an alias counts as a copy
    embed = T("embed", "float32", (4, 4), RAW, bytes(64), aliases=["lm_head"])
    add("v5-total-output-by-alias-copies", "a RAW float32 4x4 (64 bytes) with one alias and "
        "max_total_output_bytes 127: the tensor fits, its copy under the alias name does not", ["5.2", "8"],
        v5([embed]).bytes(), ("limit", "dims"), {"max_total_output_bytes": 127})
    add("v5-alias-repeated-and-total-output", "an alias equal to the tensor's name and max_total_output_bytes "
        "127 exceeded by the copy (two defects): the names are checked first", ["5.2", "8"],
        v5([dataclasses.replace(embed, aliases=["embed"])]).bytes(), ("malformed", "alias_name"),
        {"max_total_output_bytes": 127})
    # §5.8 the model digest has a record per name
    units = stream_units([w8("w.tied"), b], major=ALIAS_MAJOR)
    add("v5-model-digest-without-alias-records", "a model_digest of the tensor records alone, without the "
        "record of the alias 'w.tied' (§5.8: a record per name, the alias's right after its tensor's)", ["5.8"],
        assemble(units, major=ALIAS_MAJOR, end=End(model_digest=model_digest(units, aliases=False))).bytes(),
        ("checksum", "model_digest"))
    swapped = [units[0], tensor_unit(w8("w", name="w.tied"), ALIAS_MAJOR), units[2]]
    add("v5-name-and-alias-swapped", "the tensor stored as 'w.tied' with the alias 'w', the STREAM_END of the "
        "stream that names it 'w' with the alias 'w.tied': the same names, but the records in another order",
        ["5.8"], assemble(swapped, major=ALIAS_MAJOR, end=End(like=units)).bytes(), ("checksum", "model_digest"))
    add("v5-unit-count-counts-aliases", "unit_count 4 for the 3 units before STREAM_END (an encoder that counted "
        "the alias as a unit)", ["5.8"], assemble(units, major=ALIAS_MAJOR, end=End(unit_count=4)).bytes(),
        ("malformed", "unit_count"))
    # the format 4.x rules of §9, in 5.0 streams
    add("v5-content-digest-of-aliased-tensor", "a zero content_digest on 'embed', which has an alias: checked "
        "once, after the payload (§7.4), and nothing is presented", ["5.2", "7.4"],
        v5([dataclasses.replace(embed, content_digest=bytes(32))]).bytes(), ("checksum", "content_digest"),
        mentions="embed")
    add("v5-stream-end-missing", "a tensor with an alias and no STREAM_END unit", ["4.3", "5.8"],
        v5([w8("w.tied")], end=False).bytes(), ("truncated", "stream_end"))
    add("v5-byte-after-stream-end", "one zero byte after STREAM_END", ["4.3"], tied.bytes() + b"\x00",
        ("malformed", "stream_end"))
    add("v5-stream-end-ancillary", "the STREAM_END unit marked ancillary (unit_flags 1)", ["4.3", "5.8"],
        v5([w8("w.tied")], end=End(flags=1)).bytes(), ("malformed", "unit_flags"))
    add("v5-stream-end-before-tensors", "tensor_count 2, then one tensor unit whose tensor has an alias (two "
        "names, one tensor unit), then STREAM_END: aliases are not tensor units", ["4.3", "5.2", "5.8"],
        v5([w8("w.tied")], tensor_count=2).bytes(), ("truncated", "tensor_count"))
    add("v5-stream-end-payload-69", "a stream_end payload of 69 bytes (a zero byte after stream_digest)", ["5.8"],
        v5([w8("w.tied")], end=End(trailing=b"\x00")).bytes(), ("malformed", "stream_end"))
    add("v5-attached-file-path-escapes", "an attached file path '../config.json' in a 5.0 stream", ["5.7"],
        v5([w8("w.tied")], extra_units={0: [attached("../config.json", b"{}")]}).bytes(), ("malformed", "path"))
    # §4.1, §10: a 4.0 stream is not a 5.0 stream
    four = assemble(stream_units([w8(), b], major=INTEGRITY_MAJOR), major=INTEGRITY_MAJOR).bytes()
    add("v5-relabelled-4-0-stream", "a 4.0 stream ('w' RAW int8 [1, 2, 3], then 'b') with version_major "
        "changed to 5 and nothing else (the file header is in no unit, so every CRC holds): a 5.x decoder reads "
        "alias_count after content_digest from raw_data (01 02: 513 aliases), then alias_name_length from the "
        "one byte left in the payload", ["4.1", "5.2", "3.5", "10"], four[:8] + b"\x05" + four[9:],
        ("truncated", "alias_name_length"))
    empty = assemble([model_header(0)], major=INTEGRITY_MAJOR).bytes()
    add("v5-relabelled-4-0-empty-model", "the 4.0 stream of an empty model (no tensor header to misread) with "
        "version_major changed to 5: only the stream digest, which covers the file header, differs",
        ["4.1", "5.8", "10"], empty[:8] + b"\x05" + empty[9:], ("checksum", "stream_digest"))
    # §8 (document revision 5.0.1): an empty tensor's other dims are bounded too
    add("limit-empty-extent", "an empty float32 RAW tensor of shape (0, 2**31, 2**30): no element, but its "
        "non-zero dims multiply to 2**61, above the default max_elements_per_tensor (no decoder could "
        "represent the array)", ["5.2", "8"], v5([T("w", "float32", (0, 1 << 31, 1 << 30), RAW, b"")]).bytes(),
        ("limit", "dims"))
    # §5.2, §5.7, §8 (document revision 5.0.1): attached files' bytes are output too
    eight = T("w", "int8", (8,), RAW, bytes(8))
    add("limit-total-output-attached-file-then-tensor", "an attached file of 60 bytes, then a RAW int8 tensor of "
        "8 bytes, with max_total_output_bytes 63: the file's bytes count towards the tensor's check",
        ["5.2", "5.7", "8"], v5([eight], extra_units={0: [attached("a.txt", b"x" * 60)]}).bytes(),
        ("limit", "dims"), {"max_total_output_bytes": 63})
    add("limit-total-output-attached-file", "an attached file of 64 bytes with max_total_output_bytes 63, then a "
        "tensor of 8 bytes: the file alone exceeds it", ["5.7", "8"],
        v5([eight], extra_units={0: [attached("a.txt", b"x" * 64)]}).bytes(), ("limit", "content"),
        {"max_total_output_bytes": 63})
    return cases


def _w_raw(b: bytes) -> W:
    w = W()
    w.raw("payload", b)
    return w


def _rich_raw(rich) -> bytes:
    w = tensor_payload(rich())
    return bytes(w.buf[w.find("dense_levels.raw_bits").offset:][:w.find("dense_levels.raw_bits").size])


def _kind3() -> T:
    """A block map whose second block has kind 3; the rest is a consistent all-dense payload."""
    def writer(w, t_, levels, rows, cols):
        w.u8("block_rows", 2)
        w.u8("block_cols", 2)
        _plane(w, t_, "block_map", [[0, 3]], None)
        _plane(w, t_, "unified_magnitudes", [[0, 0]], [[False, False]])
        _signs(w, t_, "unified_signs", [])
        _offsets(w, t_, cols)
        _plane(w, t_, "dense_levels", [[abs(v) for v in row] for row in levels], None)
        _signs(w, t_, "dense_signs", [])
    return T("k3", "float32", (2, 4), UNIFIED, levels=[1, 2, 3, 4, 5, 6, 7, 8], block=(2, 2),
             planes={"block_map": PlaneOptions(q=2)}, unified_writer=writer)


def _overflow() -> T:
    """A unified block whose stored magnitude is 2**31 - 1 (magnitude 2**31)."""
    def writer(w, t_, levels, rows, cols):
        w.u8("block_rows", 2)
        w.u8("block_cols", 2)
        _plane(w, t_, "block_map", [[1]], None)
        _plane(w, t_, "unified_magnitudes", [[(1 << 31) - 1]], [[True]])
        _signs(w, t_, "unified_signs", [False] * 4)
        _offsets(w, t_, cols)
        _plane(w, t_, "dense_levels", [[0, 0], [0, 0]], [[False, False], [False, False]])
        _signs(w, t_, "dense_signs", [])
    return T("ov", "float32", (2, 2), UNIFIED, levels=[0] * 4, block=(2, 2),
             planes={"block_map": PlaneOptions(q=1), "unified_magnitudes": PlaneOptions(q=0)}, unified_writer=writer)


# ---------------------------------------------------------------------------------------------
# checks against the reference decoder, manifests, READMEs


def verify(case: Case, group: str) -> dict:
    """Decode with the reference decoder; raise unless it gives the expected result. Returns the entry."""
    from nncodec_unify.codec.decoder import decode_tensors

    limits = Limits(**case.limits) if case.limits else None
    entry: dict = {"file": None, "description": case.description, "sections": case.sections}
    if case.limits:
        entry["limits"] = case.limits
    if group == "valid":
        expected = [e for t in case.tensors for e in t.entries()]
        model = decode_tensors(case.data, limits=limits)
        got = []
        for t in model.tensors:
            a = t.array
            if t.dtype_name == "bfloat16":
                raw = (np.ascontiguousarray(a, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
            else:
                raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
            got.append({"name": t.name, "dtype": t.dtype_name, "shape": list(a.shape),
                        "coding_mode": t.coding_mode.name.lower(), "sha256": hashlib.sha256(raw).hexdigest()}
                       | ({"alias_of": t.alias_of} if t.alias_of is not None else {}))
        if got != expected:
            raise AssertionError(f"{case.slug}: the reference decoder disagrees:\n{got}\n{expected}")
        entry["tensors"] = expected
        files = attached_files_of(case.data)
        decoded_files = [{"path": f.path, "bytes": len(f.content), "sha256": hashlib.sha256(f.content).hexdigest()}
                         for f in model.files]
        if decoded_files != files:
            raise AssertionError(f"{case.slug}: the reference decoder's attached files disagree:\n{decoded_files}\n"
                                 f"{files}")
        if files:
            entry["attached_files"] = files
    else:
        try:
            decode_tensors(case.data, limits=limits)
        except BitstreamError as exc:
            got = (error_category(exc), exc.element)
            if got != case.error:
                raise AssertionError(f"{case.slug}: expected {case.error}, the reference decoder says {got}: "
                                     f"{exc}") from None
            if case.mentions is not None and case.mentions not in str(exc):
                raise AssertionError(f"{case.slug}: the reference decoder's message does not name "
                                     f"{case.mentions!r}: {exc}") from None
            if case.error == ("checksum", "content_digest") and "two defects" not in case.description:
                decode_tensors(case.data, limits=limits, verify=False)  # §7.4: the one defect of the stream
        else:
            raise AssertionError(f"{case.slug}: the reference decoder accepted an invalid stream")
        entry["error"] = {"category": case.error[0], "element": case.error[1]}
    return entry


def build() -> dict[str, bytes]:
    """Every file of the suite, by path relative to ``conformance/``."""
    files: dict[str, bytes] = {}
    for group, cases in (("valid", valid_cases()), ("invalid", invalid_cases())):
        entries = []
        slugs = set()
        for number, case in enumerate(cases, 1):
            assert case.slug not in slugs, case.slug
            slugs.add(case.slug)
            entry = verify(case, group)
            entry["file"] = f"{number:03d}-{case.slug}.nnu"
            files[f"{group}/{entry['file']}"] = case.data
            entries.append(entry)
        manifest = {"suite": f"nncodec_unify conformance, {group} streams", "format_version": FORMAT_VERSION,
                    "spec_revision": SPEC_REVISION, "streams": entries}
        files[f"{group}/manifest.json"] = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        files[f"{group}/README.md"] = group_readme(group, entries).encode("utf-8")
    files["README.md"] = TOP_README.replace("@FORMAT@", FORMAT_VERSION).replace("@REVISION@", SPEC_REVISION).encode("utf-8")
    return files


def group_readme(group: str, entries: list[dict]) -> str:
    lines = [f"# Conformance streams: `{group}/`", ""]
    if group == "valid":
        lines += ["Streams a decoder MUST decode. `manifest.json` gives, per stream, every tensor's name, dtype,",
                  "shape and the SHA-256 of its canonical bytes (spec §7.3: little-endian, C order; bfloat16 as",
                  "its 16-bit patterns; bool as one byte 0/1). `coding_mode` is informative.", ""]
    else:
        lines += ["Streams a decoder MUST reject. `manifest.json` gives, per stream, the error category and the",
                  "element (spec §3.6, §9) a decoder reports. Each stream has exactly one defect; CRCs and lengths",
                  "around it are correct unless the defect is the CRC or the length. A few streams have two",
                  "defects, to test which one a decoder meets first; their descriptions say so.", ""]
    lines += ["A `limits` field means the stream is checked with those decoder limits (spec §8) instead of",
              "the defaults.", "", "| file | exercises | §  | expected |", "|---|---|---|---|"]
    for e in entries:
        if group == "valid":
            n = len(e["tensors"])
            expected = f"{n} tensor{'s' if n != 1 else ''}"
        else:
            expected = f"`{e['error']['category']}` at `{e['error']['element']}`"
        if "limits" in e:
            expected += " (limits: " + ", ".join(f"{k}={v}" for k, v in e["limits"].items()) + ")"
        desc = e["description"].replace("|", "\\|")
        lines.append(f"| `{e['file']}` | {desc} | {', '.join(e['sections'])} | {expected} |")
    return "\n".join(lines) + "\n"


TOP_README = """# nncodec_unify conformance suite

Streams that test a decoder against `spec/bitstream.md` (format @FORMAT@, document revision @REVISION@):

* `valid/` — streams a decoder MUST decode, with the SHA-256 of every tensor's canonical bytes;
* `invalid/` — streams a decoder MUST reject, with the error category and element it reports.

Each folder has a `manifest.json` (machine-readable) and a `README.md` (the same, as a table).
File names are `NNN-what-it-exercises.nnu`. A 5.x decoder reads 2.x, 3.x and 4.x streams too (spec
§10), so the suite holds streams of all four major versions; most of the streams that test rules
common to all of them are 2.0 streams, which every version of the suite has kept byte for byte
(new streams are added at the end of each folder, so existing numbers do not change).

## Format 5.0

Format 5.0 ends every `tensor_header`, after `content_digest`, with `alias_count` and that many
alias names (spec §5.2): tied weights, one tensor under several names, stored once. A decoder
presents each alias right after its tensor, with the same dtype, shape and values; the manifest
lists every presented name in that order, an alias's entry with the tensor's `sha256` and
`"alias_of"` (informative: the name whose values it shares). Its streams are named `*-v5-*`:

* `valid/*-v5-*.nnu` — aliases of RAW, DENSE and empty tensors, non-ASCII alias names,
  `alias_count` 0, version 5.2 with an unknown ancillary unit, every tool of the earlier formats
  together, and a pair (`v5-model-digest-tied`, `v5-model-digest-as-4-0`): a 5.0 stream and a 4.0
  stream that stores the tied tensor once per name, with the same model digest (§5.8: a record
  per presented name). Each `model_digest` follows from the manifest alone.
* `invalid/*-v5-*.nnu` — every 5.0 rule of spec §9: `alias_name_length` 0 or above the limit, an
  alias name that is not UTF-8 or repeats a name or alias name (its own tensor's, an earlier
  tensor's, one of its own list), a name that repeats an earlier alias, a header cut inside the
  alias list, `max_total_output_bytes` exceeded by alias copies, a model digest without the alias
  records; the 4.x rules of §9 again in 5.0 streams; and 4.0 streams relabelled `version_major` 5
  (a 4.0 tensor header misread as a 5.0 one; an empty model caught by its stream digest). The
  unsupported-version stream is now major 6.

## Format 4.0

Format 4.0 ends every `tensor_header` with the tensor's `content_digest` (the SHA-256 of its
canonical bytes, spec §5.2, checked after decoding, §7.4) and ends the stream with a `STREAM_END`
unit (§5.8: `unit_count`, `model_digest`, `stream_digest`). Its streams are named `*-v4-*`:

* `valid/*-v4-*.nnu` — every coding mode, dtype and tool of the earlier formats with content
  digests; an empty model (the model digest of no tensors is the SHA-256 of no bytes);
  attached files at `version_minor` 0; unknown ancillary units before `STREAM_END` (counted and
  hashed); version 4.7; and two streams (`v4-model-digest-raw`, `v4-model-digest-coded`) that
  code the same tensors in different modes and have the same model digest (informative). A
  decoder can check every stored `content_digest` against the manifest's `sha256` values, and
  each `model_digest` against the manifest alone (§5.8 `tensor_record`: name, dtype, shape,
  digest). `valid/*-type-4-ancillary-before-4-0.nnu` is a 3.1 stream, in which type 4 is unknown.
* `invalid/*-v4-*.nnu` — one stream or more per 4.0 rule of spec §9: content digests that do
  not match (`checksum` at `content_digest`, in RAW and coded tensors); `STREAM_END` missing,
  followed by anything (one byte, a second `STREAM_END`, an ancillary unit), ancillary, too
  early, too long or cut short; a wrong `unit_count`, `model_digest` or `stream_digest`; units
  swapped, dropped or repeated with every CRC valid; a word appended to or dropped from a level
  plane with its CRC recomputed, which §6.9.4 accepts and decodes to the same tensor, so that
  only the stream digest finds it. Streams whose descriptions say "two defects" test the order
  of the checks that the spec fixes. `invalid/*-stream-end-in-format-3.nnu` is a 3.1 stream
  with a critical type 4 unit (unknown before 4.0).

## Formats 2.0, 3.0 and 3.1

Format 2.0 differs from 1.0 in two rules, and the suite has streams for both: within a context,
magnitude symbols follow the coding order (row class, then scan order; spec §6.5.1 step 3:
`valid/*-dense-coding-order.nnu`, `valid/*-unified-coding-order.nnu`, and every other plane with
contexts), and the end check asks only that every word was read and `point − lower < 2^33 − 1`
(spec §6.9.4: the `words-*` and `end-check-*` streams of both folders; missing final words read
as zeros, so some streams that 1.0 rejected are valid). It also adds syntax: `dense_offsets`
(spec §6.10), an `offset_mode` byte before every `dense_levels` plane, optionally followed by
per-column offsets that are added to the dense levels (`valid/*-column-offsets*.nnu` and the
`offset-mode-*`, `column-offsets-*`, `truncated-in-offset-mode` and `truncated-in-column-offsets`
invalid streams; every other stream has `offset_mode` 0). Streams of version 1 are `unsupported_version`.

Format 2.0 also allows `DENSE` and `UNIFIED` for every integer dtype (spec §5.2, §7.1.1; `bool` stays
`RAW` only): `qp` must be 0 (step 1) and each element is its level, which must lie in the dtype's
range. Streams: `valid/*-integer-*.nnu` (every integer dtype in both modes at its extreme levels, with
UNIFIED and PRUNED blocks, column offsets, every `qp_density`, scalars and empty shapes) and the
`integer-*`, `dense-int32-qp-minus-32` and `*-mode-for-bool` invalid streams.

Format 3.0 adds dependent quantization (`quant_flags`, spec §6.1, §7.1.2: `valid/*-dq-*.nnu` and the
`quant-flags-*` invalid streams), format 3.1 the `ATTACHED_FILE` unit (§5.7: `valid/*-attached-files.nnu`,
`valid/*-attached-file-path-limits.nnu` (8 components, every allowed ASCII character),
`valid/*-type-3-ancillary-before-3-1.nnu` (the same unit in a 3.0 stream: skipped) and the
`attached-file-*` invalid streams, one per path rule).

## Checking a decoder

    nncodec conform conformance/                              # the reference decoder
    python tools/independent_decoder.py --suite conformance/  # the decoder written from the spec

A decoder passes a valid stream when it decodes it into exactly the listed tensors, in order, with
the same names, dtypes, shapes and canonical-byte hashes, and (from revision 5.0.2) into exactly the
listed `attached_files` (path, size and SHA-256 of the content, in stream order; an entry without
the key has none: a 3.0 stream's type 3 units are unknown and skipped); it passes an invalid stream when it rejects
it with the listed category and element (spec §3.6). A decoder that cannot name them can still check
that it rejects every invalid stream, but conformance needs both. Entries with `limits` are decoded
with those limits (spec §8). A decoder that can skip the comparison of content digests (spec §7.4)
is tested with it on: the streams that are `checksum` at `content_digest` fail no other check (but
where their descriptions say "two defects").

## Manifest format

```json
{"suite": "...", "format_version": "@FORMAT@", "spec_revision": "@REVISION@",
 "streams": [{"file": "001-empty-model.nnu", "description": "...", "sections": ["4.1"],
              "limits": {"max_tensor_count": 3},
              "tensors": [{"name": "w", "dtype": "float32", "shape": [2, 2],
                           "coding_mode": "dense", "sha256": "..."}],
              "attached_files": [{"path": "config.json", "bytes": 2, "sha256": "..."}]},
             {"file": "...", "error": {"category": "truncated", "element": "payload_length"}}]}
```

## Regenerating

Every file here, READMEs and manifests included, is written by `tools/gen_conformance.py`, which builds
each stream field by field with explicit choices and checks it with the reference decoder before writing:

    python tools/gen_conformance.py           # rewrite conformance/
    python tools/gen_conformance.py --check   # verify that conformance/ is reproduced byte for byte

`tests/test_conformance.py` runs the check. Streams are never edited by hand: change the generator.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parent.parent / "conformance"
    parser.add_argument("--out", type=Path, default=default, help="the suite directory (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)
    files = build()
    if args.check:
        problems = diff(files, args.out)
        for p in problems:
            print(p)
        print(f"{len(files)} files, {len(problems)} differences")
        return 1 if problems else 0
    for group in ("valid", "invalid"):
        folder = args.out / group
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.nnu"):
            if f"{group}/{stale.name}" not in files:
                stale.unlink()
    for path, content in files.items():
        target = args.out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


def diff(files: dict[str, bytes], root: Path) -> list[str]:
    problems = []
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()
    for path, content in sorted(files.items()):
        if path not in present:
            problems.append(f"missing: {path}")
        elif (root / path).read_bytes() != content:
            problems.append(f"differs: {path}")
    for path in sorted(present - set(files)):
        problems.append(f"unexpected: {path}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
