"""Rate-distortion optimized choice of levels (encoder only: the format is unchanged).

The decoder rebuilds ``level x step`` whatever level the encoder wrote, so the encoder may pick
for every weight the level that minimises ``D + lambda * R`` instead of the nearest one. Here
``D`` is the squared error and ``R`` the bits the level costs under the tensor's own context
model (§6.4-§6.7: the context's code length of its symbol, its raw bits, a sign bit). With
``lambda = c * step**2`` the cost in units of the step is ``(|x| - m)**2 + c * bits(m)``.

Two decisions are made, each from rate tables estimated on the nearest levels (further passes,
re-estimating the tables on the chosen levels, are possible but gained < 0.1 % on MiniLM):

* **levels** (RDOQ): each weight takes the cheapest of rounding its magnitude down, rounding it
  up, or zero; evaluated for all weights at once, no per-weight loop;
* **block kinds** (UNIFIED mode): each block is kept DENSE (levels as above), UNIFIED (one
  magnitude, the weights' own signs) or PRUNED, whichever costs least. The format derives a
  block's kind from its levels (§6.3), so choosing a kind is choosing its levels.

``c = ln 2 / 6 ~ 0.116`` is the slope of a uniform quantizer's high-rate curve
(``D = step**2 / 12``, one bit per halving of the step): at that ``c`` the decisions trade
error for bits at the same rate as a change of qp does.
"""

from __future__ import annotations

import numpy as np

from .blocks import block_sizes, expand_blocks, grid_shape
from .classes import choose_classes, line_log_means
from .format import BlockKind
from .planes import _binarize_fast, binarize
from .quant import MAX_LEVEL, level_type

_SMOOTHING = 0.5  # added to every count: a symbol never seen still has a finite price
_PASSES = 1  # a second pass re-estimating the tables changed MiniLM by < 0.1 % at twice the time
_KIND_PRIOR_BITS = float(np.log2(3))  # before any kind statistics: every kind equally likely
_TABLE_LIMIT = 1 << 16  # magnitudes priced by lookup table up to here, by binarization beyond
_CHUNK = 1 << 20  # positions whose histogram keys are formed at a time

Classes = tuple[np.ndarray, np.ndarray]  # row class per row, column class per column (§6.5)


class _PlaneRates:
    """Bits a magnitude costs at each position of a plane: the smoothed code length of its
    symbol in the position's context, plus its raw bits and, when it is non-zero, a sign bit.

    Built from the current magnitudes (rows x cols, any integer type) with the contexts the
    writer would choose for them; keeps no per-position array.
    """

    def __init__(self, magnitudes: np.ndarray, largest: int, direct_bits: int = 4, mantissa_bits: int = 2,
                 use_contexts: bool = True):
        rows, cols = magnitudes.shape
        self.direct_bits, self.mantissa_bits = direct_bits, mantissa_bits
        values = magnitudes.ravel()
        symbols = _binarize_fast(values, int(values.max(initial=0)), direct_bits, mantissa_bits)
        if use_contexts and values.size:
            row_classes, col_classes = choose_classes(symbols, line_log_means(magnitudes, None), None)
        else:
            row_classes, col_classes = np.zeros(rows, np.int64), np.zeros(cols, np.int64)
        self.row_classes, self.col_classes = row_classes, col_classes
        self.classes: Classes = (row_classes, col_classes)
        context_count = int(row_classes.max()) + int(col_classes.max()) + 1
        top_symbol, _ = binarize(np.array([max(largest, 1) + 1]), direct_bits, mantissa_bits)
        alphabet = int(top_symbol[0]) + 1
        joint = np.zeros(context_count * alphabet, dtype=np.int64)
        for start in range(0, values.size, _CHUNK):  # int32 keys a chunk at a time
            stop = min(start + _CHUNK, values.size)
            joint += np.bincount(self.contexts(start, stop) * alphabet + symbols[start:stop],
                                 minlength=context_count * alphabet)
        joint = joint.reshape(context_count, alphabet).astype(np.float64) + _SMOOTHING
        self.symbol_bits = np.log2(joint.sum(axis=1, keepdims=True)) - np.log2(joint)
        self.alphabet = alphabet
        self.table_size = min(max(largest, 1) + 2, _TABLE_LIMIT)
        table_symbols, table_raw = binarize(np.arange(self.table_size), direct_bits, mantissa_bits)
        signs = (np.arange(self.table_size) > 0).astype(np.float64)
        # (contexts, magnitudes); float32 halves the memory traffic of the lookups
        self.table = (self.symbol_bits[:, table_symbols] + table_raw + signs).astype(np.float32)
        self.steps = np.abs(np.diff(self.table, axis=1))  # |bits(m + 1) - bits(m)|
        self.largest_step = float(self.steps.max(initial=0.0))
        self.largest_gain = float((self.table - self.table[:, :1]).max(initial=0.0))

    def contexts(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The int32 context of each position ``start..stop`` of the plane in scan order
        (all positions by default)."""
        row_classes, col_classes = self.row_classes.astype(np.int32), self.col_classes.astype(np.int32)
        cols = col_classes.size
        stop = row_classes.size * cols if stop is None else stop
        first_row, first_col = divmod(start, cols)
        last_row, last_col = divmod(stop, cols)
        if first_row == last_row:
            return row_classes[first_row] + col_classes[first_col:last_col]
        # the rest of the first row, the whole rows between, the start of the last row
        middle = row_classes[first_row + 1:last_row, None] + col_classes[None, :]
        tail = row_classes[last_row] + col_classes[:last_col] if last_col else np.zeros(0, np.int32)
        return np.concatenate([row_classes[first_row] + col_classes[first_col:], middle.ravel(), tail])

    def step_bits(self, contexts: np.ndarray, magnitudes: np.ndarray) -> np.ndarray:
        """``|bits(m + 1) - bits(m)|`` at each context (an upper bound beyond the table)."""
        inside = magnitudes < self.table_size - 1
        if inside.all():
            return self.steps.ravel()[contexts * (self.table_size - 1) + magnitudes]
        result = np.full(magnitudes.shape, max(self.largest_step, 64.0), dtype=np.float32)
        result[inside] = self.steps.ravel()[contexts[inside] * (self.table_size - 1) + magnitudes[inside]]
        return result

    def zero_reach(self, scale: float) -> int:
        """The largest nearest level that zero might beat: a level ``m`` costs
        ``m * (2a - m) >= m * (m - 1)`` more distortion as zero, which bits can repay only
        while ``m * (m - 1) < scale * (bits(m) - bits(0))``."""
        budget = scale * self.largest_gain
        return int(np.floor(0.5 + np.sqrt(0.25 + budget))) + 1

    def bits(self, contexts: np.ndarray, magnitudes: np.ndarray) -> np.ndarray:
        """Bits of each magnitude at its context (arrays of the same shape)."""
        small = magnitudes < self.table_size
        if small.all():
            return self.table.ravel()[contexts * self.table_size + magnitudes]
        result = np.empty(magnitudes.shape, dtype=np.float32)
        result[small] = self.table.ravel()[contexts[small] * self.table_size + magnitudes[small]]
        symbols, raw = binarize(magnitudes[~small], self.direct_bits, self.mantissa_bits)
        symbols = np.minimum(symbols, self.alphabet - 1)
        result[~small] = self.symbol_bits[contexts[~small], symbols] + raw + 1.0
        return result


def _order0_bits(values: np.ndarray, size: int) -> np.ndarray:
    """Smoothed order-0 code lengths of the symbols 0..size-1 given observed ``values``."""
    return _order0_bits_of_counts(np.bincount(values, minlength=size), size)


def _order0_bits_of_counts(counts: np.ndarray, size: int) -> np.ndarray:
    """:func:`_order0_bits` from the symbols' counts."""
    counts = counts[:size].astype(np.float64) + _SMOOTHING
    return np.log2(counts.sum()) - np.log2(counts)


def _rdoq(magnitudes: np.ndarray, rates: _PlaneRates, contexts: np.ndarray, scale: float,
          want_cost: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """For magnitudes ``a`` (flat, in steps): the best of floor(a), floor(a) + 1 and 0 by
    ``(a - m)**2 + scale * bits(m)``, and that cost (None unless ``want_cost``).

    Rounding up beats rounding down exactly when ``2 f - 1 > scale * (bits(up) - bits(down))``
    (``f`` the fraction of ``a``), so the nearest level is kept without pricing it wherever
    ``|2 f - 1|`` exceeds the scaled bit difference; zero can only win for small levels.
    """
    floor = np.floor(magnitudes)
    fraction = magnitudes - floor
    down = np.minimum(floor, MAX_LEVEL - 1, out=floor).astype(np.int32)
    nearest = down + (fraction > 0.5)
    fraction *= 2
    fraction -= 1
    undecided = np.abs(fraction, out=fraction) < scale * rates.step_bits(contexts, down)
    undecided |= nearest <= rates.zero_reach(scale)
    cost = (magnitudes - nearest) ** 2 if want_cost else None
    where = np.flatnonzero(undecided)
    if where.size:
        a, ctx, low = magnitudes[where], contexts[where], down[where]
        cost_down = (a - low) ** 2 + scale * rates.bits(ctx, low)
        cost_up = (low + 1 - a) ** 2 + scale * rates.bits(ctx, low + 1)
        cost_zero = a ** 2 + scale * rates.bits(ctx, np.zeros_like(low))
        best = np.where(cost_up < cost_down, low + 1, low)
        best_cost = np.minimum(cost_up, cost_down)
        zero = cost_zero < best_cost
        nearest[where] = np.where(zero, 0, best)
        if want_cost:
            cost[where] = np.where(zero, cost_zero, best_cost)
    if want_cost and where.size < magnitudes.size:
        decided = np.flatnonzero(~undecided)
        cost[decided] += scale * rates.bits(contexts[decided], nearest[decided])
    return nearest, cost


def optimize_dense(scaled: np.ndarray, offsets: np.ndarray | None, scale: float,
                   use_contexts: bool = True, passes: int = _PASSES) -> tuple[np.ndarray, Classes]:
    """RDOQ of a DENSE matrix: ``scaled`` are the values in steps (rows x cols, float32; used
    up), ``offsets`` the column offsets the residuals are coded against (or None). Returns
    the levels (the narrowest of int8, int16 and int32 that holds any level it can choose)
    and the context classes their rates were estimated with (fit to code them).

    Works a piece of rows at a time: memory holds the magnitudes (in place of ``scaled``),
    the signs as bits and the levels."""
    rows, cols = scaled.shape
    pieces = _BlockRowPieces(rows, cols, 1, max(cols, 1))
    if offsets is not None:
        scaled -= offsets.astype(np.float32)[None, :]  # the residuals
    negative = [np.packbits(scaled[piece] < 0) for piece, _ in pieces]
    magnitudes = np.abs(scaled, out=scaled)
    reach = int(np.abs(offsets).max(initial=0)) if offsets is not None else 0
    current = np.empty(scaled.shape, dtype=level_type(float(magnitudes.max(initial=0.0)) + 2 + reach))
    for piece, _ in pieces:
        current[piece] = np.rint(magnitudes[piece])
    for _ in range(passes):
        rates = _PlaneRates(current, int(current.max(initial=0)), use_contexts=use_contexts)
        for piece, _ in pieces:
            chosen, _ = _rdoq(magnitudes[piece].ravel(), rates, rates.contexts(piece.start * cols, piece.stop * cols),
                              scale, want_cost=False)
            current[piece] = chosen.reshape(-1, cols)
    _apply_negative(current, pieces, negative)
    if offsets is not None:
        current += offsets.astype(current.dtype)[None, :]
    return current, rates.classes


def _apply_negative(levels: np.ndarray, pieces: _BlockRowPieces, negative: list[np.ndarray]) -> None:
    """Negate, in place, the levels whose sign bit (packed per piece) is set."""
    for (piece, _), bits in zip(pieces, negative):
        part = levels[piece]
        np.negative(part, out=part, where=np.unpackbits(bits, count=part.size).reshape(part.shape).view(bool))


def optimize_unified(scaled: np.ndarray, block: tuple[int, int], scale: float, use_contexts: bool = True,
                     passes: int = _PASSES, choose_kinds: bool = True) -> tuple[np.ndarray, Classes]:
    """RDO levels of a UNIFIED matrix (``scaled``: values in steps, rows x cols, float32): per-weight
    RDOQ inside dense blocks and, with ``choose_kinds``, each block's kind by its cost.
    Returns levels (int8, int16 or int32: the narrowest type that holds any level the RDO
    can choose, from the largest magnitude) and the context classes of the dense plane's
    rate estimate.

    Works a piece of whole block rows at a time: memory holds the magnitudes (``scaled``
    itself, which is used up), the signs, the levels and per-block figures (a few numbers
    per block), not per-element costs and kinds."""
    rows, cols = scaled.shape
    block_rows, block_cols = block
    pieces = _BlockRowPieces(rows, cols, block_rows, block_cols)
    negative = [np.packbits(scaled[piece] < 0) for piece, _ in pieces]  # a bit per element
    magnitudes = np.abs(scaled, out=scaled)
    # every level chosen is at most a magnitude rounded up, plus one
    current = np.empty(scaled.shape, dtype=level_type(float(magnitudes.max(initial=0.0)) + 2))
    for piece, _ in pieces:
        current[piece] = np.rint(magnitudes[piece])
    grid_rows, grid_cols = grid_shape(rows, cols, block_rows, block_cols)
    kind_bits = np.full(len(BlockKind), _KIND_PRIOR_BITS)
    unified_bits = None
    for _ in range(passes):
        rates = _PlaneRates(current, int(current.max(initial=0)), use_contexts=use_contexts)
        # the dense levels go where the current levels were (the rates are built from them)
        dense = np.zeros((grid_rows, grid_cols))  # each block's cost as dense
        dense_histogram = np.zeros((1 << 12) + 1, dtype=np.int64)
        for piece, grid in pieces:
            chosen, cost = _rdoq(magnitudes[piece].ravel(), rates, rates.contexts(piece.start * cols, piece.stop * cols),
                                 scale, want_cost=choose_kinds)
            current[piece] = chosen.reshape(-1, cols)
            if choose_kinds:
                dense[grid] = _BlockSums(block_rows, block_cols, grid.stop - grid.start, grid_cols)(cost.reshape(-1, cols))
                if unified_bits is None:
                    dense_histogram += np.bincount(np.minimum(chosen, 1 << 12), minlength=(1 << 12) + 1)
        if not choose_kinds:
            continue
        if unified_bits is None:  # no unified blocks seen yet: price their magnitudes like weights
            unified_bits = _order0_bits_of_counts(dense_histogram, (1 << 12) + 1)[1:]
        dense += scale * kind_bits[BlockKind.DENSE]
        kinds = np.empty((grid_rows, grid_cols), dtype=np.int8)
        chosen_unified = []
        for piece, grid in pieces:  # each block's kind, and the levels it gives its elements
            sums = _BlockSums(block_rows, block_cols, grid.stop - grid.start, grid_cols)
            piece_kinds, magnitude = _block_kinds(sums(magnitudes[piece]), sums(magnitudes[piece] ** 2), dense[grid],
                                                  pieces.sizes[grid], kind_bits, unified_bits, scale)
            kinds[grid] = piece_kinds
            chosen_unified.append(magnitude[piece_kinds == BlockKind.UNIFIED])
            element_kinds = expand_blocks(piece_kinds, block_rows, block_cols, piece.stop - piece.start, cols)
            unified_magnitude = expand_blocks(magnitude, block_rows, block_cols, piece.stop - piece.start, cols)
            current[piece] = np.where(element_kinds == BlockKind.DENSE, current[piece],
                                      np.where(element_kinds == BlockKind.UNIFIED, unified_magnitude, 0))
        kind_counts = np.bincount(kinds.ravel(), minlength=len(BlockKind)).astype(np.float64) + _SMOOTHING
        kind_bits = np.log2(kind_counts.sum()) - np.log2(kind_counts)
        chosen_unified = np.concatenate(chosen_unified)
        if chosen_unified.size >= 64:
            unified_bits = _order0_bits(np.minimum(chosen_unified - 1, unified_bits.size - 1), unified_bits.size)
    _apply_negative(current, pieces, negative)
    return current, rates.classes


def _block_kinds(total: np.ndarray, energy: np.ndarray, dense: np.ndarray, count: np.ndarray,
                 kind_bits: np.ndarray, unified_bits: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Each block's cheapest kind by ``distortion + scale * bits``, and its best unified
    magnitude, from its sum of magnitudes, sum of squares, cost as dense and element count
    (grids of the same shape)."""
    pruned = energy + scale * kind_bits[BlockKind.PRUNED]
    mean = total / count
    best_unified = np.full(mean.shape, np.inf)
    best_magnitude = np.ones(mean.shape, dtype=np.int64)
    for candidate in (np.floor(mean), np.floor(mean) + 1):
        magnitude = np.clip(candidate, 1, min(unified_bits.size, MAX_LEVEL)).astype(np.int64)
        distortion = energy - 2 * magnitude * total + count * magnitude ** 2
        cost = distortion + scale * (kind_bits[BlockKind.UNIFIED] + unified_bits[magnitude - 1] + count)
        better = cost < best_unified
        best_unified[better], best_magnitude[better] = cost[better], magnitude[better]
    kinds = np.full(mean.shape, BlockKind.DENSE, dtype=np.int64)
    kinds[best_unified < dense] = BlockKind.UNIFIED
    kinds[(pruned < dense) & (pruned <= best_unified)] = BlockKind.PRUNED
    return kinds, best_magnitude


class _BlockRowPieces:
    """The matrix in pieces of whole block rows (about _CHUNK elements each): iterating gives
    each piece's row slice and its slice of the block grid's rows."""

    def __init__(self, rows: int, cols: int, block_rows: int, block_cols: int):
        self.rows, self.cols = rows, cols
        self.block_rows, self.block_cols = block_rows, block_cols
        self.sizes = block_sizes(rows, cols, block_rows, block_cols).astype(np.float64)  # elements per block
        self.step = max(1, _CHUNK // max(1, cols * block_rows)) * block_rows

    def __iter__(self):
        for start in range(0, self.rows, self.step):
            stop = min(start + self.step, self.rows)
            yield slice(start, stop), slice(start // self.block_rows, -(-stop // self.block_rows))


class _BlockSums:
    """Sums of a rows x cols array over each block (edge blocks partial), as a grid."""

    def __init__(self, block_rows: int, block_cols: int, grid_rows: int, grid_cols: int):
        self.block_rows, self.block_cols = block_rows, block_cols
        self.grid_rows, self.grid_cols = grid_rows, grid_cols

    def __call__(self, values: np.ndarray) -> np.ndarray:
        rows, cols = values.shape
        padded = np.zeros((self.grid_rows * self.block_rows, self.grid_cols * self.block_cols))
        padded[:rows, :cols] = values
        return padded.reshape(self.grid_rows, self.block_rows, self.grid_cols, self.block_cols).sum(axis=(1, 3))

