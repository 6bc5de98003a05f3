"""The encoder's choice of context classes for a level plane (spec §6.5).

The format fixes only how classes are coded and how they form contexts (``row_class +
col_class``); which rows and columns share a class is the encoder's choice. Classes start as
rounded logarithms of each line's mean magnitude, so ``row + col`` approximates the log of the
local scale, and large planes then refine them by Lloyd iterations on the code length.
"""

from __future__ import annotations

import numpy as np

from .format import MAX_CLASS_COUNT

_CHUNK = 1 << 20  # elements per pass over a masked plane (no plane-sized temporaries)


def entropy_bits(counts: np.ndarray) -> float:
    """Bits an ideal order-0 code takes for symbols with these counts."""
    counts = counts[counts > 0].astype(np.float64)
    total = counts.sum()
    return float(-(counts * np.log2(counts / total)).sum()) if total else 0.0


def table_bits(counts: np.ndarray) -> float:
    """Rough size of a frequency table for ``counts``: each used symbol costs a few bits plus
    half the log of its share (the usual cost of a learned parameter)."""
    used = counts[counts > 0]
    if used.size <= 1:
        return 16.0
    return 24.0 + float(np.sum(3.0 + 0.5 * np.log2(used + 1.0)))


LineMeans = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # row log means, rows present, the same of columns


def line_log_means(magnitudes: np.ndarray, mask: np.ndarray | None, signed: bool = False) -> LineMeans:
    """What :func:`choose_classes` reads of a plane's magnitudes: log2 of each row's and each
    column's mean magnitude over the masked positions, and which lines have any. With
    ``signed`` (a masked plane only), ``magnitudes`` are signed levels, taken absolute."""
    return (*_line_log_means(magnitudes, mask, 1, signed), *_line_log_means(magnitudes, mask, 0, signed))


def _line_log_means(magnitudes: np.ndarray, mask: np.ndarray | None, axis: int,
                    signed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """log2 of the mean magnitude along ``axis`` over masked positions, and which lines have any."""
    assert mask is not None or not signed
    if mask is None:
        sums = magnitudes.sum(axis=axis, dtype=np.float64)
        counts = np.full(sums.shape, magnitudes.shape[axis], dtype=np.float64)
    else:  # a few rows at a time: no masked copy of the whole plane
        rows, cols = magnitudes.shape
        sums = np.zeros(cols if axis == 0 else rows, dtype=np.float64)
        counts = np.zeros(sums.size, dtype=np.float64)
        step = max(1, _CHUNK // max(1, cols))
        for start in range(0, rows, step):
            covered = mask[start:start + step]
            lines = magnitudes[start:start + step]
            masked = np.where(covered, np.abs(lines) if signed else lines, 0)
            if axis == 0:
                sums += masked.sum(axis=0, dtype=np.float64)
                counts += covered.sum(axis=0, dtype=np.float64)
            else:
                sums[start:start + step] = masked.sum(axis=1, dtype=np.float64)
                counts[start:start + step] = covered.sum(axis=1, dtype=np.float64)
    present = counts > 0
    return np.log2(np.divide(sums, np.maximum(counts, 1)) + 0.5), present


def _classes(log_means: np.ndarray, present: np.ndarray, resolution: float, limit: int) -> np.ndarray:
    """Class index of each line: its log mean in steps of ``resolution`` from a low percentile,
    clipped to ``limit`` classes so that a few outlying lines do not spread the classes thin."""
    if not present.any():
        return np.zeros(log_means.size, dtype=np.int64)
    low, high = np.percentile(log_means[present], [0.5, 99.5])
    count = min(limit, int(np.floor((high - low) / resolution)) + 1)
    classes = np.clip(np.rint((log_means - low) / resolution), 0, count - 1).astype(np.int64)
    classes[~present] = 0
    return classes


def _every_nth_position(mask: np.ndarray, step: int) -> np.ndarray:
    """``np.flatnonzero(mask)[::step]``, a few rows at a time: no index array of every masked
    position (8 bytes each)."""
    rows, cols = mask.shape
    chunk_rows = max(1, _CHUNK // max(1, cols))
    picked, seen = [], 0  # masked positions before the chunk
    for start in range(0, rows, chunk_rows):
        positions = np.flatnonzero(mask[start:start + chunk_rows])
        first = -seen % step  # the chunk's first position whose global index is a multiple of step
        picked.append(positions[first::step] + start * cols)
        seen += positions.size
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.intp)


def choose_classes(symbols: np.ndarray, means: LineMeans, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Row and column class indices for the plane's contexts (§6.5), chosen by estimated size.

    A class is a rounded log2 of the line's mean magnitude, so ``row + col`` approximates the
    log of the local scale. Small planes get a single context: tables would cost more.
    ``means`` is what :func:`line_log_means` found in the plane's magnitudes; ``symbols`` are
    the masked positions' in scan order.
    """
    row_log, row_present, col_log, col_present = means
    rows, cols = row_log.size, col_log.size
    one = (np.zeros(rows, dtype=np.int64), np.zeros(cols, dtype=np.int64))
    if symbols.size < 4096 or int(symbols.max()) == int(symbols.min()):
        return one  # a constant plane (e.g. the block map of a dense tensor) costs nothing anyway
    # Estimate on a regular sample of the plane's positions (row, col) in scan order.
    sample_step = max(1, symbols.size // (1 << 16))
    picked = (_every_nth_position(mask, sample_step) if mask is not None
              else np.arange(0, rows * cols, sample_step))
    sample_rows, sample_cols = np.divmod(picked, cols)
    sample_symbols = symbols[::sample_step].astype(np.int64)
    alphabet = int(symbols.max()) + 1
    scale = symbols.size / sample_symbols.size

    def estimated_bits(row_classes, col_classes):
        context_count = int(row_classes.max() + col_classes.max()) + 1
        ctx = row_classes[sample_rows] + col_classes[sample_cols]
        joint = np.bincount(ctx * alphabet + sample_symbols, minlength=context_count * alphabet)
        joint = joint.reshape(context_count, alphabet).astype(np.float64)
        totals = joint.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            coded = -np.nansum(joint * np.log2(joint / totals)) * scale
        used = joint > 0
        tables = float(np.sum(used * (3.0 + 0.5 * np.log2(joint * scale + 1.0)))) + 24.0 * context_count
        side = 0.0
        for classes in (row_classes, col_classes):
            if classes.max() > 0:
                side += entropy_bits(np.bincount(classes)) + table_bits(np.bincount(classes))
        return coded + tables + side

    best, best_cost = one, estimated_bits(*one)
    limit = MAX_CLASS_COUNT // 2
    for resolution in (0.125, 0.25, 0.5):
        row_classes = _classes(row_log, row_present, resolution, limit) if rows > 1 else one[0]
        col_classes = _classes(col_log, col_present, resolution, limit) if cols > 1 else one[1]
        for candidate in ((row_classes, col_classes), (row_classes, one[1]), (one[0], col_classes)):
            cost = estimated_bits(*candidate)
            if cost < best_cost:
                best, best_cost = candidate, cost
    if mask is None and symbols.size >= _REFINE_MIN_SIZE and (best[0].max() > 0 or best[1].max() > 0):
        return refine_classes(symbols.reshape(rows, cols), *best)
    return best


_REFINE_MIN_SIZE = 1 << 18  # below this, refinement gains too little to pay for its time
_REFINE_ROUNDS = 4
_COLUMN_SAMPLE = 1 << 20  # positions used to reassign columns
_SMOOTHING = 0.5  # added to every count when estimating code lengths


def _code_lengths(joint: np.ndarray) -> np.ndarray:
    """Bits per symbol under each context's smoothed histogram (rows of ``joint``)."""
    smoothed = joint + _SMOOTHING
    return np.log2(smoothed.sum(axis=1, keepdims=True)) - np.log2(smoothed)


def refine_classes(symbols: np.ndarray, row_classes: np.ndarray,
                   col_classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations on the classes of an unmasked plane (``symbols`` is rows x cols).

    Each round moves every row to the row class whose contexts code it in the fewest bits,
    given the context histograms of the current classes (plus the cost of the class index
    itself), then does the same for columns. The class counts never grow. Returns the new
    (row classes, column classes); both have the input's class counts at most.
    """
    alphabet = int(symbols.max()) + 1
    row_classes, col_classes = row_classes.astype(np.intp), col_classes.astype(np.intp)
    row_count, col_count = int(row_classes.max()) + 1, int(col_classes.max()) + 1
    context_count = row_count + col_count - 1
    rows = _LineKeys(symbols, col_count, alphabet)
    # a column keeps thousands of samples in a regular subset of the rows
    step = max(1, symbols.size // _COLUMN_SAMPLE)
    columns = _LineKeys(np.ascontiguousarray(symbols[::step].T), row_count, alphabet)
    for _ in range(_REFINE_ROUNDS):
        if row_count > 1:
            row_classes = _reassign(rows.histograms(col_classes), col_count, row_count, context_count, alphabet,
                                    row_classes)
        if col_count > 1:
            col_classes = _reassign(columns.histograms(row_classes[::step]), row_count, col_count, context_count,
                                    alphabet, col_classes)
    return row_classes, col_classes


class _LineKeys:
    """Histogram keys of a matrix's lines (rows of ``symbols``): line ``i``, other-axis class
    ``k`` and symbol ``s`` count at ``(i * other_count + k) * alphabet + s``."""

    # keys are formed this many at a time: no full-size key array, and each chunk's histogram
    # stays in cache (1.5x faster than chunks of 2**20 on a 30522 x 384 plane)
    _CHUNK = 1 << 17

    def __init__(self, symbols: np.ndarray, other_count: int, alphabet: int):
        self.symbols = symbols
        self.lines, self.other_count, self.alphabet = symbols.shape[0], other_count, alphabet
        size = self.lines * other_count * alphabet
        # int32 keys when they fit (half the memory of intp on a large plane)
        self.key_type = np.int32 if size < (1 << 31) else np.intp

    def histograms(self, other_classes: np.ndarray) -> np.ndarray:
        """histogram[i, k * alphabet + s] for the given classes of the other axis, float32
        (exact below 2**24)."""
        size = self.lines * self.other_count * self.alphabet
        offsets = (other_classes * self.alphabet).astype(self.key_type)[None, :]
        width = self.other_count * self.alphabet  # histogram entries per line
        histogram = np.empty(size, dtype=np.float32)
        rows = max(1, self._CHUNK // max(1, self.symbols.shape[1]))
        line_starts = (np.arange(rows, dtype=self.key_type) * self.key_type(width))[:, None]
        for start in range(0, self.lines, rows):
            stop = min(start + rows, self.lines)
            key = self.symbols[start:stop].astype(self.key_type)  # keys of these lines, from 0
            key += offsets
            key += line_starts[:stop - start]
            histogram[start * width:stop * width] = np.bincount(key.ravel(), minlength=(stop - start) * width)
        return histogram.reshape(self.lines, -1)


def _reassign(histogram: np.ndarray, other_count: int, own_count: int, context_count: int, alphabet: int,
              own_classes: np.ndarray) -> np.ndarray:
    """New classes for the lines whose ``histogram`` (from :class:`_LineKeys`) is given: each
    line priced under every candidate class's contexts (context = own class + other class),
    with the context statistics of the current classes."""
    lines = histogram.shape[0]
    membership = np.zeros((own_count, lines), dtype=np.float32)
    membership[own_classes, np.arange(lines)] = 1
    per_class = (membership @ histogram).reshape(own_count, other_count, alphabet)
    joint = np.zeros((context_count, alphabet))
    for own in range(own_count):
        joint[own:own + other_count] += per_class[own]
    lengths = _code_lengths(joint)
    # price[(k, s), r] = bits of symbol s at other-class k when the line has class r
    price = np.stack([lengths[r:r + other_count].ravel() for r in range(own_count)], axis=1).astype(np.float32)
    class_bits = _code_lengths(np.bincount(own_classes, minlength=own_count)[None, :].astype(np.float64))[0]
    cost = histogram @ price + class_bits.astype(np.float32)
    return np.argmin(cost, axis=1)
