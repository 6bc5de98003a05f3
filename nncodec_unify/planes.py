"""Coding of magnitude planes: binarization, contexts and raw bits (spec §6.4, §6.5, §6.7).

A *plane* is a 2-D grid (the tensor's matrix, or its grid of blocks) with a mask of the
positions it covers; its values are non-negative integers in *scan order* (row-major over the
masked positions). Each value becomes a small symbol plus raw low-order bits (§6.4). Symbols
are range-coded with a context per position, ``row_class[i] + col_class[j]``, taken from class
indices that the plane codes first, so the decoder knows every position's context before it
decodes any magnitude and decodes each context's symbols in one call.
"""

from __future__ import annotations

import numpy as np

from .entropy import FrequencyTable, decode_groups, encode_groups, table_for_counts
from .errors import BitstreamError, EncodeError
from .format import MAX_CLASS_COUNT, MAX_DIRECT_BITS, MAX_MAGNITUDE_EXPONENT, Limits
from .syntax import ByteReader, LevelPlane, magnitude_alphabet_limit, read_level_plane

_MAX_VALUE = (1 << (MAX_MAGNITUDE_EXPONENT + 1)) - 1


# ---------------------------------------------------------------------------------------------
# §6.4 binarization


def binarize(values: np.ndarray, direct_bits: int, mantissa_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbols and raw-bit counts of magnitudes (§6.4).

    ``m < 2**q`` is symbol ``m``; otherwise with ``e = floor(log2 m)`` the symbol is
    ``2**q + (e - q) * 2**M + ((m >> (e - M)) mod 2**M)`` and the ``e - M`` low bits of ``m``
    are sent raw.
    """
    values = values.astype(np.int64, copy=False)
    symbols = values.copy()
    raw_bits = np.zeros(values.shape, dtype=np.int64)
    escaped = values >= (1 << direct_bits)
    if escaped.any():
        big = values[escaped]
        exponent = np.frexp(big.astype(np.float64))[1].astype(np.int64) - 1
        mantissa = (big >> (exponent - mantissa_bits)) & ((1 << mantissa_bits) - 1)
        symbols[escaped] = (1 << direct_bits) + ((exponent - direct_bits) << mantissa_bits) + mantissa
        raw_bits[escaped] = exponent - mantissa_bits
    return symbols, raw_bits


def _symbol_raw_bits(symbol: np.ndarray, direct_bits: int, mantissa_bits: int) -> np.ndarray:
    """Raw-bit count of each (escape) symbol: ``e - M``."""
    exponent = direct_bits + ((symbol - (1 << direct_bits)) >> mantissa_bits)
    return np.where(symbol >= (1 << direct_bits), exponent - mantissa_bits, 0)


def _symbol_base(symbol: np.ndarray, direct_bits: int, mantissa_bits: int) -> np.ndarray:
    """The magnitude a symbol stands for before its raw bits are added."""
    k = symbol - (1 << direct_bits)
    exponent = direct_bits + (k >> mantissa_bits)
    base = ((1 << mantissa_bits) + (k & ((1 << mantissa_bits) - 1))) << (exponent - mantissa_bits)
    return np.where(symbol >= (1 << direct_bits), base, symbol)


def _entropy_bits(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    total = counts.sum()
    return float(-(counts * np.log2(counts / total)).sum()) if total else 0.0


def _subsample(values: np.ndarray, size: int = 1 << 18) -> np.ndarray:
    step = max(1, values.size // size)
    return values[::step]


def choose_binarization(values: np.ndarray) -> tuple[int, int]:
    """(direct_bits, mantissa_bits) with the fewest estimated bits, preferring small alphabets."""
    sample = _subsample(values)
    largest = int(sample.max()) if sample.size else 0
    best, best_cost = (0, 0), np.inf
    for direct_bits in range(0, MAX_DIRECT_BITS + 1):
        mantissa_bits = min(2, direct_bits)
        symbols, raw = binarize(sample, direct_bits, mantissa_bits)
        alphabet = int(symbols.max()) + 1
        # table bits, coded bits, raw bits; plus a small charge per symbol of alphabet, which
        # buys decoding speed for a negligible loss.
        cost = (_entropy_bits(np.bincount(symbols)) + raw.sum()) * (1 + 0.0005 * np.log2(alphabet + 1))
        cost += alphabet * 8 * sample.size / max(values.size, 1)
        if cost < best_cost:
            best, best_cost = (direct_bits, mantissa_bits), cost
        if (1 << direct_bits) > largest:
            break
    return best


# ---------------------------------------------------------------------------------------------
# §6.5 contexts


def _log_means(magnitudes: np.ndarray, mask: np.ndarray | None, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """log2 of the mean magnitude along ``axis`` over masked positions, and which lines have any."""
    if mask is None:
        sums = magnitudes.sum(axis=axis, dtype=np.float64)
        counts = np.full(sums.shape, magnitudes.shape[axis], dtype=np.float64)
    else:
        sums = np.where(mask, magnitudes, 0).sum(axis=axis, dtype=np.float64)
        counts = mask.sum(axis=axis, dtype=np.float64)
    present = counts > 0
    return np.log2(np.divide(sums, np.maximum(counts, 1)) + 0.5), present


def _classes(log_means: np.ndarray, present: np.ndarray, resolution: float) -> tuple[np.ndarray, int]:
    if not present.any():
        return np.zeros(log_means.size, dtype=np.int64), 1
    low = log_means[present].min()
    classes = np.clip(np.rint((log_means - low) / resolution), 0, MAX_CLASS_COUNT - 1).astype(np.int64)
    classes[~present] = 0
    return classes, int(classes.max()) + 1


def choose_classes(symbols: np.ndarray, magnitudes: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Row and column class indices for the plane's contexts (§6.5), chosen by estimated size.

    A class is a rounded log2 of the line's mean magnitude, so ``row + col`` approximates the
    log of the local scale. Small planes get a single context: tables would cost more.
    """
    rows, cols = magnitudes.shape
    one = (np.zeros(rows, dtype=np.int64), np.zeros(cols, dtype=np.int64))
    if symbols.size < 4096:
        return one
    row_log, row_present = _log_means(magnitudes, mask, 1)
    col_log, col_present = _log_means(magnitudes, mask, 0)
    sample_step = max(1, symbols.size // (1 << 19))
    sample_symbols = symbols[::sample_step]
    alphabet = int(symbols.max()) + 1
    scale = symbols.size / sample_symbols.size

    def estimated_bits(row_classes, col_classes, row_count, col_count):
        ctx = row_classes[:, None] + col_classes[None, :]
        ctx = (ctx[mask] if mask is not None else ctx.ravel())[::sample_step]
        joint = np.bincount(ctx * alphabet + sample_symbols, minlength=(row_count + col_count - 1) * alphabet)
        joint = joint.reshape(-1, alphabet)
        coded = sum(_entropy_bits(t) for t in joint) * scale
        tables = sum(np.count_nonzero(t) for t in joint) * 10 + joint.shape[0] * 16
        side = (_entropy_bits(np.bincount(row_classes)) + _entropy_bits(np.bincount(col_classes))
                + 8 * (row_count + col_count))
        return coded + tables + side

    best, best_cost = one, estimated_bits(*one, 1, 1)
    for resolution in (0.25, 0.5):
        row_classes, row_count = _classes(row_log, row_present, resolution)
        col_classes, col_count = _classes(col_log, col_present, resolution)
        for candidate in ((row_classes, col_classes, row_count, col_count),
                          (row_classes, one[1], row_count, 1), (one[0], col_classes, 1, col_count)):
            cost = estimated_bits(*candidate)
            if cost < best_cost:
                best, best_cost = candidate[:2], cost
    return best


# ---------------------------------------------------------------------------------------------
# encoding


def encode_plane(magnitudes: np.ndarray, mask: np.ndarray | None = None, *, use_contexts: bool = True) -> LevelPlane:
    """Code the masked values of the non-negative integer grid ``magnitudes`` (§6.5)."""
    values = magnitudes[mask] if mask is not None else magnitudes.ravel()
    if values.size == 0:
        return LevelPlane(0)
    if int(values.max()) > _MAX_VALUE or int(values.min()) < 0:
        raise EncodeError(f"a magnitude is outside 0..{_MAX_VALUE}: use a larger qp or RAW mode")
    direct_bits, mantissa_bits = choose_binarization(values)
    symbols, raw_bits = binarize(values, direct_bits, mantissa_bits)
    rows, cols = magnitudes.shape
    if use_contexts:
        row_classes, col_classes = choose_classes(symbols, magnitudes, mask)
    else:
        row_classes, col_classes = np.zeros(rows, dtype=np.int64), np.zeros(cols, dtype=np.int64)
    row_count, col_count = int(row_classes.max()) + 1, int(col_classes.max()) + 1
    context_count = row_count + col_count - 1
    groups: list[tuple[np.ndarray, FrequencyTable]] = []
    row_table = col_table = None
    if row_count > 1:
        row_table = table_for_counts(np.bincount(row_classes, minlength=row_count))
        groups.append((row_classes, row_table))
    if col_count > 1:
        col_table = table_for_counts(np.bincount(col_classes, minlength=col_count))
        groups.append((col_classes, col_table))
    if context_count > 1:
        contexts = _contexts(row_classes, col_classes, mask)
        order = np.argsort(contexts, kind="stable")
        bounds = np.cumsum(np.bincount(contexts, minlength=context_count))
        grouped = symbols[order]
        tables = []
        for c in range(context_count):
            group = grouped[(bounds[c - 1] if c else 0):bounds[c]]
            table = table_for_counts(np.bincount(group)) if group.size else FrequencyTable(np.ones(1, dtype=np.int64))
            tables.append(table)
            groups.append((group, table))
    else:
        tables = [table_for_counts(np.bincount(symbols))]
        groups.append((symbols, tables[0]))
    words = encode_groups(groups)
    return LevelPlane(values.size, direct_bits, mantissa_bits, row_table, col_table, row_count, col_count,
                      tuple(tables), words, 0, _pack_raw_bits(values, symbols, raw_bits))


def _contexts(row_classes: np.ndarray, col_classes: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    grid = row_classes.astype(np.uint8)[:, None] + col_classes.astype(np.uint8)[None, :]
    return grid[mask] if mask is not None else grid.ravel()


def _pack_raw_bits(values: np.ndarray, symbols: np.ndarray, raw_bits: np.ndarray) -> bytes:
    """§6.7: for each escape symbol in ascending order, the raw bits of its values in scan order."""
    escaped = np.flatnonzero(raw_bits)
    if escaped.size == 0:
        return b""
    order = escaped[np.argsort(symbols[escaped], kind="stable")]
    widths = raw_bits[order]
    low = values[order] & ((np.int64(1) << widths) - 1)
    chunks = []
    for width in np.unique(widths):  # equal widths are contiguous: widths grow with the symbol
        part = low[widths == width].astype(np.uint64)
        shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
        chunks.append(((part[:, None] >> shifts) & np.uint64(1)).astype(np.uint8).ravel())
    return np.packbits(np.concatenate(chunks)).tobytes()


# ---------------------------------------------------------------------------------------------
# decoding


def decode_plane(reader: ByteReader, rows: int, cols: int, mask: np.ndarray | None, expected_count: int,
                 limits: Limits, element: str) -> np.ndarray:
    """Read and decode a level plane; returns its int64 values in scan order."""
    plane = read_level_plane(reader, expected_count, limits, element)
    if plane.value_count == 0:
        return np.zeros(0, dtype=np.int64)
    groups: list[tuple[int, FrequencyTable]] = []
    if plane.row_class_table is not None:
        groups.append((rows, plane.row_class_table))
    if plane.col_class_table is not None:
        groups.append((cols, plane.col_class_table))
    class_part = decode_groups(plane.words, groups, element=f"{element}.words", offset=plane.words_offset)
    row_classes = class_part.pop(0) if plane.row_class_table is not None else np.zeros(rows, dtype=np.int32)
    col_classes = class_part.pop(0) if plane.col_class_table is not None else np.zeros(cols, dtype=np.int32)
    context_count = plane.context_count
    if context_count > 1:
        contexts = _contexts(row_classes, col_classes, mask)
        context_sizes = np.bincount(contexts, minlength=context_count)
    else:
        contexts = None
        context_sizes = np.array([plane.value_count])
    # One decoder runs through the classes and then every context's symbols, in stream order.
    decoded = decode_groups(plane.words, groups + list(zip(context_sizes.tolist(), plane.magnitude_tables)),
                            element=f"{element}.words", offset=plane.words_offset)[len(groups):]
    symbols = np.concatenate(decoded).astype(np.int64) if len(decoded) > 1 else decoded[0].astype(np.int64)
    if contexts is not None:
        in_scan_order = np.empty_like(symbols)
        in_scan_order[np.argsort(contexts, kind="stable")] = symbols
        symbols = in_scan_order
    return _add_raw_bits(plane, symbols, element)


def _add_raw_bits(plane: LevelPlane, symbols: np.ndarray, element: str) -> np.ndarray:
    direct_bits, mantissa_bits = plane.direct_bits, plane.mantissa_bits
    values = _symbol_base(symbols, direct_bits, mantissa_bits)
    escaped = np.flatnonzero(symbols >= (1 << direct_bits))
    widths_all = _symbol_raw_bits(symbols[escaped], direct_bits, mantissa_bits) if escaped.size else escaped
    total_bits = int(widths_all.sum()) if escaped.size else 0
    if len(plane.raw_bits) != -(-total_bits // 8):
        raise BitstreamError(f"raw_byte_count {len(plane.raw_bits)} contradicts the {total_bits} raw bits "
                             "the symbols need", element=f"{element}.raw_byte_count", offset=plane.raw_bits_offset - 4)
    if total_bits == 0:
        return values
    packed = np.frombuffer(plane.raw_bits, dtype=np.uint8)
    if total_bits % 8 and packed[-1] & ((1 << (8 - total_bits % 8)) - 1):
        raise BitstreamError("padding bits are not zero", element=f"{element}.raw_bits",
                             offset=plane.raw_bits_offset + len(plane.raw_bits) - 1)
    bits = np.unpackbits(packed, count=total_bits)
    order = escaped[np.argsort(symbols[escaped], kind="stable")]
    widths = widths_all[np.argsort(symbols[escaped], kind="stable")]
    low = np.empty(order.size, dtype=np.int64)
    start_bit = 0
    boundaries = np.flatnonzero(np.diff(widths)) + 1
    for part in np.split(np.arange(order.size), boundaries):
        width = int(widths[part[0]])
        field_bits = bits[start_bit:start_bit + part.size * width].reshape(part.size, width)
        low[part] = field_bits.astype(np.int64) @ (np.int64(1) << np.arange(width - 1, -1, -1, dtype=np.int64))
        start_bit += part.size * width
    values[order] += low
    return values
