"""Coding of magnitude planes: binarization, contexts and raw bits (spec §6.4, §6.5, §6.7).

A *plane* is a 2-D grid (the tensor's matrix, or its grid of blocks) with a mask of the
positions it covers; its values are non-negative integers in *scan order* (row-major over the
masked positions). Each value becomes a small symbol plus raw low-order bits (§6.4). Symbols
are range-coded with a context per position, ``row_class[i] + col_class[j]``, taken from class
indices that the plane codes first, so the decoder knows every position's context before it
decodes any magnitude and decodes each context's symbols in one call.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from .bitio import BitPacker, padding_is_zero
from .classes import choose_classes, entropy_bits, line_log_means, table_bits
from .entropy import DECODE_PIECE, FrequencyTable, RangeDecoder, encode_groups, table_for_counts
from .errors import BitstreamError, EncodeError
from .format import MAX_DIRECT_BITS, MAX_MAGNITUDE_EXPONENT, Limits
from .memory import release_pages
from .quant import level_type
from .syntax import ByteReader, LevelPlane, magnitude_alphabet_limit, read_level_plane

_MAX_VALUE = (1 << (MAX_MAGNITUDE_EXPONENT + 1)) - 1
_CHUNK = 1 << 20  # elements per pass where numpy would take a wide copy of a whole plane


# ---------------------------------------------------------------------------------------------
# §6.4 binarization


def binarize(values: np.ndarray, direct_bits: int, mantissa_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbols and raw-bit counts of magnitudes (§6.4).

    ``m < 2**q`` is symbol ``m``; otherwise with ``e = floor(log2 m)`` the symbol is
    ``2**q + (e - q) * 2**M + ((m >> (e - M)) mod 2**M)`` and the ``e - M`` low bits of ``m``
    are sent raw.
    """
    values = np.asarray(values, dtype=np.int64)
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


@functools.lru_cache(maxsize=64)
def symbol_tables(direct_bits: int, mantissa_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """For every symbol of the binarization: the magnitude it stands for before its raw bits
    are added, and its number of raw bits (§6.4)."""
    count = magnitude_alphabet_limit(direct_bits, mantissa_bits)
    symbol = np.arange(count, dtype=np.int64)
    k = symbol - (1 << direct_bits)
    exponent = direct_bits + (k >> mantissa_bits)
    escaped = symbol >= (1 << direct_bits)
    base = np.where(escaped, ((1 << mantissa_bits) + (k & ((1 << mantissa_bits) - 1)))
                    << np.where(escaped, exponent - mantissa_bits, 0), symbol)
    width = np.where(escaped, exponent - mantissa_bits, 0)
    return base.astype(np.int32), width.astype(np.int32)


_LOOKUP_LIMIT = 1 << 16


def _symbol_type(largest: int, direct_bits: int, mantissa_bits: int) -> type:
    """uint8 when the symbols of values up to ``largest`` fit, else uint16."""
    top, _ = binarize(np.array([largest]), direct_bits, mantissa_bits)  # symbols grow with values
    return np.uint8 if int(top[0]) < 256 else np.uint16


def _binarize_fast(values: np.ndarray, largest: int, direct_bits: int, mantissa_bits: int, *,
                   in_place: bool = False, raw: _RawBits | None = None) -> np.ndarray:
    """Symbols of ``values`` (non-negative, at most ``largest``) as :func:`_symbol_type`; by
    table lookup when the values are small. With ``in_place`` (allowed when ``values`` is
    flat, contiguous and at least as wide as that type), the symbols are written over the
    values, which are used up: a symbol is never larger than its value, and a narrower
    symbol goes to the front of the values' memory (each piece's symbols are written only
    once its values are read, and they land no further on than those). ``raw`` collects the
    raw bits of the escape symbols (§6.7) on the way."""
    dtype = _symbol_type(largest, direct_bits, mantissa_bits)
    if in_place:
        assert values.ndim == 1 and values.flags.c_contiguous and values.dtype.itemsize >= np.dtype(dtype).itemsize
        symbols = values.view(np.uint8)[:values.size * np.dtype(dtype).itemsize].view(dtype)
    else:
        symbols = np.empty(values.shape, dtype)
    lookup = binarize(np.arange(largest + 1), direct_bits, mantissa_bits)[0].astype(dtype) \
        if largest < _LOOKUP_LIMIT else None
    flat, flat_symbols = values.reshape(-1), symbols.reshape(-1)
    for start in range(0, flat.size, _CHUNK):  # indexing and binarize take an intp or int64 copy
        part = flat[start:start + _CHUNK]
        part_symbols = lookup[part] if lookup is not None else binarize(part, direct_bits, mantissa_bits)[0]
        if raw is not None:
            raw.add(part, part_symbols)
        flat_symbols[start:start + _CHUNK] = part_symbols  # (in place: after the values are read)
        release_pages(part)  # values read from a mapped file (an integer tensor's) are not read again
    return symbols


def symbol_histogram(symbols: np.ndarray, minlength: int = 0) -> np.ndarray:
    """``np.bincount(symbols.ravel(), minlength=minlength)``, a chunk at a time (bincount
    takes an intp copy of its input: eight bytes a symbol)."""
    flat = symbols.reshape(-1)
    counts = np.zeros(max(minlength, int(flat.max()) + 1 if flat.size else 0), dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        part = np.bincount(flat[start:start + _CHUNK])
        counts[:part.size] += part
    return counts


def _run_histogram(pieces: list[np.ndarray]) -> np.ndarray:
    """:func:`symbol_histogram` of the pieces joined (empty: no counts), without joining them."""
    counts = np.zeros(0, dtype=np.int64)
    for piece in pieces:
        if piece.size:
            part = symbol_histogram(piece)
            if part.size > counts.size:
                counts = np.concatenate([counts, np.zeros(part.size - counts.size, dtype=np.int64)])
            counts[:part.size] += part
    return counts


def choose_binarization(distinct_values: np.ndarray, counts: np.ndarray) -> tuple[int, int]:
    """(direct_bits, mantissa_bits) with the fewest estimated bits for a histogram of values.

    Sizes differ little between binarizations (raw low bits of large magnitudes are nearly
    uniform), so speed breaks near-ties: each escaped value is charged a quarter bit, for the
    work of reading its raw bits, and each alphabet symbol slows the range decoder's search.
    """
    largest = int(distinct_values[-1])
    best, best_cost = (0, 0), np.inf
    for direct_bits in range(0, MAX_DIRECT_BITS + 1):
        for mantissa_bits in sorted({min(2, direct_bits), min(3, direct_bits)}):
            symbols, raw = binarize(distinct_values, direct_bits, mantissa_bits)
            symbol_counts = np.bincount(symbols, weights=counts)
            alphabet = int(symbols.max()) + 1
            escaped = float(counts[distinct_values >= (1 << direct_bits)].sum())
            cost = (entropy_bits(symbol_counts) + float(counts @ raw)) * (1 + 0.002 * np.log2(alphabet))
            cost += table_bits(symbol_counts) + 0.25 * escaped
            if cost < best_cost:
                best, best_cost = (direct_bits, mantissa_bits), cost
        if (1 << direct_bits) > largest:
            break
    return best


_HISTOGRAM_SAMPLE = 1 << 20  # values the binarization choice looks at


def _value_histogram(values: np.ndarray, largest: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts in a regular sample of ``values`` that includes the
    largest one. Huge values are rounded down to 3 significant bits, which keeps their
    exponent: all the binarization choice depends on."""
    if values.size > _HISTOGRAM_SAMPLE:
        values = np.append(values[::values.size // _HISTOGRAM_SAMPLE], largest)
    if largest < (1 << 20):
        histogram = np.bincount(values, minlength=largest + 1)
        distinct = np.flatnonzero(histogram)
        return distinct, histogram[distinct]
    shift = np.maximum(np.frexp(values.astype(np.float64))[1] - 4, 0)
    return np.unique((values >> shift) << shift, return_counts=True)


# ---------------------------------------------------------------------------------------------
# encoding


def encode_plane(magnitudes: np.ndarray, mask: np.ndarray | None = None, *, use_contexts: bool = True,
                 binarization: tuple[int, int] | None = None,
                 classes: tuple[np.ndarray, np.ndarray] | None = None, scratch: bool = False,
                 signed: bool = False) -> LevelPlane:
    """Code the masked values of the non-negative integer grid ``magnitudes`` (§6.5).

    The encoder's choices can be fixed instead of searched for: ``binarization`` as
    ``(direct_bits, mantissa_bits)`` and ``classes`` as (row class per grid row, column class
    per grid column); conformance streams use this to exercise chosen syntax paths.
    ``scratch`` says that ``magnitudes`` is the caller's temporary, which this may write
    over: an unmasked plane's symbols then take its place rather than a plane of their own.
    With ``signed`` (a masked plane only), ``magnitudes`` are signed levels and their
    absolute values are coded: no grid of magnitudes is made.
    """
    if signed:
        assert mask is not None, "signed levels: a masked plane only"
        values = magnitudes[mask]
        np.abs(values, out=values)
    else:
        values = magnitudes[mask] if mask is not None else magnitudes.ravel()
    if values.size == 0:
        return LevelPlane(0)
    largest = int(values.max())
    if largest > _MAX_VALUE or int(values.min()) < 0:
        raise EncodeError(f"a magnitude is outside 0..{_MAX_VALUE}: use a larger qp or RAW mode")
    if binarization is None:
        binarization = choose_binarization(*_value_histogram(values, largest))
    direct_bits, mantissa_bits = binarization
    rows, cols = magnitudes.shape
    # a masked plane's values are a copy of its own; an unmasked one's view the caller's
    in_place = ((mask is not None or scratch) and values.flags.c_contiguous
                and values.dtype.itemsize >= np.dtype(_symbol_type(largest, direct_bits, mantissa_bits)).itemsize)
    # what the class choice reads of the magnitudes, read before the values turn into symbols
    # (or, in a mapped input, before the binarization lets their pages go)
    means = line_log_means(magnitudes, mask, signed) if classes is None and use_contexts else None
    del magnitudes  # a masked plane's magnitudes go here when the caller passed a temporary
    raw = _RawBits(direct_bits, mantissa_bits)
    symbols = _binarize_fast(values, largest, direct_bits, mantissa_bits, in_place=in_place, raw=raw)
    del values
    if classes is not None:
        row_classes, col_classes = (np.asarray(c, dtype=np.int64) for c in classes)
    elif use_contexts:
        row_classes, col_classes = choose_classes(symbols, means, mask)
    else:
        row_classes, col_classes = np.zeros(rows, dtype=np.int64), np.zeros(cols, dtype=np.int64)
    row_count, col_count = int(row_classes.max()) + 1, int(col_classes.max()) + 1
    context_count = row_count + col_count - 1
    row_table = table_for_counts(np.bincount(row_classes, minlength=row_count)) if row_count > 1 else None
    col_table = table_for_counts(np.bincount(col_classes, minlength=col_count)) if col_count > 1 else None
    tables: list[FrequencyTable] = []

    def groups():  # produced as they are coded, in coding order
        nonlocal symbols
        if row_table is not None:
            yield row_classes, row_table
        if col_table is not None:
            yield col_classes, col_table
        if context_count > 1 and mask is None:
            # every context's table from one histogram pass, then the symbols a piece at a
            # time: no copy of the plane in coding order
            layout = _BlockLayout(row_classes, col_classes, context_count)
            matrix, symbols = symbols.reshape(rows, cols), None  # gone with the last piece
            top = int(binarize(np.array([largest]), direct_bits, mantissa_bits)[0][0])
            tables.extend(table_for_counts(counts) if counts.any() else _CONSTANT
                          for counts in layout.context_histograms(matrix, top + 1))
            for context, piece in layout.coding_pieces(matrix):
                yield piece, tables[context]
            return
        runs = ([[symbols]] if context_count == 1 else
                _BlockLayout(row_classes, col_classes, context_count).masked_coding_runs(symbols, mask))
        symbols = None  # now held in pieces: each goes once it is coded
        for run in runs:  # one context's pieces at a time
            counts = _run_histogram(run)
            tables.append(table_for_counts(counts) if counts.any() else _CONSTANT)
            while run:
                yield run.pop(0), tables[-1]

    value_count = symbols.size
    words = encode_groups(groups())
    return LevelPlane(value_count, direct_bits, mantissa_bits, row_table, col_table, row_count, col_count,
                      tuple(tables), words, 0, raw.getvalue())


_CONSTANT = FrequencyTable(np.ones(1, dtype=np.int64))


class _BlockLayout:
    """Moves the symbols of a plane between scan order and coding order (§6.5.1 step 3).

    In coding order the symbols of rows of class ``r`` and columns of class ``k`` (those of
    a mask's positions, in a masked plane) form one contiguous run in row-major order, so the
    plane is rebuilt by block copies into a matrix whose columns are sorted by class, then
    one gather that restores the column order. The encoder puts symbols into coding order with
    :meth:`coding_pieces` (unmasked planes) and :meth:`masked_coding_runs`.
    """

    def __init__(self, row_classes: np.ndarray, col_classes: np.ndarray, context_count: int):
        self.row_classes, self.col_classes = row_classes, col_classes
        self.row_order = np.argsort(row_classes, kind="stable")
        self.col_order = np.argsort(col_classes, kind="stable")
        row_count, col_count = int(row_classes.max()) + 1, int(col_classes.max()) + 1
        self.rows_per_class = np.bincount(row_classes, minlength=row_count)
        self.cols_per_class = np.bincount(col_classes, minlength=col_count)
        self.row_starts = np.concatenate([[0], np.cumsum(self.rows_per_class)])
        self.col_starts = np.concatenate([[0], np.cumsum(self.cols_per_class)])
        self.blocks = [(r, c - r) for c in range(context_count) for r in range(row_count)
                       if 0 <= c - r < col_count and self.rows_per_class[r] and self.cols_per_class[c - r]]
        self._block_set = set(self.blocks)
        self.sizes = np.zeros(context_count, dtype=np.int64)
        for r, k in self.blocks:
            self.sizes[r + k] += int(self.rows_per_class[r]) * int(self.cols_per_class[k])

    def coding_pieces(self, symbols: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """The symbols of an unmasked plane (a rows x cols array) in coding order, as
        (context, piece) pairs: the contexts in order, each as the run of its pieces. A piece
        is a few rows of one block, so memory holds one piece beside the plane."""
        cols = symbols.shape[1]
        step = max(1, _CHUNK // max(1, cols))
        for r, k in self.blocks:  # by context, then row class
            rows = self.row_order[self.row_starts[r]:self.row_starts[r + 1]]
            columns = self.col_order[self.col_starts[k]:self.col_starts[k + 1]]
            every_column = columns.size == cols  # then in order: the sort is stable
            for start in range(0, rows.size, step):
                piece = rows[start:start + step]
                lines = symbols[piece[0]:piece[-1] + 1] if piece[-1] - piece[0] == piece.size - 1 else symbols[piece]
                yield r + k, (lines if every_column else np.take(lines, columns, axis=1)).ravel()

    def context_histograms(self, symbols: np.ndarray, alphabet: int) -> np.ndarray:
        """For an unmasked plane (a rows x cols array of symbols below ``alphabet``): the
        count of each symbol in each context, as a (contexts, alphabet) int64 array, from
        one pass a few rows at a time."""
        rows, cols = symbols.shape
        counts = np.zeros(self.sizes.size * alphabet, dtype=np.int64)
        col_keys = (self.col_classes * alphabet).astype(np.intp)[None, :]
        row_keys = (self.row_classes * alphabet).astype(np.intp)[:, None]
        step = max(1, _CHUNK // max(1, cols))
        for start in range(0, rows, step):
            keys = symbols[start:start + step].astype(np.intp)
            keys += col_keys
            keys += row_keys[start:start + step]
            counts += np.bincount(keys.ravel(), minlength=counts.size)
        return counts.reshape(self.sizes.size, alphabet)

    def masked_coding_runs(self, symbols: np.ndarray, mask: np.ndarray) -> list[list[np.ndarray]]:
        """The symbols of a masked plane, given in scan order of the mask's positions (flat),
        in coding order: for each context, the list of its pieces in order. The plane is
        walked a piece of rows at a time, so memory holds the symbols once more in pieces and
        one piece of the plane, not the plane."""
        rows, cols = mask.shape
        parts: dict[tuple[int, int], list[np.ndarray]] = {block: [] for block in self.blocks}
        columns = [self.col_order[self.col_starts[k]:self.col_starts[k + 1]] for k in range(self.cols_per_class.size)]
        step = max(1, _CHUNK // max(1, cols))
        taken = 0  # symbols of the rows before the piece
        for start in range(0, rows, step):
            covered = mask[start:start + step]
            count = int(np.count_nonzero(covered))
            grid = np.zeros(covered.shape, dtype=symbols.dtype)
            grid[covered] = symbols[taken:taken + count]
            taken += count
            classes = self.row_classes[start:start + step]
            for r in np.unique(classes):
                lines = np.flatnonzero(classes == r)
                in_class, covered_in_class = grid[lines], covered[lines]
                for k in range(self.cols_per_class.size):
                    if (int(r), k) in self._block_set:
                        parts[int(r), k].append(np.take(in_class, columns[k], axis=1)[
                            np.take(covered_in_class, columns[k], axis=1)])
        return [[piece for r, k in self.blocks if r + k == context for piece in parts.pop((r, k))]
                for context in range(self.sizes.size)]

    def decode_scan_order(self, decoder: RangeDecoder, tables: tuple[FrequencyTable, ...],
                          mask: np.ndarray | None = None, dtype: type = np.int32,
                          work: np.ndarray | None = None) -> np.ndarray:
        """Decode every context's symbols (context ``c`` under ``tables[c]``) and return them
        in scan order (a flat array of ``dtype``, which must hold every symbol): of every
        position, or of ``mask``'s positions only.

        Each block is decoded a few rows at a time straight into its place in a matrix whose
        columns are sorted by class (a masked block's symbols, in row-major order, fill its
        masked positions); the columns are then put back in order a few rows at a time, so
        memory holds the plane and one piece beside it. With ``mask``, that matrix may be the
        caller's ``work`` (zeros of ``dtype``, the plane's shape): it then ends holding the
        symbols at the masked positions and zeros elsewhere, and no plane-sized matrix is
        made here.
        """
        shape = (self.row_order.size, self.col_order.size)
        if mask is not None and work is not None:
            assert work.shape == shape and work.dtype == dtype
            by_class = work
        else:
            by_class = np.empty(shape, dtype=dtype) if mask is None else np.zeros(shape, dtype=dtype)
        for r, k in self.blocks:
            rows = self.row_order[self.row_starts[r]:self.row_starts[r + 1]]
            columns = slice(self.col_starts[k], self.col_starts[k + 1])
            width = int(self.cols_per_class[k])
            step = max(1, DECODE_PIECE // width)
            for start in range(0, rows.size, step):
                piece = rows[start:start + step]
                if piece[-1] - piece[0] == piece.size - 1:  # consecutive rows: a slice, not a gather
                    piece = slice(int(piece[0]), int(piece[-1]) + 1)
                if mask is None:
                    by_class[piece, columns] = decoder.decode(min(step, rows.size - start) * width,
                                                              tables[r + k]).reshape(-1, width)
                else:
                    covered = mask[piece][:, self.col_order[columns]]
                    block = np.zeros(covered.shape, dtype=np.int32)
                    block[covered] = decoder.decode(int(np.count_nonzero(covered)), tables[r + k])
                    by_class[piece, columns] = block
        if not np.array_equal(self.col_order, np.arange(self.col_order.size)):
            inverse = np.argsort(self.col_order)
            step = max(1, DECODE_PIECE // max(1, inverse.size))
            for start in range(0, by_class.shape[0], step):
                rows = by_class[start:start + step]
                rows[...] = np.take(rows, inverse, axis=1)
        return by_class.ravel() if mask is None else by_class[mask]


class _RawBits:
    """§6.7: for each escape symbol in ascending order, the raw bits of its values in scan
    order. The scan is given a piece at a time (:meth:`add`) and each escape symbol's bits are
    kept apart (a byte per bit) until they are packed in symbol order: memory holds the raw
    bits, not index arrays over the whole plane."""

    def __init__(self, direct_bits: int, mantissa_bits: int):
        self._width_of = symbol_tables(direct_bits, mantissa_bits)[1]
        self._first_escape = 1 << direct_bits
        self._groups: dict[int, list[np.ndarray]] = {}

    def add(self, values: np.ndarray, symbols: np.ndarray) -> None:
        """The next piece of the scan: its values and their symbols."""
        escaped = np.flatnonzero(symbols >= self._first_escape)
        if escaped.size == 0:
            return
        escaped_symbols = symbols[escaped]
        for symbol in np.unique(escaped_symbols):
            width = int(self._width_of[symbol])
            if width == 0:
                continue
            low = values[escaped[escaped_symbols == symbol]].astype(np.uint64) & np.uint64((1 << width) - 1)
            shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
            self._groups.setdefault(int(symbol), []).append(
                ((low[:, None] >> shifts) & np.uint64(1)).astype(np.uint8).ravel())

    def getvalue(self) -> bytes:
        packer = BitPacker()
        for symbol in sorted(self._groups):
            for bits in self._groups.pop(symbol):
                packer.add(bits)
        return packer.getvalue()


# ---------------------------------------------------------------------------------------------
# decoding


def decode_plane(reader: ByteReader, rows: int, cols: int, mask: np.ndarray | None, expected_count: int,
                 limits: Limits, element: str, narrowest: type = np.int32,
                 work: np.ndarray | None = None) -> np.ndarray:
    """Read and decode a level plane (§6.5); returns its values in scan order, in the
    narrowest signed type no narrower than ``narrowest`` that holds the largest value the
    plane's tables allow (:func:`quant.level_type`; so that, negated by its sign, each value is
    a level in the same type: a float16 tensor's levels then take what its values take, an
    int8 tensor's a byte each). A masked plane may use the
    caller's ``work`` matrix (zeros, ``rows x cols``) as its working space when it has that
    type (see :meth:`_BlockLayout.decode_scan_order`): it then holds the plane's symbols
    (before raw bits) at the masked positions and still zeros everywhere else."""
    plane = read_level_plane(reader, expected_count, limits, element)
    if plane.value_count == 0:
        return np.zeros(0, dtype=np.int32)
    dtype = level_type(_largest_value(plane), narrowest)
    if work is not None and (work.dtype != dtype or work.shape != (rows, cols)):
        work = None
    class_groups: list[tuple[int, FrequencyTable]] = []
    if plane.row_class_table is not None:
        class_groups.append((rows, plane.row_class_table))
    if plane.col_class_table is not None:
        class_groups.append((cols, plane.col_class_table))
    # One range decoder runs through the class indices, then every context's symbols.
    decoder = RangeDecoder(plane.words, element=f"{element}.words", offset=plane.words_offset)
    class_indices = [decoder.decode(count, table) for count, table in class_groups]
    row_classes = class_indices.pop(0) if plane.row_class_table is not None else np.zeros(rows, dtype=np.int32)
    col_classes = class_indices.pop(0) if plane.col_class_table is not None else np.zeros(cols, dtype=np.int32)
    if plane.context_count > 1:
        layout = _BlockLayout(row_classes, col_classes, plane.context_count)
        symbols = layout.decode_scan_order(decoder, plane.magnitude_tables, mask, dtype, work)
    else:
        symbols = np.empty(plane.value_count, dtype=dtype)
        decoder.decode_into(symbols, plane.magnitude_tables[0])
    decoder.finish(element=f"{element}.word_count", offset=plane.words_offset - 4)
    del decoder  # and its copy of the words, as large as the plane's share of the stream
    return _add_raw_bits(plane, symbols, element)


def _largest_value(plane: LevelPlane) -> int:
    """The largest value the plane can hold: its tables' largest symbol (§6.6: a symbol is
    below its table's alphabet size) with every raw bit set (§6.4)."""
    largest_symbol = max(table.alphabet_size for table in plane.magnitude_tables) - 1
    base_of, width_of = symbol_tables(plane.direct_bits, plane.mantissa_bits)
    return int(base_of[largest_symbol]) + (1 << int(width_of[largest_symbol])) - 1


def _positions_at_least(values: np.ndarray, limit: int) -> np.ndarray:
    """``np.flatnonzero(values >= limit)`` for a flat array, a piece at a time: no mask of
    the whole array beside it."""
    return np.concatenate([np.flatnonzero(values[start:start + DECODE_PIECE] >= limit) + start
                           for start in range(0, values.size, DECODE_PIECE)] or [np.zeros(0, dtype=np.intp)])


def _fields_value(fields: np.ndarray) -> np.ndarray:
    """Each row of a 0/1 matrix read as an unsigned integer, most significant bit first."""
    value = np.zeros(fields.shape[0], dtype=np.int32)
    for column in range(fields.shape[1]):
        value <<= 1
        value |= fields[:, column]
    return value


def _add_raw_bits(plane: LevelPlane, symbols: np.ndarray, element: str) -> np.ndarray:
    """§6.7: magnitudes from symbols plus the raw low-order bits of escape symbols."""
    base_of, width_of = symbol_tables(plane.direct_bits, plane.mantissa_bits)
    # symbols below 2**direct_bits are their own values; only escapes need the tables
    values = symbols
    escaped = _positions_at_least(symbols, 1 << plane.direct_bits)
    order = escaped[np.argsort(symbols[escaped].astype(np.uint16), kind="stable")]
    widths = width_of[symbols[order]]
    values[order] = base_of[symbols[order]]
    total_bits = int(widths.sum())
    if len(plane.raw_bits) != -(-total_bits // 8):
        raise BitstreamError(f"raw_byte_count {len(plane.raw_bits)} contradicts the {total_bits} raw bits "
                             "the symbols need", element=f"{element}.raw_byte_count",
                             offset=plane.raw_bits_offset - 4)
    if total_bits == 0:
        return values
    if not padding_is_zero(plane.raw_bits, total_bits):
        raise BitstreamError("padding bits are not zero", element=f"{element}.raw_bits",
                             offset=plane.raw_bits_offset + len(plane.raw_bits) - 1)
    bits = np.unpackbits(np.frombuffer(plane.raw_bits, dtype=np.uint8), count=total_bits)
    low = np.empty(order.size, dtype=values.dtype)  # raw bits stay below the values they complete
    start_bit = 0
    boundaries = np.flatnonzero(np.diff(widths)) + 1
    for start, stop in zip(np.concatenate([[0], boundaries]), np.concatenate([boundaries, [widths.size]]), strict=True):
        width = int(widths[start])
        fields = bits[start_bit:start_bit + (stop - start) * width].reshape(stop - start, width)
        low[start:stop] = _fields_value(fields)
        start_bit += (stop - start) * width
    values[order] += low
    return values
