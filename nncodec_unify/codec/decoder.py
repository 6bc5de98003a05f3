"""Decoder: bytes -> integer coded form -> arrays, laid out like spec/bitstream.md.

Imports only numpy, constriction (through ``entropy``) and this package's torch-free modules.
Every malformed input raises :class:`BitstreamError`; nothing is allocated from a declared
size before that size is checked against the limits and the bytes present.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import errno
import functools
import hashlib
import itertools
import math
import zlib
from collections.abc import Callable, Iterator

import numpy as np

from .bitio import ByteReader, unpack_bits
from .blocks import block_sizes, expand_blocks, grid_shape, matrix_shape
from .errors import BitstreamError, ChecksumError, LimitExceededError, NncodecError, TruncatedError
from .format import (
    DEFAULT_LIMITS,
    DTYPE_ITEMSIZE,
    DTYPE_NAMES,
    DTYPE_NUMPY,
    FLOAT_DTYPES,
    BlockKind,
    CodingMode,
    DType,
    Limits,
    ATTACHMENT_VERSION,
    DIGEST_SIZE,
    INTEGRITY_MAJOR,
    VERSION_MAJOR,
    OffsetMode,
    UnitType,
)
from .integrity import content_digest, model_digest
from .planes import decode_plane
from .quant import (
    DQ_SEGMENT,
    MAX_LEVEL,
    dequantize,
    dequantize_dependent,
    dequantize_magnitudes,
    level_type,
    signed_type,
    step_size,
    to_output_type,
    unzigzag,
)
from .syntax import (
    AttachedFile,
    FileHeader,
    StreamEnd,
    TensorHeader,
    Unit,
    read_block_shape,
    read_file_header,
    read_model_header,
    read_attached_file,
    read_quant_params,
    read_raw_payload,
    read_packed_signs,
    read_sign_section,
    read_stream_end,
    read_tensor_header,
    read_unit,
)
from .tensors import bfloat16_bits_to_float32, float32_to_bfloat16_bits
from .memory import FileChangedError, FileMapping, MappedSlice, read_through, release_pages
from .safetensors_io import write_tensor_at
from .workers import (BUFFERED_BYTES, SPILL_BYTES, OutputLayout, WrittenArray, check_workers, process_pool, spill,
                      spill_folder, unspill)


@dataclasses.dataclass(frozen=True)
class DecodedTensor:
    """One decoded tensor. ``dtype`` is the stored element type; ``array`` holds the values
    (bfloat16 widened exactly to float32)."""

    name: str
    dtype: DType
    array: np.ndarray
    coding_mode: CodingMode
    content_digest: bytes | None = None  # format 4.0: SHA-256 of the canonical bytes (§7.4)
    alias_of: str | None = None  # format 5.0: the tensor whose values (the same array) this name shares

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES[self.dtype]


@dataclasses.dataclass(frozen=True)
class DecodedModel:
    header: FileHeader
    tensors: tuple[DecodedTensor, ...]
    files: tuple[AttachedFile, ...] = ()  # §5.7 attached files, in stream order

    @property
    def model_digest(self) -> bytes | None:
        """§5.8: the fingerprint of the decoded tensors; None for a 2.x or 3.x stream."""
        if self.header.version_major < INTEGRITY_MAJOR:
            return None
        return model_digest((t.name, t.dtype, tuple(t.array.shape), t.content_digest) for t in self.tensors)


def decode(data: bytes, *, limits: Limits | None = None, framework: str = "numpy",
           verify: bool = True, workers: int = 1) -> dict[str, object]:
    """Decode a stream into ``{name: array}`` in stream order.

    With ``framework="numpy"`` (default) arrays have the stored dtype, except bfloat16, which
    is returned widened exactly to float32 (use :func:`decode_tensors` to learn the stored
    type). With ``framework="pt"`` they are torch tensors of the stored dtypes, bfloat16
    included, ready for ``model.load_state_dict`` (imports torch; only then). Raises
    :class:`BitstreamError` for any malformed stream. A format 4.0 stream proves each tensor
    bit-exact by its content digest (spec §7.4); ``verify=False`` skips that comparison (6-9 %
    of the decoding time of all-MiniLM-L6-v2), never the other checks. Tied weights (format
    5.0: one tensor under several names) come back as one array, or one torch tensor, under
    each name. ``workers`` > 1 decodes that many tensors at a time in worker processes, with
    the same results (see :func:`iter_decoded`).
    """
    if framework not in ("numpy", "pt"):
        raise ValueError(f"framework must be 'numpy' or 'pt', got {framework!r}")
    tensors = decode_tensors(data, limits=limits, verify=verify, workers=workers).tensors
    if framework == "numpy":
        return {t.name: t.array for t in tensors}
    return torch_tensors(tensors)


def torch_tensors(tensors) -> dict[str, object]:
    """Decoded tensors as ``{name: torch tensor}``; an alias (format 5.0) is the very tensor
    of the name it aliases, so tied weights stay tied (in ``torch.save`` too)."""
    result: dict[str, object] = {}
    for tensor in tensors:
        result[tensor.name] = result[tensor.alias_of] if tensor.alias_of is not None else torch_tensor(tensor)
    return result


def torch_tensor(tensor: DecodedTensor):
    """A decoded tensor as a torch tensor of its stored dtype (bfloat16 restored exactly).
    Imports torch: for the encoder's and trainer's side, never reached when decoding to numpy."""
    import torch

    if tensor.dtype == DType.BFLOAT16:  # from the bit patterns: a float32 -> bfloat16 cast rewrites NaN payloads
        bits = float32_to_bfloat16_bits(tensor.array)
        return torch.from_numpy(bits.reshape(-1).view(np.int16)).view(torch.bfloat16).reshape(bits.shape)
    array = np.array(tensor.array, copy=True)  # owned and writable: torch shares its memory
    return torch.from_numpy(array) if array.ndim else torch.tensor(array)


def decode_tensors(data: bytes, *, limits: Limits | None = None,
                   progress: Callable[[int, int, str], None] | None = None,
                   verify: bool = True, workers: int = 1) -> DecodedModel:
    """Decode a stream, keeping each tensor's stored dtype, coding mode and content digest.

    ``progress(done, total, name)`` is called as each tensor is taken up; ``verify`` and
    ``workers`` as for :func:`decode`."""
    limits = limits or DEFAULT_LIMITS
    data = _stream_bytes(data)
    try:
        return _decode(data, limits, progress, verify, workers)
    except NncodecError:
        raise
    except (MemoryError, OverflowError) as exc:
        raise LimitExceededError(f"cannot allocate the decoded data ({type(exc).__name__})") from None


def _decode(data: bytes, limits: Limits, progress=None, verify: bool = True, workers: int = 1) -> DecodedModel:
    files: list[AttachedFile] = []
    units = _decoded_units(data, limits, progress, verify, workers, files)
    header = next(units)
    return DecodedModel(header, tuple(units), tuple(files))


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A tensor's header fields and coded size, as ``nncodec info`` shows them."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    coding_mode: CodingMode
    qp: int | None
    qp_density: int | None
    block: tuple[int, int] | None
    payload_bytes: int
    dependent: bool = False  # §7.1.2 dependent quantization
    block_counts: tuple[int, int, int] | None = None  # UNIFIED: pruned, unified, dense blocks
    content_digest: bytes | None = None  # format 4.0 (stored; only decoding checks it, §7.4)
    alias_of: str | None = None  # format 5.0: another name of that tensor, with no bytes of its own


def describe(data: bytes, *, limits: Limits | None = None, with_blocks: bool = False,
             files: list[AttachedFile] | None = None) -> tuple[FileHeader, list[TensorInfo]]:
    """Parse the container and every tensor header without decoding any tensor's levels.

    Checks the framing, every CRC and (format 4.0) the STREAM_END unit; only :func:`decode`
    validates the coded data itself and checks the content digests.
    ``with_blocks`` also decodes each UNIFIED tensor's block map (small: one symbol per
    block) to count its pruned, unified and dense blocks. Attached files (§5.7) are appended
    to ``files`` when it is given.
    """
    def header_only(reader: ByteReader, header: TensorHeader, limits: Limits, version_major: int,
                    _unit: Unit) -> TensorInfo:
        size = reader.remaining
        qp = density = block = counts = None
        dependent = False
        if header.coding_mode != CodingMode.RAW:
            params = read_quant_params(reader, version_major)
            qp, density, dependent = params.qp, params.qp_density, params.dependent
            if header.coding_mode == CodingMode.UNIFIED:
                block = read_block_shape(reader)
                if with_blocks:
                    counts = _block_counts(reader, header, block, limits)
        reader.view(reader.remaining, "tensor_payload")
        return TensorInfo(header.name, header.dtype, header.shape, header.coding_mode, qp, density, block, size,
                          dependent, counts, header.content_digest)

    try:
        return _walk(_stream_bytes(data), limits or DEFAULT_LIMITS, header_only, None, files)
    except NncodecError:
        raise
    except (MemoryError, OverflowError) as exc:
        raise LimitExceededError(f"cannot allocate ({type(exc).__name__})") from None


def _block_counts(reader: ByteReader, header: TensorHeader, block: tuple[int, int],
                  limits: Limits) -> tuple[int, int, int]:
    """Pruned, unified and dense blocks of a UNIFIED tensor, from its block map (§5.6)."""
    rows, cols = matrix_shape(header.shape)
    grid_rows, grid_cols = grid_shape(rows, cols, *block)
    kinds = decode_plane(reader, grid_rows, grid_cols, None, grid_rows * grid_cols, limits, "block_map")
    counts = np.bincount(np.minimum(kinds, 3), minlength=4)
    return int(counts[BlockKind.PRUNED]), int(counts[BlockKind.UNIFIED]), int(counts[BlockKind.DENSE])


def _walk(data: bytes, limits: Limits, on_tensor, progress=None,
          files: list[AttachedFile] | None = None) -> tuple[FileHeader, list]:
    """§4: the file header, then units until the end of the data. ``on_tensor(reader,
    tensor_header, limits, version_major, unit)`` handles each tensor unit's payload after its
    header (``unit``: where the unit is, and its checked CRC); attached files go to ``files`` (checked either way)."""
    units = _walk_units(data, limits, on_tensor, progress, files)
    header = next(units)
    return header, list(units)


def iter_decoded(data: bytes, *, limits: Limits | None = None,
                 progress: Callable[[int, int, str], None] | None = None,
                 verify: bool = True, workers: int = 1,
                 output: OutputLayout | None = None) -> Iterator[DecodedTensor]:
    """Decode a stream tensor by tensor, each yielded as soon as it is decoded, so that a
    consumer can write it out and let it go: memory holds the stream and one tensor.

    Each tensor is yielded after its own checks (its content digest included, unless
    ``verify`` is False), but the stream is only known to be valid once the iterator is
    exhausted (a missing, extra or reordered unit is found at the end, spec §5.8): treat what
    was consumed as provisional until then. Errors and ``progress`` as for
    :func:`decode_tensors`.

    ``workers`` > 1 decodes tensors in that many spawned processes, up to two per worker
    ahead of the one being yielded; they are yielded in stream order, and an invalid stream
    yields the tensors before its first bad unit and raises that unit's error, as with one
    process. Memory then holds the tensor being yielded, and temporary disk space the
    finished ones waiting behind an unfinished one (up to 256 MiB of them): a worker hands a
    tensor of 1 MiB or more back through a file in a private temporary folder, which the
    caller reads once and removes, instead of sending it through a pipe (which would hold it
    two or three times over). Where no temporary file can be written, tensors cross the pipe.
    ``progress`` then reports each tensor as it comes out. The processes are started
    with the spawn method: a script that calls this must do so under
    ``if __name__ == "__main__":``.

    With ``output`` (and ``workers`` > 1) the workers write each tensor of 1 MiB or more
    into the output files themselves, at the places of its name and aliases, as safetensors
    stores it; such a tensor is yielded with a :class:`~.workers.WrittenArray` in place of
    its array, after its checks and its write. The caller writes the others.
    """
    limits = limits or DEFAULT_LIMITS
    units = _decoded_units(_stream_bytes(data), limits, progress, verify, workers, output=output)
    try:
        next(units)
        yield from units
    except (MemoryError, OverflowError) as exc:
        raise LimitExceededError(f"cannot allocate the decoded data ({type(exc).__name__})") from None


def _stream_bytes(data) -> bytes | FileMapping:
    """The stream to decode: ``bytes`` as they are, a :class:`~.memory.FileMapping` of the
    stream file as it is (read-only; its pages are let go unit by unit, so a large stream is
    never resident whole), anything else bytes-like copied (it could change under the
    decoder)."""
    if isinstance(data, (bytes, FileMapping)):
        return data
    if not isinstance(data, (bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    return bytes(data)


def _decoded_units(data: bytes, limits: Limits, progress, verify: bool, workers: int,
                   files: list[AttachedFile] | None = None, output: OutputLayout | None = None) -> Iterator:
    """:func:`_walk_units` decoding each tensor: the FileHeader, then each DecodedTensor (an
    alias's under its own name) in stream order, decoded here or, with ``workers`` > 1, in
    worker processes, which write large ones into ``output`` if given (see
    :func:`iter_decoded`)."""
    check_workers(workers)
    if workers <= 1:
        def decode_here(reader: ByteReader, header: TensorHeader, limits: Limits, version_major: int,
                        _unit: Unit) -> DecodedTensor:
            return decode_tensor_payload(reader, header, limits, version_major, verify=verify)

        yield from _walk_units(data, limits, decode_here, progress, files)
        return
    with spill_folder() as folder, process_pool(workers) as pool:

        def submit(reader: ByteReader, header: TensorHeader, limits: Limits, version_major: int,
                   unit: Unit) -> _Pending:
            start = reader.offset
            payload = _worker_payload(data, unit, start)
            job = (start, header, limits, version_major, verify, folder, output)
            retry = None
            if isinstance(payload, _CheckedUnit):  # moved or replaced meanwhile: the parent's mapping still holds it
                retry = functools.partial(_resend, pool, data, unit, start, job)
            reader.skip_to_end()  # the worker reads it, and checks that it ends there
            output_bytes = header.element_count * np.dtype(DTYPE_NUMPY[header.dtype]).itemsize
            if output is not None and output_bytes >= SPILL_BYTES:
                output_bytes = 0  # the worker writes it out: waiting, it holds nothing
            return _Pending(pool.submit(_decode_payload, payload, *job), header.name, output_bytes, retry=retry)

        tensor_count = 0
        delivered = 0

        def counted(done: int, total: int, name: str) -> None:
            nonlocal tensor_count
            tensor_count = total

        def deliver(item: _Pending) -> DecodedTensor:
            """The finished tensor of ``item``; progress counts tensors as they come out (the
            walk takes them up ahead of the workers)."""
            nonlocal delivered
            tensor = item.result()
            if progress is not None and item.alias_of is None:
                progress(delivered, tensor_count, item.name)
                delivered += 1
            return tensor

        units = _walk_units(data, limits, submit, counted, files)
        yield next(units)
        pending: collections.deque[_Pending] = collections.deque()
        while True:
            try:
                item = next(units, None)
            except Exception:
                # a later unit is bad: the tensors before it come first, as with one process,
                # and an earlier tensor's own error is the one raised
                while pending:
                    yield deliver(pending.popleft())
                raise
            if item is None:
                break
            pending.append(item)
            yield from _finished_heads(pending, deliver)  # a tensor's own error is raised here, in order
            while _must_wait(pending, workers):  # any worker freeing up will do, not only the head's
                concurrent.futures.wait([item.future for item in pending if not item.future.done()],
                                        return_when=concurrent.futures.FIRST_COMPLETED)
                yield from _finished_heads(pending, deliver)
        while pending:
            yield deliver(pending.popleft())


@dataclasses.dataclass(frozen=True)
class _Pending:
    """A tensor being decoded in a worker process, under its name or (``alias_of``) an alias."""

    future: concurrent.futures.Future
    name: str
    output_bytes: int
    alias_of: str | None = None
    # the result, its array unspilled; shared by aliases
    opened: list = dataclasses.field(default_factory=list, compare=False, repr=False)
    retry: Callable[[], concurrent.futures.Future] | None = dataclasses.field(default=None, compare=False, repr=False)

    def result(self) -> DecodedTensor:
        """The decoded tensor (waiting for it); a worker's error is raised here. An array the
        worker spilled to a file is mapped once, for the tensor and its aliases alike. A job
        whose worker could not map the stream file as the parent did is sent again once,
        as bytes from the parent's mapping (``retry``), which are still checked against the
        unit's CRC."""
        if not self.opened:
            try:
                tensor = self.future.result()
            except _MappingLost:
                if self.retry is None:
                    raise
                tensor = self.retry().result()
            self.opened.append(dataclasses.replace(tensor, array=unspill(tensor.array)))
        tensor = self.opened[0]
        return tensor if self.alias_of is None else dataclasses.replace(tensor, name=self.name, alias_of=self.alias_of)


def _finished_heads(pending: collections.deque[_Pending], deliver) -> Iterator[DecodedTensor]:
    """Yield ``deliver(item)`` for the items at the head of ``pending`` that are finished, in order."""
    while pending and pending[0].future.done():
        yield deliver(pending.popleft())


def _must_wait(pending: collections.deque[_Pending], workers: int) -> bool:
    """Whether a worker must finish before another tensor is taken up: two per worker are
    running or queued, or the finished tensors behind the unfinished head hold
    BUFFERED_BYTES."""
    running = sum(1 for item in pending if item.alias_of is None and not item.future.done())
    waiting = sum(item.output_bytes for item in itertools.islice(pending, 1, None)
                  if item.alias_of is None and item.future.done())
    return running >= 2 * workers or waiting >= BUFFERED_BYTES


MAPPED_PAYLOAD_BYTES = 1 << 16  # a worker maps payloads this large from the stream file itself


class _MappingLost(FileChangedError):
    """A worker could not map the stream file as the parent had it (moved, replaced,
    removed): the parent's own mapping may still hold the unit, unlike a file whose bytes
    changed."""


@dataclasses.dataclass(frozen=True)
class _CheckedUnit:
    """A tensor unit for a worker to decode, with the CRC-32 the parent checked it against:
    ``source`` is the unit from its first byte up to its CRC, as bytes or as a
    :class:`~.memory.MappedSlice` of the stream file that the worker maps itself; the
    payload's coded data starts ``skip`` bytes in. The worker decodes only bytes with that
    CRC: a stream file written in place while it is decoded is found, not decoded."""

    source: bytes | MappedSlice
    skip: int
    crc32: int
    path: str

    def coded_data(self):
        """The unit's coded data, its CRC checked. Raises :class:`~.memory.FileChangedError`
        (naming the stream file) when the file cannot be mapped as it was, or the bytes are
        not those the parent checked."""
        unit = self.source
        if isinstance(unit, MappedSlice):
            try:
                unit = unit.load()
            except FileChangedError:
                raise _MappingLost(errno.ESTALE, "the stream file was moved, replaced or changed while it "
                                   "was decoded", self.path) from None
        if zlib.crc32(unit) != self.crc32:
            if isinstance(unit, np.ndarray):
                release_pages(unit)
            raise FileChangedError(errno.ESTALE, "the stream file changed while it was decoded (a unit's bytes "
                                   "are not those checked)", self.path)
        return unit[self.skip:]


def _worker_payload(data, unit: Unit, coded_start: int) -> bytes | _CheckedUnit:
    """What a worker is sent to decode the tensor ``unit`` from ``coded_start`` (where its
    coded data begins, after the tensor header): for a large payload of a stream file that
    still has its name, a :class:`_CheckedUnit` whose worker maps the unit from the file
    itself (the bytes are neither copied here nor sent through the pool's pipe: 0.3 s of a
    2 GB model's start-up was the first payload's trip); else the bytes, taken now, just
    after the parent checked the unit's CRC."""
    end = unit.payload_offset + unit.payload_length
    if (isinstance(data, FileMapping) and data.identity is not None and end - coded_start >= MAPPED_PAYLOAD_BYTES
            and data.identity.still_names_it()):
        return _checked_unit(data, unit, coded_start, by_reference=True)
    return data[coded_start:end]


def _checked_unit(data: FileMapping, unit: Unit, coded_start: int, *, by_reference: bool) -> _CheckedUnit:
    """The :class:`_CheckedUnit` of the tensor ``unit`` of the mapped stream ``data`` whose
    coded data starts at ``coded_start``: the unit by reference, or (when ``by_reference`` is
    False) as bytes copied now, with the CRC-32 read_unit checked."""
    end = unit.payload_offset + unit.payload_length
    source = (MappedSlice(data.identity, unit.offset, "|u1", (end - unit.offset,)) if by_reference
              else data[unit.offset:end])
    return _CheckedUnit(source, coded_start - unit.offset, unit.crc, data.identity.path)


def _resend(pool, data: FileMapping, unit: Unit, coded_start: int, job: tuple):
    """Submit a unit again, as bytes copied from the parent's mapping of the stream file,
    checked against the CRC-32 the parent checked at first (the mapping may hold other bytes
    by now): a future of :func:`_decode_payload`."""
    return pool.submit(_decode_payload, _checked_unit(data, unit, coded_start, by_reference=False), *job)


def _decode_payload(payload: bytes | _CheckedUnit, origin: int, header: TensorHeader, limits: Limits,
                    version_major: int, verify: bool, folder: str | None = None,
                    output: OutputLayout | None = None) -> DecodedTensor:
    """:func:`decode_tensor_payload` in a worker process: ``payload`` is the tensor unit's
    payload after its header (its bytes, or its :class:`_CheckedUnit`), which starts at stream
    offset ``origin`` (errors name stream offsets, as in one process). A large array, once
    checked against its content digest, is written into ``output`` at its name's and
    aliases' offsets (a :class:`~.workers.WrittenArray` goes back) or else goes back through a
    file in ``folder`` (:func:`~.workers.spill`)."""
    data = payload.coded_data() if isinstance(payload, _CheckedUnit) else payload
    try:
        reader = ByteReader(data, origin=origin)
        tensor = decode_tensor_payload(reader, header, limits, version_major, verify=verify)
        reader.expect_end("tensor_payload")
    finally:
        if isinstance(data, np.ndarray):  # a mapped unit's pages: read again from the file if needed
            release_pages(data)
    if output is not None and tensor.array.nbytes >= SPILL_BYTES:
        names = (header.name, *(header.aliases or ()))
        crc = write_tensor_at([output.places[name] for name in names], tensor.array, tensor.dtype, crc32=output.crc32)
        return dataclasses.replace(tensor, array=WrittenArray(tuple(tensor.array.shape), crc))
    return dataclasses.replace(tensor, array=spill(tensor.array, folder))


def _walk_units(data: bytes, limits: Limits, on_tensor, progress=None,
                files: list[AttachedFile] | None = None) -> Iterator:
    """:func:`_walk` as a generator: the FileHeader first, then each tensor's result."""
    reader = ByteReader(data)
    header = read_file_header(reader)
    yield header
    version = (header.version_major, header.version_minor)
    integrity = header.version_major >= INTEGRITY_MAJOR  # content digests and STREAM_END (§5.8)
    stream_hash = hashlib.sha256(memoryview(data)[:reader.offset]) if integrity else None
    records: list[tuple[str, DType, tuple[int, ...], bytes]] = []  # §5.8 tensor_records
    tensor_count = None
    results = 0  # tensor units read; their results are yielded, not kept
    units = 0  # units read before STREAM_END, of every type (§5.8 unit_count)
    ended = False
    paths: set[str] = set()
    names: set[str] = set()
    output_bytes = 0
    while reader.remaining:
        if ended:
            raise BitstreamError("bytes after the stream_end unit", element="stream_end", offset=reader.offset)
        unit = read_unit(reader, data)
        payload = ByteReader(data, unit.payload_offset, unit.payload_offset + unit.payload_length)
        if unit.unit_type == UnitType.MODEL_HEADER and not unit.ancillary:
            if tensor_count is not None:
                raise BitstreamError("a second model_header unit", element="unit_type", offset=unit.offset)
            tensor_count = read_model_header(payload, limits).tensor_count
        elif tensor_count is None:
            raise BitstreamError("the first unit must be the model_header (unit_type 1)",
                                 element="unit_type", offset=unit.offset)
        elif unit.unit_type == UnitType.TENSOR and not unit.ancillary:
            if results == tensor_count:
                raise BitstreamError(f"more tensor units than the {tensor_count} the model_header declares",
                                     element="unit_type", offset=unit.offset)
            tensor_header = read_tensor_header(payload, limits, header.version_major)
            if tensor_header.name in names:
                raise BitstreamError(f"duplicate tensor name {tensor_header.name!r}", element="name",
                                     offset=unit.payload_offset + 2)
            names.add(tensor_header.name)
            aliases = tensor_header.aliases or ()
            for alias, at in zip(aliases, tensor_header.alias_offsets, strict=True):
                if alias in names:
                    raise BitstreamError(f"alias name {alias!r} is already a tensor's name", element="alias_name",
                                         offset=at + 2)
                names.add(alias)
            # §8: stored sizes, an alias's as often as its name is written out
            output_bytes += (1 + len(aliases)) * tensor_header.element_count * DTYPE_ITEMSIZE[tensor_header.dtype]
            if output_bytes > limits.max_total_output_bytes:
                raise LimitExceededError(
                    f"decoded tensors would exceed {limits.max_total_output_bytes} bytes", element="dims",
                    offset=unit.payload_offset)
            if progress is not None:
                progress(results, tensor_count, tensor_header.name)
            result = on_tensor(payload, tensor_header, limits, header.version_major, unit)
            payload.expect_end("tensor_payload")
            if integrity:
                records += [(name, tensor_header.dtype, tensor_header.shape, tensor_header.content_digest)
                            for name in (tensor_header.name, *aliases)]
            results += 1
            yield result
            for alias in aliases:
                yield _alias_result(result, alias, tensor_header.name)
            del result  # the consumer may let it go before the next tensor is decoded
        elif unit.unit_type == UnitType.ATTACHED_FILE and version >= ATTACHMENT_VERSION:
            if not unit.ancillary:
                raise BitstreamError("an attached_file unit must be ancillary", element="unit_flags",
                                     offset=unit.offset + 1)
            attached = read_attached_file(payload)
            if attached.path in paths:
                raise BitstreamError(f"a second attached file {attached.path!r}", element="path",
                                     offset=unit.payload_offset + 2)
            paths.add(attached.path)
            output_bytes += len(attached.content)
            if output_bytes > limits.max_total_output_bytes:
                raise LimitExceededError(f"decoded tensors and files would exceed {limits.max_total_output_bytes} "
                                         "bytes", element="content", offset=unit.payload_offset)
            if files is not None:
                files.append(attached)
        elif unit.unit_type == UnitType.STREAM_END and integrity:
            if unit.ancillary:
                raise BitstreamError("the stream_end unit must be critical", element="unit_flags",
                                     offset=unit.offset + 1)
            if results != tensor_count:
                raise TruncatedError(f"stream_end after {results} tensor units, the model_header declares "
                                     f"{tensor_count}", element="tensor_count", offset=unit.offset)
            _check_stream_end(read_stream_end(payload), units, records, stream_hash.digest(), unit.payload_offset)
            ended = True
        elif unit.unit_type in (UnitType.MODEL_HEADER, UnitType.TENSOR):
            raise BitstreamError(f"unit_type {unit.unit_type} must not be marked ancillary",
                                 element="unit_flags", offset=unit.offset + 1)
        elif not unit.ancillary:
            raise BitstreamError(f"unknown critical unit_type {unit.unit_type}", element="unit_type",
                                 offset=unit.offset)
        # unknown ancillary units are skipped (§4.2), but counted and hashed (§5.8)
        units += 1
        if stream_hash is not None:
            for piece in read_through(data, unit.offset, reader.offset):
                stream_hash.update(piece)
        if isinstance(data, FileMapping):  # read again from the file if a later pass needs it
            release_pages(np.frombuffer(data, dtype=np.uint8, count=reader.offset - unit.offset, offset=unit.offset))
    if tensor_count is None:
        raise TruncatedError("the stream has no model_header unit", element="model_header",
                             offset=reader.offset)
    if results != tensor_count:
        raise TruncatedError(f"{results} tensor units, the model_header declares {tensor_count}",
                             element="tensor_count", offset=reader.offset)
    if integrity and not ended:
        raise TruncatedError("the stream ends without its stream_end unit (units were lost)",
                             element="stream_end", offset=reader.offset)


def _alias_result(result, alias: str, target: str):
    """A tensor's result (DecodedTensor or TensorInfo) under its alias name (§5.2): the same
    values, the same array, and no payload bytes of its own."""
    if isinstance(result, TensorInfo):
        return dataclasses.replace(result, name=alias, alias_of=target, payload_bytes=0)
    return dataclasses.replace(result, name=alias, alias_of=target)


def _check_stream_end(end: StreamEnd, units: int, records: list, stream_digest: bytes, offset: int) -> None:
    """§5.8 in order: the unit count, the model digest, the stream digest."""
    if end.unit_count != units:
        raise BitstreamError(f"{units} units precede stream_end, which counts {end.unit_count}: units were "
                             f"{'lost' if units < end.unit_count else 'added'}", element="unit_count",
                             offset=offset)
    if end.model_digest != model_digest(records):
        raise ChecksumError("the tensors are not those the encoder wrote, or not in its order (model digest "
                            "mismatch)", element="model_digest", offset=offset + 4)
    if end.stream_digest != stream_digest:
        raise ChecksumError("the stream was altered after it was written (SHA-256 of the units mismatch)",
                            element="stream_digest", offset=offset + 4 + DIGEST_SIZE)


def decode_tensor_payload(reader: ByteReader, header: TensorHeader, limits: Limits,
                          version_major: int = VERSION_MAJOR, *, verify: bool = True) -> DecodedTensor:
    """§5.3: the payload after the tensor_header, in the tensor's coding mode; then, in a 4.x
    stream and unless ``verify`` is False, §7.4: the content digest of the result."""
    if header.coding_mode == CodingMode.RAW:
        array = _raw_array(read_raw_payload(reader, header), header)
    else:
        at = reader.offset
        params = read_quant_params(reader, version_major)
        integer = header.dtype not in FLOAT_DTYPES
        if integer and params.qp != 0:
            raise BitstreamError(f"qp {params.qp} for dtype {DTYPE_NAMES[header.dtype]}: integers are coded "
                                 "with step 1 (qp 0)", element="qp", offset=at)
        if integer and params.dependent:
            raise BitstreamError(f"dependent quantization for dtype {DTYPE_NAMES[header.dtype]}: integers are "
                                 "coded losslessly", element="quant_flags", offset=reader.offset - 1)
        rows, cols = matrix_shape(header.shape)
        narrowest = _narrowest_levels(header.dtype)
        if header.coding_mode == CodingMode.DENSE:
            levels = _read_dense(reader, rows, cols, limits, narrowest)
        else:
            levels = _read_unified(reader, rows, cols, limits, narrowest)
        levels.dependent = params.dependent
        if integer:
            array = levels.integers(header.dtype).reshape(header.shape)
        else:
            array = levels.values(step_size(params.qp, params.qp_density), header.dtype).reshape(header.shape)
        reader.expect_end("tensor_payload")
    if verify and header.content_digest is not None and content_digest(array, header.dtype) != header.content_digest:
        raise ChecksumError(f"tensor {header.name!r} decodes to other values than the encoder's (content "
                            "digest mismatch)", element="content_digest", offset=header.digest_offset)
    return DecodedTensor(header.name, header.dtype, array, header.coding_mode, header.content_digest)


def _narrowest_levels(dtype: DType) -> type:
    """The narrowest level type worth decoding a ``dtype`` tensor into: one as wide as its
    values where they are written over the levels (float32 and bfloat16 over int32, float16
    over int16) or are the levels (integers of one or two bytes: unsigned ones as magnitudes
    alone where nothing makes a level negative, see :func:`_read_dense_levels`), so that
    levels that fit take no more memory than the result."""
    if dtype == DType.FLOAT16:
        return np.int16
    if dtype not in FLOAT_DTYPES and DTYPE_ITEMSIZE[dtype] <= 2:
        return DTYPE_NUMPY[dtype].newbyteorder("=").type
    return np.int32


def _raw_array(raw: memoryview, header: TensorHeader) -> np.ndarray:
    if header.dtype == DType.BFLOAT16:
        return bfloat16_bits_to_float32(np.frombuffer(raw, dtype="<u2")).reshape(header.shape)
    if header.dtype == DType.BOOL:
        octets = np.frombuffer(raw, dtype=np.uint8)
        if octets.size and octets.max() > 1:
            raise BitstreamError("a bool element is neither 0 nor 1", element="raw_data")
        return octets.astype(bool).reshape(header.shape)
    stored = DTYPE_NUMPY[header.dtype].newbyteorder("<")
    assert DTYPE_ITEMSIZE[header.dtype] == stored.itemsize
    return np.frombuffer(raw, dtype=stored).astype(stored.newbyteorder("="), copy=True).reshape(header.shape)


_PIECE = 1 << 18  # elements reconstructed at a time: bounds the temporaries; a multiple of DQ_SEGMENT


@dataclasses.dataclass
class _Levels:
    """A matrix's levels as decoded, signed (int32, or int16 or int8 where :func:`decode_plane`
    could narrow them: each magnitude negated where its §6.8 sign bit is 1; an unsigned
    tensor's may be uint8 or uint16 where none is negative), and the column offsets
    (§6.10) to add at the positions of ``offset_mask`` (all if None). Magnitudes are below
    the type's largest value, so a signed level always fits."""

    levels: np.ndarray
    offsets: np.ndarray | None = None
    offset_mask: np.ndarray | None = None
    dependent: bool = False  # §7.1.2

    def values(self, step: np.float32, dtype: DType) -> np.ndarray:
        """§7.1: the reconstructed values, as a flat array of the output type.

        Reconstructs :data:`_PIECE` elements at a time (whole segments of the dependent
        quantizer's state machine, so each piece restarts it where the scan does). A float32
        result (float32 and bfloat16 tensors) is written over int32 ``levels``, a float16 one
        over int16 levels, which are used up (each piece's values are computed before they
        are written over its own levels): memory holds the matrix and one piece's temporaries.
        """
        levels = self.levels.reshape(-1)
        output_type = DTYPE_NUMPY[dtype].newbyteorder("=")
        if ((output_type, levels.dtype) in ((np.float32, np.int32), (np.float16, np.int16))
                and levels.flags.c_contiguous):
            values = levels.view(output_type)
        else:
            values = np.empty(levels.size, dtype=output_type)
        size = self._piece_size()
        for start in range(0, levels.size, size):
            piece = self._piece(start, start + size)
            values[start:start + piece.levels.size] = piece._piece_values(step, dtype)
        return values

    def _piece_size(self) -> int:
        """:data:`_PIECE`, or a multiple of the row length near it when there are column
        offsets, so that each piece is whole rows and takes the offsets as they are."""
        rows = math.lcm(DQ_SEGMENT, self.offsets.size) if self.offsets is not None else 0
        return _PIECE if not 0 < rows <= 4 * _PIECE else max(1, _PIECE // rows) * rows

    def _piece(self, start: int, stop: int) -> _Levels:
        """The levels at flat positions ``start`` to ``stop`` (``start`` a multiple of
        DQ_SEGMENT), as the levels of a matrix of their own."""
        levels = self.levels.reshape(-1)[start:stop]
        offsets, mask = self.offsets, None
        if offsets is not None:
            if start % offsets.size or levels.size % offsets.size:
                offsets = offsets[np.arange(start, start + levels.size) % offsets.size]  # a one-row matrix
            if self.offset_mask is not None:
                mask = self.offset_mask.reshape(-1)[start:stop].reshape(-1, offsets.size)
        return _Levels(levels, offsets, mask, self.dependent)

    def _piece_values(self, step: np.float32, dtype: DType) -> np.ndarray:
        """:meth:`values` of a piece, in one go."""
        if self.dependent and self.levels.size:
            return self._dependent_values(step, dtype)
        magnitudes, negative = _split_signs(self.levels)
        if self.offsets is None or magnitudes.size == 0:  # no offsets, or nothing to add them to
            return dequantize_magnitudes(magnitudes, negative, step, dtype)
        largest = (int(magnitudes.max(initial=0)) + int(np.abs(self.offsets).max(initial=0)))
        if largest * _odd_mantissa(step) < 1 << 24:
            # every level, offset and their sum times the step is exact in float32, so the
            # offset can be added to the product: float32(level) * step, one float pass
            values = dequantize_magnitudes(magnitudes, negative, step, DType.FLOAT32)
            shifts = (self.offsets.astype(np.float32) * np.float32(step))[None, :]
            matrix = values.reshape(-1, self.offsets.size)
            matrix += shifts if self.offset_mask is None else np.where(self.offset_mask, shifts, np.float32(0))
            return to_output_type(values, dtype)
        return dequantize(self._signed(), step, dtype)

    def _dependent_values(self, step: np.float32, dtype: DType) -> np.ndarray:
        """§7.1.2: every element, in scan order, read by the quantizer its state selects."""
        return dequantize_dependent(*_split_signs(self._signed()), step, dtype)

    def integers(self, dtype: DType) -> np.ndarray:
        """§7.1.1: the levels themselves, as a flat array of the integer ``dtype``.

        A piece at a time: a first pass checks every level (plus its column offset) against
        the range of ``dtype``, a second writes them out, over the levels when they have the
        output's width (the levels are used up), else into a new array. Memory holds the
        levels, the output if it is new, and one piece's temporaries."""
        info = np.iinfo(DTYPE_NUMPY[dtype])
        size = self._piece_size()
        # pieces are made as they are used: each may hold its own copy of the offsets
        starts = range(0, self.levels.size, size)
        low, high = 0, 0
        for start in starts:  # every piece's offset check comes before any range check
            signed = self._piece(start, start + size)._signed()
            if signed.size:
                low, high = min(low, int(signed.min())), max(high, int(signed.max()))
        if low < info.min or high > info.max:
            raise BitstreamError(f"a level is outside the range of {DTYPE_NAMES[dtype]} "
                                 f"({info.min}..{info.max})", element="levels")
        levels = self.levels.reshape(-1)
        output_type = DTYPE_NUMPY[dtype].newbyteorder("=")
        if levels.dtype.itemsize == output_type.itemsize and levels.flags.c_contiguous:
            output = levels.view(output_type)
        else:
            output = np.empty(levels.size, dtype=output_type)
        for start in starts:
            signed = self._piece(start, start + size)._signed()
            output[start:start + signed.size] = signed  # each piece read before it is written over
        return output

    def _signed(self) -> np.ndarray:
        """The flat int32 levels plus column offsets, checked to stay within ±(2**31 - 1)
        (§6.10)."""
        if self.offsets is None or not self.offsets.size or not self.levels.size:
            return self.levels.reshape(-1)
        levels = self.levels.astype(np.int64).reshape(-1, self.offsets.size)
        levels += self.offsets[None, :] if self.offset_mask is None else np.where(self.offset_mask, self.offsets, 0)
        if int(np.abs(levels).max()) > MAX_LEVEL:
            raise BitstreamError(f"a level plus its column offset exceeds {MAX_LEVEL} in magnitude",
                                 element="column_offsets")
        return levels.astype(np.int32).ravel()


def _split_signs(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed levels as magnitudes and 0/1 uint8 sign flags, as ``quant`` takes them."""
    return np.abs(levels), (levels < 0).view(np.uint8)


def _odd_mantissa(step: np.float32) -> int:
    """The odd integer M with step = M * 2**e: float32(k) * step is exact when |k| * M < 2**24."""
    numerator, _ = float(step).as_integer_ratio()
    return numerator >> ((numerator & -numerator).bit_length() - 1)


def _apply_signs(magnitudes: np.ndarray, reader: ByteReader, element: str) -> np.ndarray:
    """§6.8: read one sign per non-zero magnitude, in scan order, and negate, in place, the
    magnitudes whose sign bit is 1, a piece of the scan at a time; returns the flat signed
    levels: ``magnitudes`` itself, or, when they are unsigned (an unsigned tensor's) and a
    sign bit is 1, a signed copy wide enough for them (the level is out of the tensor's
    range, which :meth:`_Levels.integers` reports where §7.1.1 checks it)."""
    packed = read_packed_signs(reader, int(np.count_nonzero(magnitudes)), element)
    flat = magnitudes.reshape(-1)
    used = 0  # sign bits applied so far
    for start in range(0, flat.size, _PIECE):
        piece = flat[start:start + _PIECE]
        nonzero = piece != 0
        count = int(np.count_nonzero(nonzero))
        negative = unpack_bits(packed, used, count)
        used += count
        if flat.dtype.kind == "u":
            if not negative.any():
                continue
            flat = flat.astype(np.int16 if flat.dtype.itemsize == 1 else np.int32)
            piece = flat[start:start + _PIECE]
        flip = np.zeros(piece.size, dtype=piece.dtype)
        flip[nonzero] = negative
        np.negative(flip, out=flip)  # -1 where the level is negative, else 0
        piece ^= flip  # two's complement: -m == (m ^ -1) + 1
        piece -= flip
    return flat


def _read_offsets(reader: ByteReader, rows: int, cols: int, limits: Limits) -> np.ndarray | None:
    """§6.10 offset_mode and, for OffsetMode.COLUMN, the column_offsets plane: one offset per
    matrix column (int64), or None."""
    at = reader.offset
    mode = reader.u8("offset_mode")
    if mode == OffsetMode.NONE:
        return None
    if mode != OffsetMode.COLUMN:
        raise BitstreamError(f"offset_mode {mode} is reserved (0, 1 allowed)", element="offset_mode", offset=at)
    if rows == 0:  # the limits bound rows x cols, not the columns of a matrix without rows
        raise BitstreamError("column offsets for a matrix without rows", element="offset_mode", offset=at)
    return unzigzag(decode_plane(reader, 1, cols, None, cols, limits, "column_offsets"))


def _read_dense_levels(reader: ByteReader, rows: int, cols: int, mask: np.ndarray | None,
                       limits: Limits, narrowest: type = np.int32,
                       work: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """offset_mode, column_offsets, dense_levels, dense_signs (§5.5, §5.6): the masked
    positions' signed levels (in the narrowest type no narrower than ``narrowest`` that the
    plane allows, see :func:`decode_plane`) in scan order, and the column offsets or None.
    ``work`` as for :func:`decode_plane`."""
    offsets = _read_offsets(reader, rows, cols, limits)
    if offsets is not None or mask is not None:  # levels that may be negative: a signed type
        narrowest = signed_type(narrowest)
    count = rows * cols if mask is None else int(np.count_nonzero(mask))
    magnitudes = decode_plane(reader, rows, cols, mask, count, limits, "dense_levels", narrowest, work)
    return _apply_signs(magnitudes, reader, "dense_signs"), offsets


def _read_dense(reader: ByteReader, rows: int, cols: int, limits: Limits, narrowest: type = np.int32) -> _Levels:
    """§5.5 dense_payload; the levels in a type no narrower than ``narrowest``."""
    return _Levels(*_read_dense_levels(reader, rows, cols, None, limits, narrowest))


def _read_unified(reader: ByteReader, rows: int, cols: int, limits: Limits, narrowest: type = np.int32) -> _Levels:
    """§5.6 unified_payload; ``narrowest`` as for :func:`_read_dense`, for a structured
    tensor's levels matrix too (see :func:`_read_structured`)."""
    block_rows, block_cols = read_block_shape(reader)
    grid_rows, grid_cols = grid_shape(rows, cols, block_rows, block_cols)
    map_at = reader.offset
    kinds = decode_plane(reader, grid_rows, grid_cols, None, grid_rows * grid_cols, limits, "block_map")
    if kinds.size and kinds.max() > max(BlockKind):
        raise BitstreamError(f"block kind {int(kinds.max())} is reserved (0, 1, 2 allowed)",
                             element="block_map", offset=map_at)
    kinds = kinds.reshape(grid_rows, grid_cols).astype(np.uint8)
    unified_blocks = kinds == BlockKind.UNIFIED
    unified_count = int(np.count_nonzero(unified_blocks))
    at = reader.offset
    unified_magnitudes = decode_plane(reader, grid_rows, grid_cols, unified_blocks, unified_count, limits,
                                      "unified_magnitudes")
    if unified_count and int(unified_magnitudes.max()) >= MAX_LEVEL:
        raise BitstreamError(f"a unified magnitude exceeds {MAX_LEVEL}", element="unified_magnitudes", offset=at)
    if not (kinds == BlockKind.DENSE).all():
        return _read_structured(reader, rows, cols, block_rows, block_cols, kinds, unified_magnitudes, limits,
                                narrowest)
    read_sign_section(reader, 0, "unified_signs")
    return _Levels(*_read_dense_levels(reader, rows, cols, None, limits, narrowest))


def _read_structured(reader: ByteReader, rows: int, cols: int, block_rows: int, block_cols: int,
                     kinds: np.ndarray, unified_magnitudes: np.ndarray, limits: Limits,
                     narrowest: type = np.int32) -> _Levels:
    """The rest of §5.6 when some blocks are unified or pruned. The levels take the
    narrowest type no narrower than ``narrowest`` that holds the unified magnitudes and the
    dense plane's bound.

    Memory: the levels matrix (which the dense plane uses as its working space before it
    holds the levels), the dense mask, the unified signs (a byte each) and the dense levels
    in scan order; the unified levels are filled in a piece of block rows at a time."""
    largest_unified = int(unified_magnitudes.max(initial=0)) + 1
    levels_type = level_type(largest_unified, signed_type(narrowest))
    unified_count = int(block_sizes(rows, cols, block_rows, block_cols)[kinds == BlockKind.UNIFIED].sum())
    negative = read_sign_section(reader, unified_count, "unified_signs")
    in_dense = expand_blocks(kinds == BlockKind.DENSE, block_rows, block_cols, rows, cols)
    levels = np.zeros((rows, cols), dtype=levels_type)
    dense, offsets = _read_dense_levels(reader, rows, cols, in_dense, limits, levels_type, work=levels)
    if dense.size and dense.dtype.itemsize > levels.dtype.itemsize:  # the dense plane may need a wider type
        levels = levels.astype(dense.dtype)
    levels[in_dense] = dense  # over the plane's symbols there; every other element is 0
    del dense
    _fill_unified(levels, kinds, unified_magnitudes, negative, block_rows, block_cols)
    return _Levels(levels, offsets, in_dense)


def _fill_unified(levels: np.ndarray, kinds: np.ndarray, unified_magnitudes: np.ndarray, negative: np.ndarray,
                  block_rows: int, block_cols: int) -> None:
    """Write each unified block's level (§6.3: magnitude ``unified_magnitudes + 1``, the
    sign of each element from ``negative``, in scan order of the unified elements) into
    ``levels``, whole block rows at a time (no per-element array of the whole matrix)."""
    unified = kinds == BlockKind.UNIFIED
    block_magnitude = np.zeros(kinds.shape, dtype=levels.dtype)
    block_magnitude[unified] = unified_magnitudes + 1
    rows, cols = levels.shape
    block_rows = min(block_rows, max(rows, 1))
    step = max(1, _PIECE // max(1, cols * block_rows)) * block_rows
    used = 0  # signs taken so far
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        grid = slice(start // block_rows, -(-stop // block_rows))
        in_unified = expand_blocks(unified[grid], block_rows, block_cols, stop - start, cols)
        count = int(np.count_nonzero(in_unified))
        if count == 0:
            continue
        magnitudes = expand_blocks(block_magnitude[grid], block_rows, block_cols, stop - start, cols)[in_unified]
        piece = levels[start:stop]
        piece[in_unified] = np.where(negative[used:used + count] != 0, -magnitudes, magnitudes)
        used += count
