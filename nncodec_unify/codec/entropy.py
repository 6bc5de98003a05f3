"""Range coding of symbol groups with integer frequency tables (spec §6.6, §6.9).

This is the only module that imports constriction. Facts it relies on (constriction 0.5.0):

* ``Categorical(w, perfect=False)`` gives symbol ``i`` the fixed-point probability
  ``floor(C_i * s) + i`` - ``floor(C_{i-1} * s) - (i-1)`` where ``C_i`` is the running sum of
  ``w`` and ``s = (2**24 - n) / sum(w)``. We pass integer weights that sum to exactly
  ``2**24 - n``, so ``s == 1.0`` and every symbol's probability is exactly ``w_i + 1`` out of
  ``2**24``: the model is defined by integers alone (§6.6) and needs no float rounding rule.
* The decoder detects nothing and may raise a bare ``AssertionError`` or ``ValueError`` on bad
  words; integrity is the container's CRC, and we translate every error.
* ``get_compressed()`` returns native-endian uint32 words; the stream stores little-endian.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import constriction
import numpy as np

from .errors import BitstreamError, LimitExceededError
from .format import MAX_FREQUENCY_BITS, PROBABILITY_BITS
from .memory import release_pages

PROBABILITY_TOTAL = 1 << PROBABILITY_BITS


@dataclasses.dataclass(frozen=True, eq=False)
class FrequencyTable:
    """A frequency table as carried in the stream: ``frequencies[i]`` for symbol ``i``.

    ``frequencies`` is an int64 array of length ``alphabet_size`` (>= 1). A one-symbol table
    describes a constant: its symbols take no bits and never reach the range coder.
    """

    frequencies: np.ndarray
    frequency_bits: int = 0

    @property
    def alphabet_size(self) -> int:
        return int(self.frequencies.size)

    def weights(self) -> np.ndarray:
        """Integer weights ``w`` summing to ``2**24 - n`` (§6.6), as float64 for constriction.

        ``w_i = floor(f_i * T / F)`` with ``T = 2**24 - n`` and ``F = sum(f)``; the remainder
        ``T - sum(w)`` goes to the first symbol of largest frequency. The coded probability of
        symbol ``i`` is then ``(w_i + 1) / 2**24``.
        """
        f = self.frequencies.astype(np.int64)
        total = PROBABILITY_TOTAL - f.size
        w = (f * total) // int(f.sum())
        w[int(np.argmax(f))] += total - int(w.sum())
        return w.astype(np.float64)

    def model(self):
        return constriction.stream.model.Categorical(self.weights(), perfect=False)

    def code_lengths(self) -> np.ndarray:
        """Bits each symbol costs under this table (for the encoder's choices)."""
        if self.alphabet_size == 1:
            return np.zeros(1)
        return PROBABILITY_BITS - np.log2(self.weights() + 1)


def table_for_counts(counts: np.ndarray) -> FrequencyTable:
    """The frequency table that codes symbols with these ``counts`` most cheaply.

    The alphabet is trimmed to the largest symbol that occurs. The frequency precision
    (``frequency_bits``) is chosen to minimize table bits plus coded bits.
    """
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    if used.size == 0:
        raise ValueError("cannot build a table for no symbols")
    counts = counts[: used[-1] + 1]
    if counts.size == 1:
        return FrequencyTable(np.ones(1, dtype=np.int64))
    largest = int(counts.max())
    # every precision at once, up to the first that represents the counts exactly (more
    # cannot do better): one row of candidate frequencies per precision
    last = min(MAX_FREQUENCY_BITS, max(1, largest.bit_length()))
    bits = np.arange(1, last + 1, dtype=np.int64)[:, None]
    top = (np.int64(1) << bits) - 1
    f = (counts[None, :] * top + largest // 2) // largest
    f[(f == 0) & (counts[None, :] > 0)] = 1
    cost = counts.size * bits[:, 0] + (_code_lengths(f) @ counts)
    choice = int(np.argmin(cost))  # the first of equal costs: the lowest precision
    return FrequencyTable(f[choice].copy(), int(bits[choice, 0]))


def _code_lengths(frequencies: np.ndarray) -> np.ndarray:
    """:meth:`FrequencyTable.code_lengths` for each row of ``frequencies`` (as §6.6.1 turns
    frequencies into weights: floor shares, the remainder to the first largest)."""
    total = PROBABILITY_TOTAL - frequencies.shape[1]
    w = (frequencies * total) // frequencies.sum(axis=1, keepdims=True)
    rows = np.arange(frequencies.shape[0])
    w[rows, np.argmax(frequencies, axis=1)] += total - w.sum(axis=1)
    return PROBABILITY_BITS - np.log2(w + 1.0)


_ENCODE_CHUNK = 1 << 20  # symbols handed to constriction at a time (as int32: no full-size copy)


def encode_groups(groups: Iterable[tuple[np.ndarray, FrequencyTable]]) -> np.ndarray:
    """Range-code each group's symbols with its table, in order, into one word sequence.

    Groups whose table has one symbol are skipped (they cost nothing). ``groups`` may be
    produced lazily: each is coded before the next is taken. Returns uint32 words. The range
    coder's state runs on from call to call, so coding a group in pieces (consecutive
    items with the same table) gives its words.
    """
    encoder = constriction.stream.queue.RangeEncoder()
    model_of = None  # the table whose model was built last: a group's pieces share it
    for symbols, table in groups:
        if symbols.size and table.alphabet_size > 1:
            if table is not model_of:
                model, model_of = table.model(), table
            for start in range(0, symbols.size, _ENCODE_CHUNK):
                encoder.encode(np.ascontiguousarray(symbols[start:start + _ENCODE_CHUNK], dtype=np.int32), model)
    symbols = None  # the last group may view a whole plane: not held while the words are copied out
    return np.asarray(encoder.get_compressed(), dtype=np.uint32)


def _aligned_words(words: np.ndarray) -> np.ndarray:
    """``words`` as an aligned, C-contiguous native uint32 array: the array itself when it is
    one, else a copy made a piece at a time, letting the pages of a mapped stream go behind
    it."""
    if words.dtype == np.uint32 and words.flags.aligned and words.flags.c_contiguous:
        return words
    aligned = np.empty(words.size, dtype=np.uint32)
    for start in range(0, words.size, DECODE_PIECE):
        piece = words[start:start + DECODE_PIECE]
        aligned[start:start + piece.size] = piece
        release_pages(piece)
    return aligned


DECODE_PIECE = 1 << 18  # symbols a decoder returns per call when its caller bounds the memory


class RangeDecoder:
    """Decodes symbol groups from one word sequence (inverse of :func:`encode_groups`).

    Every error of the underlying decoder becomes a :class:`BitstreamError` naming ``element``.
    """

    def __init__(self, words: np.ndarray, *, element: str, offset: int):
        self._element, self._offset = element, offset
        self._decoder = None
        self._words = words  # uint32 values, in any byte order and alignment (a view of the stream)
        self._table = self._model = None  # the last table and its model: pieces reuse it

    def decode(self, count: int, table: FrequencyTable) -> np.ndarray:
        """``count`` symbols (int32) under ``table``; a one-symbol table yields zeros."""
        if count == 0 or table.alphabet_size == 1:
            return np.zeros(count, dtype=np.int32)
        try:
            if self._decoder is None:
                # constriction copies the words into the decoder: the aligned, native copy made
                # for it (where the view is not one) and the stream's pages (where it is a
                # mapped file) need not stay resident beside that
                aligned = _aligned_words(self._words)
                self._decoder = constriction.stream.queue.RangeDecoder(aligned)
                del aligned
                release_pages(self._words)
            if table is not self._table:
                self._table, self._model = table, table.model()
            symbols = np.asarray(self._decoder.decode(self._model, count), dtype=np.int32)
        except MemoryError:
            raise LimitExceededError(f"cannot allocate {count} symbols", element=self._element,
                                     offset=self._offset) from None
        # constriction signals bad data with bare assertions; a Rust panic would arrive as
        # pyo3's PanicException, which derives from BaseException
        except BaseException as exc:
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise  # Ctrl-C, SIGTERM (termination.Terminated), SystemExit
            raise BitstreamError(f"range decoder rejected the data ({type(exc).__name__})",
                                 element=self._element, offset=self._offset) from None
        return symbols

    def decode_into(self, out: np.ndarray, table: FrequencyTable) -> None:
        """``decode(out.size, table)`` written into the 1-D int32 array ``out`` a bounded piece
        at a time: the decoder resumes where it stopped, so the symbols are the same, and only
        one piece is held beside ``out``."""
        for start in range(0, out.size, DECODE_PIECE):
            out[start:start + DECODE_PIECE] = self.decode(min(DECODE_PIECE, out.size - start), table)

    def finish(self, *, element: str, offset: int) -> None:
        """§6.9.4: after the last symbol, the decoder has read every word and its point lies
        within 2**33 - 1 above ``lower`` (what constriction's ``maybe_exhausted`` tests); a
        decoder that never started must have no words."""
        if self._decoder is None:
            exhausted = self._words.size == 0
        else:
            exhausted = self._decoder.maybe_exhausted()
        if not exhausted:
            raise BitstreamError(f"word_count {self._words.size}: words are left over after the last symbol",
                                 element=element, offset=offset)
