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
# predecessors of each next state t: (state, parity) pairs with DQ_NEXT_STATE[state][parity] == t
_PREDECESSORS = [[(s, p) for s in range(4) for p in range(2) if DQ_NEXT_STATE[s][p] == t] for t in range(4)]
# the same as arrays over the targets: each target's first and second predecessor state, and
# the candidate slot (2q + p) of the transition from it
_FIRST_STATE, _SECOND_STATE = (np.array([pair[k][0] for pair in _PREDECESSORS]) for k in (0, 1))
_FIRST_SLOT, _SECOND_SLOT = (np.array([2 * (pair[k][0] >= 2) + pair[k][1] for pair in _PREDECESSORS]) for k in (0, 1))


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
    (values over the segments) and its cost, into ``magnitude[2q + p]`` and ``cost[2q + p]``.
    ``table`` is the flat table of scaled bits, ``base`` each position's context offset into
    it, ``limit`` the largest magnitude it prices (larger ones are priced as that: rare).
    Both quantizers are computed in one pass over (2, segments) arrays, and everything stays
    float32 / int32: mixing them would compute in float64."""
    zero_cost = a * a
    zero_cost += np.take(table, base)  # take: the same values as table[base], with less overhead
    # quantizer 0 reads m as 2m, quantizer 1 as 2m - 1: the two magnitudes around a
    low = np.floor((a + _QUANTIZERS) * np.float32(0.5))
    low_index = low.astype(np.int32)
    high_index = low_index + 1
    low_cost = np.take(table, np.minimum(low_index, limit) + base)
    high_cost = np.take(table, np.minimum(high_index, limit) + base)
    low_point = 2 * low - _QUANTIZERS
    distance = a - np.maximum(low_point, np.float32(0))
    low_cost += distance * distance
    distance = (low_point + np.float32(2)) - a
    high_cost += distance * distance
    odd = (low_index & 1).astype(bool)
    even_cost = np.where(odd, high_cost, low_cost)
    even = np.where(odd, high_index, low_index)
    np.putmask(even, zero_cost < even_cost, 0)  # zero is even and reads as 0 in both quantizers
    cost[0::2] = np.minimum(even_cost, zero_cost)
    magnitude[0::2] = even
    cost[1::2] = np.where(odd, low_cost, high_cost)
    magnitude[1::2] = np.where(odd, low_index, high_index)


def _search(values: np.ndarray, contexts: np.ndarray, rates: _PlaneRates, scale: float) -> np.ndarray:
    """Viterbi over the segments (rows of ``values``) side by side; returns the magnitudes."""
    segments = values.shape[0]
    table = (rates.table * np.float32(scale)).astype(np.float32).ravel()
    limit = rates.table_size - 1
    values = np.ascontiguousarray(values.T)  # positions x segments: each step reads a row
    bases = np.ascontiguousarray(contexts.T) * np.int32(limit + 1)
    total = np.full((4, segments), np.inf, dtype=np.float32)
    total[0] = 0.0
    from_second = np.empty((DQ_SEGMENT, 4, segments), dtype=bool)  # which predecessor won
    magnitudes = np.empty((DQ_SEGMENT, 4, segments), dtype=np.int32)  # per (quantizer, parity) slot
    cost = np.empty((4, segments), dtype=np.float32)
    for position in range(DQ_SEGMENT):
        _candidates(values[position], bases[position], table, limit, cost, magnitudes[position])
        # all four target states at once: (4, segments) arrays, not four rounds of rows
        first = np.take(total, _FIRST_STATE, axis=0)
        first += np.take(cost, _FIRST_SLOT, axis=0)
        second = np.take(total, _SECOND_STATE, axis=0)
        second += np.take(cost, _SECOND_SLOT, axis=0)
        np.less(second, first, out=from_second[position])
        total = np.minimum(first, second, out=first)
    # the slot (2q + p) each transition into a target state used, by which predecessor won
    slot = np.array([[2 * (s >= 2) + p for s, p in pair] for pair in _PREDECESSORS])
    predecessor = np.array([[s for s, _ in pair] for pair in _PREDECESSORS])  # [target][which]
    result = np.empty((DQ_SEGMENT, segments), dtype=np.int32)
    state = np.argmin(total, axis=0)
    columns = np.arange(segments)
    for position in range(DQ_SEGMENT - 1, -1, -1):
        which = from_second[position, state, columns].astype(np.int64)
        result[position] = magnitudes[position, slot[state, which], columns]
        state = predecessor[state, which]
    return result.T
