"""Where a stream's bytes go: every byte of a valid stream attributed to one part of the syntax.

The accounting reads the stream with the decoder's own syntax functions through a reader that
counts each element's bytes under a category (:data:`CATEGORIES`), so it follows the spec
exactly and cannot drift from the decoder. It answers what a small model pays for headers,
digests and tables against what it pays for its coded values (``nncodec info --bytes``).
Numpy only, like the rest of the decode path.
"""

from __future__ import annotations

import collections
import dataclasses

from .bitio import ByteReader
from .decoder import decode_tensor_payload, iter_decoded
from .format import ATTACHMENT_VERSION, INTEGRITY_MAJOR, Limits, UnitType
from .syntax import (read_attached_file, read_file_header, read_model_header, read_stream_end, read_tensor_header,
                     read_unit)

# in the order they are printed
CATEGORIES = (
    "container",  # file header, unit headers and CRCs, model header, STREAM_END's unit_count
    "tensor headers",  # names, dtypes, shapes, coding modes, alias names
    "digests",  # content digests (§5.2), STREAM_END's model and stream digests (§5.8)
    "coding parameters",  # quant_params, block shape, offset_mode
    "plane fields",  # each level plane's and sign section's counts and binarization fields
    "frequency tables",  # class and magnitude tables (§6.6)
    "block map",  # the range-coded words of each plane ...
    "unified magnitudes",
    "dense levels",
    "column offsets",
    "escape bits",  # raw bits of escape symbols (§6.7)
    "sign bits",  # §6.8
    "RAW values",  # raw_payload (§5.4)
    "attached files",  # §5.7: path and content
    "other units",  # unknown ancillary units, skipped by decoders
)

# the bytes that code no value of any tensor
OVERHEAD_CATEGORIES = ("container", "tensor headers", "digests", "coding parameters", "plane fields",
                       "frequency tables")

_CONTAINER = {"magic", "version_major", "version_minor", "header_flags", "unit_type", "unit_flags",
              "payload_length", "unit_crc", "tensor_count", "unit_count"}
_HEADER = {"name_length", "name", "dtype", "ndim", "dims", "coding_mode", "alias_count", "alias_name_length",
           "alias_name"}
_DIGESTS = {"content_digest", "model_digest", "stream_digest"}
_PARAMETERS = {"qp", "qp_density", "quant_flags", "block_rows", "block_cols", "offset_mode"}
_PLANE_WORDS = {"block_map": "block map", "unified_magnitudes": "unified magnitudes", "dense_levels": "dense levels",
                "column_offsets": "column offsets"}


def category_of(element: str) -> str:
    """The category (:data:`CATEGORIES`) of the bytes of a syntax element, named as the
    decoder names it in errors (``dense_levels.magnitude_table[0].frequencies``)."""
    for names, category in ((_CONTAINER, "container"), (_HEADER, "tensor headers"), (_DIGESTS, "digests"),
                            (_PARAMETERS, "coding parameters")):
        if element in names:
            return category
    if element == "raw_data":
        return "RAW values"
    if element in ("path_length", "path", "content"):
        return "attached files"
    structure, _, field = element.partition(".")
    if field == "words" and structure in _PLANE_WORDS:
        return _PLANE_WORDS[structure]
    if field == "raw_bits":
        return "escape bits"
    if field == "sign_bits":
        return "sign bits"
    if "_table" in field:
        return "frequency tables"
    if field:
        return "plane fields"
    raise ValueError(f"no category for syntax element {element!r}")


class _CountingReader(ByteReader):
    """A ByteReader that adds every element's bytes to ``counts`` under its category; a unit's
    payload, which read_unit only skips, is counted by the reader of the payload instead."""

    def __init__(self, data, start: int = 0, end: int | None = None, *, counts: collections.Counter):
        super().__init__(data, start, end)
        self.counts = counts

    def _take(self, n: int, element: str) -> int:
        start = super()._take(n, element)
        if element != "payload":
            self.counts[category_of(element)] += n
        return start


@dataclasses.dataclass(frozen=True)
class TensorLayout:
    """One tensor unit's bytes by category, its unit header and CRC included."""

    name: str
    bytes: dict[str, int]


@dataclasses.dataclass(frozen=True)
class StreamLayout:
    """A stream's bytes by category (summing to ``total``), and each tensor unit's."""

    total: int
    bytes: dict[str, int]
    tensors: tuple[TensorLayout, ...]


def stream_layout(data: bytes, *, limits: Limits | None = None) -> StreamLayout:
    """Attribute every byte of ``data`` to a category of :data:`CATEGORIES`.

    The stream is first decoded and verified completely (every check of the spec, digests
    included), so a stream that is not valid raises the decoder's
    :class:`~nncodec_unify.codec.errors.BitstreamError`, and the accounting walk that follows
    reads only valid syntax. It decodes each tensor a second time: about twice a decode's time.
    """
    limits = limits or Limits()
    for _ in iter_decoded(data, limits=limits):  # every check, digests included; nothing kept
        pass
    counts: collections.Counter = collections.Counter()
    reader = _CountingReader(data, counts=counts)
    header = read_file_header(reader)
    version = (header.version_major, header.version_minor)
    tensors = []
    while reader.remaining:
        unit_counts: collections.Counter = collections.Counter()
        reader.counts = unit_counts  # the unit's header and CRC count towards the unit
        unit = read_unit(reader, data)
        payload = _CountingReader(data, unit.payload_offset, unit.payload_offset + unit.payload_length,
                                  counts=unit_counts)
        if unit.unit_type == UnitType.MODEL_HEADER and not unit.ancillary:
            read_model_header(payload, limits)
        elif unit.unit_type == UnitType.TENSOR and not unit.ancillary:
            tensor_header = read_tensor_header(payload, limits, header.version_major)
            decode_tensor_payload(payload, tensor_header, limits, header.version_major, verify=False)
            tensors.append(TensorLayout(tensor_header.name, _ordered(unit_counts)))
        elif unit.unit_type == UnitType.ATTACHED_FILE and version >= ATTACHMENT_VERSION:
            read_attached_file(payload)
        elif unit.unit_type == UnitType.STREAM_END and header.version_major >= INTEGRITY_MAJOR:
            read_stream_end(payload)
        else:  # an unknown ancillary unit (the decoding above accepted the stream)
            unit_counts["other units"] += unit.payload_length
        counts.update(unit_counts)
    if sum(counts.values()) != len(data):  # every read goes through _take: a mismatch is a bug here
        raise RuntimeError(f"internal error: accounted {sum(counts.values())} of {len(data)} bytes")
    return StreamLayout(len(data), _ordered(counts), tuple(tensors))


def _ordered(counts: collections.Counter) -> dict[str, int]:
    return {category: counts[category] for category in CATEGORIES if counts[category]}
