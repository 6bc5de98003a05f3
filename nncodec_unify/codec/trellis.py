"""Dependent (trellis-coded) quantization: the encoder's Viterbi search (spec §7.1.2).

With dependent quantization a magnitude ``m`` is read as ``2m`` steps by quantizer 0 and as
``2m - 1`` steps by quantizer 1 (``0`` stays ``0``); which quantizer reads a position follows
from a four-state machine driven by the parities of the magnitudes before it
(``quant.DQ_NEXT_STATE``). The two quantizers interleave, so the union of their points has
the spacing of the step while each magnitude costs about one bit less: a trellis over the
states finds the magnitudes that minimise ``(|x| - reconstruction)**2 + scale * bits`` for a
whole segment at once. Segments of ``quant.DQ_SEGMENT`` positions restart in state 0, so the
search runs over all segments side by side, one column of positions at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .quant import DQ_NEXT_STATE, DQ_SEGMENT
from .rdo import _PlaneRates

_CHUNK_SEGMENTS = 1 << 12  # segments searched together: bounds the back-pointer memory
_POSITIONS_PER_PASS = 8  # positions whose candidates are priced in one pass: arrays stay in cache

# The state's two bits are (q, b), state = 2q + b: q picks the quantizer, and a magnitude of
# parity p moves (q, b) to (b XOR p, q) (quant.DQ_NEXT_STATE). So the two predecessors of a
# state (q', b') are (b', 0) and (b', 1), left with parities q' and q' XOR 1.
assert all(DQ_NEXT_STATE[2 * q + b][p] == 2 * (b ^ p) + q for q in (0, 1) for b in (0, 1) for p in (0, 1))


def trellis_magnitudes(magnitudes: Callable[[int, int], np.ndarray], count: int, rates: _PlaneRates,
                       scale: float) -> Iterator[tuple[int, np.ndarray]]:
    """The magnitudes to code for ``count`` values of the dependently quantized scan, chunk
    by chunk: yields ``(start, chosen)``, ``chosen`` the int32 magnitudes of positions
    ``start..start + chosen.size``. ``magnitudes(start, stop)`` gives those positions' values
    in steps (float32, non-negative), and their bits are priced by ``rates`` at the contexts
    of an unmasked plane. Chunks hold whole segments, so no value array of the whole scan
    is needed."""
    chunk = _CHUNK_SEGMENTS * DQ_SEGMENT
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        segments = -(-(stop - start) // DQ_SEGMENT)
        values = np.zeros(segments * DQ_SEGMENT, dtype=np.float32)  # the last segment padded with zeros
        values[:stop - start] = magnitudes(start, stop)
        contexts = np.zeros(segments * DQ_SEGMENT, dtype=np.int32)
        contexts[:stop - start] = rates.contexts(start, stop)
        chosen = _search(values.reshape(segments, DQ_SEGMENT), contexts.reshape(segments, DQ_SEGMENT), rates, scale)
        yield start, chosen.reshape(-1)[:stop - start]


_QUANTIZERS = np.array([[0], [1]], dtype=np.float32)  # both quantizers side by side


def _candidates(a: np.ndarray, base: np.ndarray, table: np.ndarray, limit: int, cost: np.ndarray,
                magnitude: np.ndarray) -> None:
    """For each quantizer q and parity p, the cheapest magnitude of that parity near ``a``
    (values, positions x segments) and its cost, into ``magnitude[:, q, p]`` and
    ``cost[:, q, p]`` (positions x 2 x 2 x segments). ``table`` is the flat table of scaled
    bits, ``base`` each position's context offset into it, ``limit`` the largest magnitude it
    prices (larger ones are priced as that: rare). Everything stays float32 / int32: mixing
    them would compute in float64."""
    a = a[:, None]
    base = base[:, None]
    zero_cost = a * a
    zero_cost += np.take(table, base)  # take: the same values as table[base], with less overhead
    # quantizer 0 reads m as 2m, quantizer 1 as 2m - 1: of the two magnitudes around a, low and
    # low + 1, one is even and one odd. np.where and np.putmask cost ~6 ns an element here,
    # so the even and the odd one are formed by arithmetic on low's parity instead.
    low = np.floor((a + _QUANTIZERS) * np.float32(0.5))
    low_index = low.astype(np.int32)
    low_odd = low_index & 1
    low_point = 2 * low - _QUANTIZERS
    shift = low_odd.astype(np.float32) * np.float32(2)  # how far the even magnitude's point is above low's
    even_index = low_index + low_odd
    even_cost = np.take(table, np.minimum(even_index, limit) + base)
    distance = a - np.maximum(low_point + shift, np.float32(0))
    even_cost += distance * distance
    keep = even_cost <= zero_cost  # zero is even and reads as 0 in both quantizers
    np.multiply(even_index, keep, out=magnitude[:, :, 0])
    np.minimum(even_cost, zero_cost, out=cost[:, :, 0])
    odd_index = low_index | 1
    odd_cost = np.take(table, np.minimum(odd_index, limit) + base)
    distance = a - np.maximum(low_point + (np.float32(2) - shift), np.float32(0))
    odd_cost += distance * distance
    cost[:, :, 1] = odd_cost
    magnitude[:, :, 1] = odd_index


def _search(values: np.ndarray, contexts: np.ndarray, rates: _PlaneRates, scale: float) -> np.ndarray:
    """Viterbi over the segments (rows of ``values``) side by side; returns the magnitudes."""
    segments = values.shape[0]
    table = (rates.table * np.float32(scale)).astype(np.float32).ravel()
    limit = rates.table_size - 1
    values = np.ascontiguousarray(values.T)  # positions x segments: each step reads a row
    bases = np.ascontiguousarray(contexts.T) * np.int32(limit + 1)
    total = np.full((2, 2, segments), np.inf, dtype=np.float32)  # [q][b]
    total[0, 0] = 0.0
    from_second = np.empty((DQ_SEGMENT, 2, 2, segments), dtype=bool)  # [b'][q']: predecessor (b', 1) won
    magnitudes = np.empty((DQ_SEGMENT, 2, 2, segments), dtype=np.int32)  # [q][p]
    costs = np.empty((_POSITIONS_PER_PASS, 2, 2, segments), dtype=np.float32)
    for start in range(0, DQ_SEGMENT, _POSITIONS_PER_PASS):
        stop = start + _POSITIONS_PER_PASS
        _candidates(values[start:stop], bases[start:stop], table, limit, costs, magnitudes[start:stop])
        for position, cost in enumerate(costs, start):
            # [b'][q'] = [q][p] of the transition: from (b', 0) with parity q', from (b', 1) with q' XOR 1
            first = total[:, 0, None] + cost
            second = total[:, 1, None] + cost[:, ::-1]
            np.less(second, first, out=from_second[position])
            total = np.minimum(first, second, out=first).transpose(1, 0, 2)
    result = np.empty((DQ_SEGMENT, segments), dtype=np.int32)
    state = np.argmin(np.ascontiguousarray(total).reshape(4, segments), axis=0)  # ties: the lowest state
    columns = np.arange(segments)
    # flat takes over [b][q][segment] rows: ~2x faster than fancy indexing with three arrays
    from_second = from_second.reshape(DQ_SEGMENT, -1)
    magnitudes = magnitudes.reshape(DQ_SEGMENT, -1)
    for position in range(DQ_SEGMENT - 1, -1, -1):
        b = state & 1
        index = (2 * b + (state >> 1)) * segments + columns
        which = from_second[position].take(index)
        index += (1 - 2 * (state >> 1)) * (which * segments)  # [b][q XOR which]
        result[position] = magnitudes[position].take(index)
        state = 2 * b + which
    return result.T
