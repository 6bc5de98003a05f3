"""Encoder: arrays -> integer coded form -> bytes (spec §4-§6).

Floats end at quantization: from the levels on, everything is integers, and the block kinds are
derived from the levels alone (§6.3), so any tensor is coded correctly whether or not it was
trained towards the unified structure.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import math
import typing
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from . import termination
from .bitio import BitPacker, ByteWriter
from .blocks import block_kinds, expand_blocks, grid_shape, matrix_shape
from .classes import entropy_bits
from .config import EncoderConfig, TensorCoding
from .errors import EncodeError
from .format import (
    ALIAS_MAJOR,
    ATTACHMENT_VERSION,
    DEFAULT_LIMITS,
    DEPENDENT_MAJOR,
    DIGEST_SIZE,
    DTYPE_ITEMSIZE,
    FLOAT_DTYPES,
    PLAIN_MAJOR,
    VERSION_MINOR,
    BlockKind,
    CodingMode,
    DType,
    OffsetMode,
    UnitType,
)
from .integrity import canonical_bytes, content_digest, model_digest
from .memory import FileChangedError, MappedSlice, release_pages
from .planes import encode_plane
from .rdo import _PlaneRates, optimize_dense, optimize_unified
from .trellis import trellis_magnitudes
from .quant import (MAX_LEVEL, dequantize, dequantize_dependent, exact_dependent_magnitudes, level_type, quantize,
                    step_size, zigzag)
from .syntax import (
    AttachedFile,
    FileHeader,
    ModelHeader,
    QuantParams,
    StreamEnd,
    TensorHeader,
    check_attachment_path,
    write_attached_file,
    write_file_header,
    write_level_plane,
    write_model_header,
    write_quant_params,
    write_sign_section,
    write_stream_end,
    write_tensor_header,
    unit_pieces,
)
from .workers import BUFFERED_BYTES, check_workers, process_pool
from .tensors import BFloat16Array, bfloat16_bits_to_float32, find_ties, float32_to_bfloat16_bits, to_source


@dataclasses.dataclass(frozen=True)
class TensorReport:
    """What happened to one tensor: its coding, sizes and (for quantized modes) error."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    mode: CodingMode
    qp: int | None
    original_bytes: int
    coded_bytes: int
    max_abs_error: float
    block_counts: tuple[int, int, int] | None = None  # pruned, unified, dense
    note: str = ""
    squared_error: float = 0.0  # sum over the elements (measured with max_abs_error)
    content_digest: bytes | None = None  # format 4.0: SHA-256 of the decoded bytes (spec §7.4)
    aliases: tuple[str, ...] = ()  # format 5.0: its other names, coded with it (tied weights, §5.2)


@dataclasses.dataclass(frozen=True)
class EncodeResult:
    data: bytes
    reports: tuple[TensorReport, ...]


def encode(tensors: Mapping[str, object], *, config: EncoderConfig | None = None) -> bytes:
    """Encode a mapping of names to numpy arrays or torch tensors into a stream.

    >>> import numpy as np
    >>> stream = encode({"w": np.zeros((2, 2), np.float32)})
    >>> stream[:4], len(stream)
    (b'\\x89NNU', 176)

    The default stream carries digests (format 4.0: 32 bytes per tensor and a STREAM_END
    unit); without them it is format 3.0 and smaller:

    >>> len(encode({"w": np.zeros((2, 2), np.float32)}, config=EncoderConfig(digests=False)))
    66
    """
    return encode_with_report(tensors, config=config).data


def encode_with_report(tensors: Mapping[str, object], *, config: EncoderConfig | None = None,
                       measure_error: bool = False,
                       progress: Callable[[int, int, str], None] | None = None,
                       workers: int = 1, attachments: Sequence[AttachedFile] = ()) -> EncodeResult:
    """Like :func:`encode`, also returning a :class:`TensorReport` per tensor.

    ``measure_error`` computes each quantized tensor's maximum absolute error (costs a
    reconstruction). ``progress(done, total, name)`` is called as tensors are taken up.
    ``workers > 1`` codes tensors in that many processes (constriction holds the GIL, so
    threads would not help); the stream is byte-identical to a single-process run.
    ``attachments`` are carried as in :func:`encode_to_file`.
    """
    buffer = io.BytesIO()
    reports = encode_to_file(tensors, buffer, config=config, measure_error=measure_error, progress=progress,
                             workers=workers, attachments=attachments)
    return EncodeResult(buffer.getvalue(), reports)


def encode_to_file(tensors: Mapping[str, object], file, *, config: EncoderConfig | None = None,
                   measure_error: bool = False, progress: Callable[[int, int, str], None] | None = None,
                   workers: int = 1, attachments: Sequence[AttachedFile] = ()) -> tuple[TensorReport, ...]:
    """Encode into the open binary ``file`` unit by unit, as each tensor is coded: memory holds
    one tensor's work (``workers`` of them), never the whole stream or model, when the values
    of ``tensors`` are produced lazily (memory-mapped arrays). Options as for
    :func:`encode_with_report`; returns the reports. The bytes are those of :func:`encode`.
    ``attachments`` (a model's config and tokenizer files) go in ancillary ATTACHED_FILE
    units after the model header (§5.7), which makes a stream without digests format 3.1.
    With digests (the default: format 4.0, or 5.0 when ``tensors`` hold tied weights) the
    stream ends with a STREAM_END unit (§5.8) that holds the unit count, the model digest and
    the SHA-256 of every byte written before it.
    """
    config = EncoderConfig() if config is None else config
    if not isinstance(config, EncoderConfig):
        raise EncodeError(f"config must be an EncoderConfig, got {type(config).__name__}")
    if not isinstance(tensors, Mapping):
        raise EncodeError(f"expected a mapping of names to tensors, got {type(tensors).__name__}")
    check_workers(workers)

    stream_hash = hashlib.sha256() if config.digests else None
    units = 0

    def write(data: bytes) -> None:
        file.write(data)
        if stream_hash is not None:
            stream_hash.update(data)

    def emit(unit_type: int, payload: bytes, ancillary: bool = False) -> None:
        nonlocal units
        termination.check()  # a SIGTERM whose exception was lost stops at the next unit
        for piece in unit_pieces(unit_type, payload, ancillary=ancillary):  # no copy of the payload
            write(piece)
        units += 1

    paths = [attached.path for attached in attachments]
    for path in paths:
        problem = check_attachment_path(path) if isinstance(path, str) else "not a string"
        if problem:
            raise EncodeError(f"attached file {path!r}: {problem}")
    if len(set(paths)) != len(paths):
        raise EncodeError("two attached files have the same path")
    # tied weights are coded once, their other names in the tensor's header (format 5.0); a
    # name that a rule codes otherwise (--mode, --tensor-qp, --tensor-block) is coded on its own
    ties = {alias: target for alias, target in (find_ties(tensors) if config.digests else {}).items()
            if config.same_rules(alias, target)}
    aliases_of: dict[str, list[str]] = {}
    for alias, target in ties.items():
        aliases_of.setdefault(target, []).append(alias)
    major = ALIAS_MAJOR if ties else config.stream_major
    names = [name for name in tensors if name not in ties]
    if major == DEPENDENT_MAJOR and all(config.raw_by_rules(name) for name in names):
        major = PLAIN_MAJOR  # spec §10: the lowest version; RAW tensors have no quant_params
    start = ByteWriter()
    version = (major, VERSION_MINOR)
    if attachments and version < ATTACHMENT_VERSION:  # 3.0 decoders skip the ancillary units
        version = ATTACHMENT_VERSION
        major = version[0]  # the tensors' syntax follows the header's version (quant_flags from 3.0)
    write_file_header(start, FileHeader(*version))
    write(start.getvalue())
    header = ByteWriter()
    write_model_header(header, ModelHeader(len(names)))
    emit(UnitType.MODEL_HEADER, header.getvalue())
    for attached in attachments:
        unit = ByteWriter()
        write_attached_file(unit, attached)
        emit(UnitType.ATTACHED_FILE, unit.getvalue(), ancillary=True)
    jobs = _jobs(tensors, config, measure_error, ties, aliases_of, major)
    reports = []
    if workers > 1 and len(names) > 1:
        for index, (payload, report) in enumerate(_encode_in_workers(jobs, workers)):
            if progress is not None:
                progress(index, len(names), names[index])
            emit(UnitType.TENSOR, payload)
            reports.append(report)
    else:
        for index, job in enumerate(jobs):
            if progress is not None:
                progress(index, len(names), job[0])
            payload, report = _encode_job(job)
            emit(UnitType.TENSOR, payload)
            reports.append(report)
    if stream_hash is not None:
        end = ByteWriter()
        write_stream_end(end, StreamEnd(units, model_digest(model_records(reports)), stream_hash.digest()))
        emit(UnitType.STREAM_END, end.getvalue())
    return tuple(reports)


def _encode_in_workers(jobs, workers: int):
    """``(payload, report)`` of each job in order, coded in ``workers`` spawned processes.

    Units are written in stream order, so a large tensor at the head (a word embedding: half
    of all-MiniLM-L6-v2) holds back the others' units. Jobs are submitted as workers free up
    (two per worker running or queued), whatever the head is doing, while the finished
    payloads waiting behind it stay under BUFFERED_BYTES: the workers keep busy, and memory
    holds two inputs per worker plus that budget, not the model. An input that views a mapped
    file (a safetensors model) is not sent at all: the worker maps it (:func:`_by_reference`).
    """
    with process_pool(workers) as pool:
        yield from _in_stream_order(pool, jobs, workers)


def _in_stream_order(pool, jobs, workers: int):
    """:func:`_encode_in_workers`'s scheduling on an open ``pool``."""
    import concurrent.futures

    pending: collections.deque = collections.deque()  # [future, input array or None once done]
    upcoming = iter(jobs)
    exhausted = False
    buffered = 0  # bytes of the finished payloads in pending
    while True:
        for entry in pending:
            if entry[0].done() and entry[1] is not None:  # its input was read here to be sent
                release_pages(entry[1])
                entry[1] = None
                buffered += len(entry[0].result()[0]) if entry[0].exception() is None else 0
        running = sum(1 for future, _ in pending if not future.done())
        while not exhausted and running < 2 * workers and buffered < BUFFERED_BYTES:
            job = next(upcoming, None)
            if job is None:
                exhausted = True
                break
            pending.append([pool.submit(_encode_job, _by_reference(job)), _pages_of(job[1])])
            running += 1
        if not pending:
            return
        if not pending[0][0].done():
            concurrent.futures.wait([future for future, _ in pending if not future.done()],
                                    return_when=concurrent.futures.FIRST_COMPLETED)
        while pending and pending[0][0].done():
            future, array = pending.popleft()
            if array is not None:
                release_pages(array)
            else:
                buffered -= len(future.result()[0]) if future.exception() is None else 0
            yield future.result()


def model_records(reports: Sequence[TensorReport]) -> list[tuple[str, DType, tuple[int, ...], bytes | None]]:
    """The model digest's records (spec §5.8) of the tensors in ``reports``: each tensor's
    ``(name, dtype, shape, content_digest)``, then the same under each of its aliases."""
    return [(name, r.dtype, r.shape, r.content_digest) for r in reports for name in (r.name, *r.aliases)]


def _jobs(tensors: Mapping[str, object], config: EncoderConfig, measure_error: bool, ties: dict[str, str],
          aliases_of: dict[str, list[str]], major: int):
    """One (name, array, dtype, coding, use_contexts, measure_error, aliases) per tensor but
    the aliases in ``ties``, converted lazily so that only one converted tensor is alive at a
    time in a single-process run; ``major`` is the stream's major version."""
    for name, value in tensors.items():
        _check_name(name)
        if name in ties:
            continue
        try:
            declared = getattr(value, "shape", None)
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:  # a nested torch tensor
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EncodeError(f"tensor {name!r}: cannot read its shape ({detail})") from None
        if isinstance(declared, tuple):  # before converting: a broadcast view may be huge
            _check_shape(name, tuple(int(dim) for dim in declared))
        try:
            array, dtype = to_source(name, value)  # bfloat16 stays bits until its job runs
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
            if isinstance(exc, EncodeError):
                raise
            # e.g. a ragged list, a sparse or meta torch tensor
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EncodeError(f"tensor {name!r}: cannot read its values as an array ({detail})") from None
        _check_shape(name, array.shape)
        coding = config.coding_for(name, dtype, len(array.shape))
        if coding.stream_major != major:
            coding = dataclasses.replace(coding, stream_major=major)
        aliases = None
        if major >= ALIAS_MAJOR:
            aliases = tuple(aliases_of.get(name, ()))
            for alias in aliases:
                _check_name(alias)
        yield name, array, dtype, coding, config.use_contexts, measure_error, aliases


class _SourceReference(typing.NamedTuple):
    """A job's input that a worker maps from the input file itself (:class:`~.memory.MappedSlice`)
    instead of receiving the values through the pool's pipe: the parent never reads them, and
    a job is a few hundred bytes to send whatever the tensor's size."""

    values: MappedSlice
    bfloat16: bool  # the values are a bfloat16 tensor's bits (BFloat16Array)

    def load(self, name: str) -> np.ndarray | BFloat16Array:
        try:
            values = self.values.load()
        except FileChangedError as exc:
            raise EncodeError(f"tensor {name!r}: cannot read its values again in a worker: {exc}") from None
        return BFloat16Array(values) if self.bfloat16 else values


def _by_reference(job):
    """``job`` with its input replaced by a :class:`_SourceReference` when it views a mapped
    file (a safetensors input), else ``job`` itself (its values are pickled to the worker)."""
    source = job[1]
    values = MappedSlice.of(_pages_of(source))
    if values is None or not values.file.still_names_it():  # e.g. a file deleted once opened: send the values
        return job
    return (job[0], _SourceReference(values, isinstance(source, BFloat16Array)), *job[2:])


def _encode_job(job) -> tuple[bytes, TensorReport]:
    name, source, dtype, coding, use_contexts, measure_error, aliases = job
    if isinstance(source, _SourceReference):
        source = source.load(name)
    try:
        return encode_tensor(name, source, dtype, coding, use_contexts=use_contexts, measure_error=measure_error,
                             aliases=aliases)
    finally:
        release_pages(_pages_of(source))  # whatever path read it (RAW, integer, the error measurement)


def _pages_of(source: np.ndarray | BFloat16Array) -> np.ndarray:
    """The array whose pages hold a job's input."""
    return source.bits if isinstance(source, BFloat16Array) else source


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise EncodeError(f"tensor names must be non-empty strings, got {name!r}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise EncodeError(f"tensor name {name!r} is not encodable as UTF-8") from None
    if size > DEFAULT_LIMITS.max_name_length:
        raise EncodeError(f"tensor name {name[:40]!r}... is {size} bytes, over the limit of "
                          f"{DEFAULT_LIMITS.max_name_length}")


def _check_shape(name: str, shape: tuple[int, ...]) -> None:
    if len(shape) > DEFAULT_LIMITS.max_ndim:
        raise EncodeError(f"tensor {name!r} has {len(shape)} dimensions, over the limit of {DEFAULT_LIMITS.max_ndim}")
    if any(dim >= 1 << 32 for dim in shape):
        raise EncodeError(f"tensor {name!r}: a dimension of {shape} does not fit in 32 bits")
    if int(np.prod(shape, dtype=object)) > DEFAULT_LIMITS.max_elements_per_tensor:
        raise EncodeError(f"tensor {name!r} has more than {DEFAULT_LIMITS.max_elements_per_tensor} elements")
    if int(np.prod([dim for dim in shape if dim], dtype=object)) > DEFAULT_LIMITS.max_elements_per_tensor:
        raise EncodeError(f"tensor {name!r}: an empty shape {shape} whose other dims multiply beyond "
                          f"{DEFAULT_LIMITS.max_elements_per_tensor} (decoders refuse it, spec §8)")


def encode_tensor(name: str, array: np.ndarray | BFloat16Array, dtype: DType, coding: TensorCoding, *,
                  use_contexts: bool = True, measure_error: bool = False,
                  aliases: tuple[str, ...] | None = None) -> tuple[bytes, TensorReport]:
    """The TENSOR unit payload (§5) of one tensor and its report. ``aliases``: the tensor's
    other names (format 5.0, §5.2; None in a stream of an earlier format). A bfloat16 tensor
    may come as its bits (:class:`BFloat16Array`): every pass widens a chunk at a time
    (:func:`_flat_values`), so no float32 copy of the whole tensor is made."""
    if dtype not in FLOAT_DTYPES and coding.mode != CodingMode.RAW:
        return _encode_integer_tensor(name, array, dtype, coding, use_contexts, aliases)
    original_bytes = array.size * DTYPE_ITEMSIZE[dtype]
    mode, note = coding.mode, ""
    if mode != CodingMode.RAW:
        problem = _unquantizable(array, coding, dtype)
        if problem:
            if coding.explicit_mode:
                raise EncodeError(f"tensor {name!r}: cannot code in {mode.name} mode: {problem}")
            mode, note = CodingMode.RAW, f"coded RAW: {problem}"
    shape = tuple(array.shape)
    header_size = _header_size(name, shape, coding, aliases)
    raw_size = header_size + original_bytes  # the RAW payload is built only if chosen
    raw_report = TensorReport(name, dtype, shape, CodingMode.RAW, None, original_bytes, raw_size, 0.0, None, note,
                              aliases=aliases or ())
    if mode == CodingMode.RAW:
        return _raw_payload(name, array, dtype, coding, raw_report, aliases)
    step = step_size(coding.qp, coding.qp_density)
    choice = choose_levels(array, step, mode, coding, use_contexts, dtype)
    # from here on the levels stand for the values: a memory-mapped input's pages can go (a
    # RAW fallback or the error measurement reads them from the file again)
    _release(array)
    if mode == CodingMode.UNIFIED and not coding.explicit_mode and _few_structured_blocks(choice.levels, coding.block):
        mode = CodingMode.DENSE
    body = ByteWriter()
    block_counts = _write_levels(body, choice.levels, mode, coding, use_contexts, choice)
    if header_size + len(body) >= raw_size and not coding.explicit_mode:
        # small tensors (biases, norms) can cost more coded than stored, and RAW is lossless
        return _raw_payload(name, array, dtype, coding,
                            dataclasses.replace(raw_report, note="coded RAW: no larger than quantized"), aliases)
    digest, max_error, squared_error = _check_rebuilt(choice, step, dtype, array, coding.digests, measure_error)
    writer = ByteWriter()
    write_tensor_header(writer, TensorHeader(name, dtype, shape, mode, digest, aliases=aliases))
    writer.bytes(body.getvalue())
    payload = writer.getvalue()
    return payload, TensorReport(name, dtype, shape, mode, coding.qp, original_bytes,
                                 len(payload), max_error, block_counts, note, squared_error, digest, aliases or ())


def _header_size(name: str, shape: tuple[int, ...], coding: TensorCoding, aliases: tuple[str, ...] | None) -> int:
    """Bytes of the tensor_header (§5.2) of ``name``, ``shape`` and ``aliases``."""
    alias_bytes = 0 if aliases is None else 2 + sum(2 + len(alias.encode("utf-8")) for alias in aliases)
    return (2 + len(name.encode("utf-8")) + 2 + 4 * len(shape) + 1 + (DIGEST_SIZE if coding.digests else 0)
            + alias_bytes)


def _raw_payload(name: str, array: np.ndarray, dtype: DType, coding: TensorCoding,
                 report: TensorReport, aliases: tuple[str, ...] | None) -> tuple[bytes, TensorReport]:
    """The RAW tensor payload (§5.4) of a float tensor and its report."""
    data = _raw_bytes(array, dtype)
    digest = hashlib.sha256(data).digest() if coding.digests else None
    payload = _raw_tensor(name, dtype, tuple(array.shape), data, digest, aliases)
    return payload, dataclasses.replace(report, content_digest=digest)


def _raw_tensor(name: str, dtype: DType, shape: tuple[int, ...], data: bytes, digest: bytes | None,
                aliases: tuple[str, ...] | None) -> bytes:
    """tensor_header and raw_payload (§5.2, §5.4); ``data`` are the canonical bytes (§7.3),
    so ``digest`` is their SHA-256 (None: a stream without digests)."""
    writer = ByteWriter()
    write_tensor_header(writer, TensorHeader(name, dtype, shape, CodingMode.RAW, digest, aliases=aliases))
    writer.bytes(data)
    return writer.getvalue()


@dataclasses.dataclass(frozen=True)
class LevelChoice:
    """The levels chosen for a float tensor and what the writer should code them with: the
    column offsets (None: the writer decides) and the dense plane's context classes (None:
    the writer chooses), both of which the levels were optimised against."""

    levels: np.ndarray  # signed integers of any type that holds them (see quant.level_type)
    offsets: np.ndarray | None = None
    classes: tuple[np.ndarray, np.ndarray] | None = None
    dependent: bool = False  # the dense levels are dependently quantized (§7.1.2)
    use_offsets: bool = True  # False: the writer codes no column offsets


# Elementwise stages run over this many elements at a time, so that their temporaries stay
# small beside the tensor. A multiple of DQ_SEGMENT: dependent quantization's segments never
# straddle two chunks.
_CHUNK = 1 << 20


def _chunks(size: int):
    """(start, stop) of each chunk of ``size`` elements, in order."""
    return ((start, min(start + _CHUNK, size)) for start in range(0, size, _CHUNK))


def _check_rebuilt(choice: LevelChoice, step: np.float32, dtype: DType, original: np.ndarray | BFloat16Array,
                   digest: bool, measure_error: bool) -> tuple[bytes | None, float, float]:
    """The content digest (§7.4; None unless ``digest``) of the values a decoder rebuilds from
    ``choice`` (§7.1, §7.1.2) and, with ``measure_error``, their largest absolute and summed
    squared difference from ``original`` (else 0.0; a :class:`BFloat16Array`: the values its bits
    widen to). Rebuilt a chunk at a time: the tensor is never copied whole, in float64 or at all."""
    if original.size == 0:
        return (content_digest(_flat_values(original, 0, 0).reshape(original.shape), dtype) if digest else None,
                0.0, 0.0)
    hasher = hashlib.sha256()
    largest = squared = 0.0
    levels = choice.levels.reshape(-1)
    for start, stop in _chunks(levels.size):
        part = levels[start:stop]
        if choice.dependent:
            rebuilt = dequantize_dependent(np.abs(part), (part < 0).astype(np.uint8), step, dtype)
        else:
            rebuilt = dequantize(part, step, dtype)
        if digest:
            hasher.update(canonical_bytes(rebuilt, dtype))
        if measure_error:
            difference = rebuilt.astype(np.float64)
            difference -= _flat_values(original, start, stop)
            largest = max(largest, float(np.max(np.abs(difference))))
            squared += float(np.dot(difference, difference))
            _release(original, start, stop)
    return (hasher.digest() if digest else None), largest, squared


_STRUCTURED_SHARE = 0.01  # below this share of unified and pruned blocks, a block map does not pay


def _few_structured_blocks(levels: np.ndarray, block: tuple[int, int]) -> bool:
    """Whether so few blocks came out unified or pruned (none, or by chance: a pretrained
    tensor's rounding) that DENSE mode serves better: the block map would cost about what
    those blocks save, and it would mask the dense plane, which rules out column offsets and
    costs the decoder a slower path. With no structured block at all the two modes code the
    same levels, and DENSE saves the block map, the empty unified planes and the block shape
    (about 30 bytes a tensor: 1,148 bytes on all-MiniLM-L6-v2, 58 on LeNet-5's conv1 and fc3)."""
    matrix = levels.reshape(matrix_shape(levels.shape))
    if matrix.size == 0:
        return False
    kinds = block_kinds(np.abs(matrix), *block)
    structured = int(np.count_nonzero(kinds != BlockKind.DENSE))
    return structured <= _STRUCTURED_SHARE * kinds.size


def _flat_values(source: np.ndarray | BFloat16Array, start: int, stop: int) -> np.ndarray:
    """Elements ``start:stop`` of a float tensor in C order: a view of an array, or that piece
    of a bfloat16 tensor's bits widened to float32 (exactly)."""
    if isinstance(source, BFloat16Array):
        return bfloat16_bits_to_float32(source.bits.reshape(-1)[start:stop])
    return source.reshape(-1)[start:stop]


def _release(source: np.ndarray | BFloat16Array, start: int = 0, stop: int | None = None) -> None:
    """:func:`~.memory.release_pages` of elements ``start:stop`` of ``source`` (of its bits for
    a bfloat16 tensor); by default all of them."""
    release_pages(_pages_of(source).reshape(-1)[start:stop])


def _extremes(source: np.ndarray | BFloat16Array) -> tuple[float, float]:
    """The least and the greatest element of a non-empty float tensor (both nan if any element
    is nan); a bfloat16 or float16 tensor is read a chunk at a time, widened to float32
    (exactly: numpy's float16 reductions are many times slower than float32's)."""
    if not isinstance(source, BFloat16Array) and source.dtype != np.float16:
        return float(source.min()), float(source.max())
    lows, highs = [], []
    for start, stop in _chunks(source.size):
        piece = _flat_values(source, start, stop).astype(np.float32, copy=False)
        lows.append(piece.min())
        highs.append(piece.max())
    return float(np.min(lows)), float(np.max(highs))


def on_grid(array: np.ndarray | BFloat16Array, levels: np.ndarray, step: np.float32, dtype: DType) -> bool:
    """Whether the decoder's reconstruction of ``levels`` (§7.1: a float32 product, then the
    tensor's float type ``dtype``) rebuilds ``array`` exactly: a tensor trained onto this grid
    (``snap_to_grid``), which the encoder codes losslessly rather than trading its values for
    bits. Compared in ``dtype``, so a float16 or bfloat16 value snapped by rounding the
    product is on the grid, and a float64 value that the float32 product cannot hold is not."""
    levels = levels.reshape(-1)
    for start, stop in _chunks(array.size):
        rebuilt = dequantize(levels[start:stop], step, dtype)
        if not np.array_equal(rebuilt, _flat_values(array, start, stop)):
            return False
    return True


def _nearest(array: np.ndarray | BFloat16Array, step: np.float32) -> np.ndarray:
    """:func:`quant.quantize` of a float tensor whose levels fit in 31 bits (the caller
    checked), in the narrowest type that holds them, quantized a chunk at a time."""
    low, high = _extremes(array) if array.size else (0.0, 0.0)
    levels = np.empty(array.shape, level_type(max(high, -low) / float(step) + 1))
    flat_levels = levels.reshape(-1)
    for start, stop in _chunks(array.size):
        flat_levels[start:stop] = quantize(_flat_values(array, start, stop), step, np.int32)
        _release(array, start, stop)  # see choose_levels
    return levels


def choose_levels(array: np.ndarray | BFloat16Array, step: np.float32, mode: CodingMode, coding: TensorCoding,
                  use_contexts: bool, dtype: DType | None = None) -> LevelChoice:
    """The levels (the array's shape, see :func:`_level_dtype`) of a float tensor in DENSE or
    UNIFIED mode.

    Nearest levels without RDO or when they rebuild the tensor exactly (:func:`on_grid`);
    with dependent quantization, levels from the trellis (unless more than 1 % of the blocks are
    unified at the nearest levels: a structured tensor keeps scalar levels); otherwise levels chosen by
    rate-distortion cost (rdo.py), against the column offsets that the nearest levels call
    for, if any. Offsets need every block dense, so a tensor that takes them keeps its blocks
    dense.

    Each pass over a memory-mapped ``array`` lets its pages go behind it
    (:func:`~.memory.release_pages`): the next pass reads them from the file (the page
    cache) again, and the tensor's values are never resident beside its levels.
    """
    nearest = _nearest(array, step)  # |level| < 2**31 was checked by the caller
    dtype = _float_type(array) if dtype is None else dtype
    if coding.rdo_lambda <= 0 or array.size == 0:
        return LevelChoice(nearest)
    grid = on_grid(array, nearest, step, dtype)
    if grid and not coding.dependent:  # coded losslessly, by these levels
        return LevelChoice(nearest)
    matrix = nearest.reshape(matrix_shape(nearest.shape))
    kinds = block_kinds(np.abs(matrix), *coding.block) if mode == CodingMode.UNIFIED else None
    # blocks that are unified at the nearest levels (a projected or ADMM-trained tensor) keep
    # that structure only with scalar levels: dependent quantization reads each element anew
    structured = kinds is not None and np.count_nonzero(kinds == BlockKind.UNIFIED) > _STRUCTURED_SHARE * kinds.size
    if grid:
        # coded losslessly; by dependently quantized levels when some give exactly these values (a
        # tensor decoded from such a stream: its scalar levels cost 18 % more on all-MiniLM-L6-v2)
        exact = (_exact_dependent_levels(nearest) if not structured and nearest.any()
                 else None)  # all zero: the same levels either way, and no quant_flags needed
        return LevelChoice(nearest) if exact is None else LevelChoice(exact, dependent=True, use_offsets=False)
    if coding.dependent and not structured:
        del nearest, matrix  # the trellis's memory is for its own levels
        return _choose_dependent(array, step, use_contexts, coding)
    all_dense = kinds is None or bool((kinds == BlockKind.DENSE).all())
    offsets = choose_column_offsets(matrix) if use_contexts and all_dense else None
    del nearest, matrix  # the RDO's memory is for its own levels
    # float32 suffices to compare costs; levels stay exact integers whatever the rounding
    scaled = np.empty(matrix_shape(array.shape), np.float32)
    for start, stop in _chunks(array.size):
        np.divide(_flat_values(array, start, stop), np.float64(step), out=scaled.reshape(-1)[start:stop],
                  dtype=np.float32)
        _release(array, start, stop)
    if mode == CodingMode.DENSE or offsets is not None:
        levels, classes = optimize_dense(scaled, offsets, coding.rdo_lambda, use_contexts)
    else:
        levels, classes = optimize_unified(scaled, coding.block, coding.rdo_lambda, use_contexts,
                                           choose_kinds=coding.rdo_blocks)
    del scaled
    if levels.dtype.itemsize >= 4:  # narrower types cannot exceed it
        levels = np.clip(levels, -MAX_LEVEL, MAX_LEVEL, out=levels)
    levels = levels.astype(level_type(max(int(levels.max()), -int(levels.min()))), copy=False).reshape(array.shape)
    return LevelChoice(levels, offsets, classes if use_contexts else None)


def _exact_dependent_levels(nearest: np.ndarray) -> np.ndarray | None:
    """Dependently quantized levels (§7.1.2) whose values are exactly those of the scalar
    levels ``nearest`` (the same shape and type), or None when there are none: worked out a
    chunk at a time (whole segments) by :func:`quant.exact_dependent_magnitudes`."""
    flat = nearest.reshape(-1)
    levels = np.empty_like(flat)
    for start, stop in _chunks(flat.size):
        part = flat[start:stop]
        magnitudes = exact_dependent_magnitudes(np.abs(part.astype(np.int64)))
        if magnitudes is None:
            return None
        levels[start:stop] = np.where(part < 0, -magnitudes, magnitudes)
    return levels.reshape(nearest.shape)


def _choose_dependent(array: np.ndarray | BFloat16Array, step: np.float32, use_contexts: bool,
                      coding: TensorCoding) -> LevelChoice:
    """Levels for dependent quantization (§7.1.2), every one chosen by the trellis
    (trellis.py); the block kinds then follow from them as always (§6.3). The values in
    steps are formed a chunk at a time where they are needed, never for the whole tensor."""
    size = array.size

    def scaled(start: int, stop: int) -> np.ndarray:
        # float32 suffices to compare costs; levels stay exact integers whatever the rounding
        return np.divide(_flat_values(array, start, stop), np.float64(step), dtype=np.float32)

    def magnitudes(start: int, stop: int) -> np.ndarray:
        return np.abs(scaled(start, stop))

    # magnitudes are about half the level (below 2**30 + 2: the caller checked |x| / step < 2**31)
    low, high = _extremes(array)
    dtype = level_type(max(high, -low) / float(step) / 2 + 2)
    guess = np.empty(size, dtype)  # the trellis codes about half the level
    for start, stop in _chunks(size):
        guess[start:stop] = np.rint(magnitudes(start, stop) * 0.5)
        _release(array, start, stop)
    rates = _PlaneRates(guess.reshape(matrix_shape(array.shape)), int(guess.max(initial=0)) + 1,
                        use_contexts=use_contexts)
    del guess
    levels = np.empty(size, dtype)
    for start, chosen in trellis_magnitudes(magnitudes, size, rates, coding.rdo_lambda):
        stop = start + chosen.size
        np.negative(chosen, out=chosen, where=scaled(start, stop) < 0)
        levels[start:stop] = chosen
        _release(array, start, stop)
    return LevelChoice(levels.reshape(array.shape), None, rates.classes if use_contexts else None, dependent=True,
                       use_offsets=False)


def _write_levels(writer: ByteWriter, levels: np.ndarray, mode: CodingMode, coding: TensorCoding,
                  use_contexts: bool, choice: LevelChoice | None = None) -> tuple[int, int, int] | None:
    """quant_params and the DENSE or UNIFIED payload of int32 ``levels`` (the tensor's shape);
    returns the block counts of a UNIFIED payload. ``choice`` carries the offsets and classes
    the levels were chosen with, used when the dense levels cover the whole matrix."""
    choice = choice or LevelChoice(levels)
    write_quant_params(writer, QuantParams(coding.qp, coding.qp_density, choice.dependent), coding.stream_major)
    matrix = levels.reshape(matrix_shape(levels.shape))
    if mode == CodingMode.DENSE:
        _write_dense_levels(writer, matrix, None, use_contexts, choice)
        return None
    return _write_unified(writer, matrix, coding.block, use_contexts, choice)


def _encode_integer_tensor(name: str, array: np.ndarray, dtype: DType, coding: TensorCoding,
                           use_contexts: bool, aliases: tuple[str, ...] | None) -> tuple[bytes, TensorReport]:
    """An integer tensor in DENSE or UNIFIED mode, losslessly (step 1, §7.1.1), or RAW when
    its values exceed 31 bits or RAW is no larger (unless the mode was asked for)."""
    original_bytes = array.size * DTYPE_ITEMSIZE[dtype]
    fits = array.size == 0 or (int(array.min()) >= -MAX_LEVEL and int(array.max()) <= MAX_LEVEL)
    if not fits and coding.explicit_mode:
        raise EncodeError(f"tensor {name!r}: cannot code in {coding.mode.name} mode: "
                          "its values need more than 31 bits")
    # lossless: the canonical bytes of the decoded tensor are the input's, hashed in place
    digest = content_digest(array, dtype) if coding.digests else None
    header = TensorHeader(name, dtype, tuple(array.shape), coding.mode, digest, aliases=aliases)
    raw_header = ByteWriter()
    write_tensor_header(raw_header, dataclasses.replace(header, coding_mode=CodingMode.RAW))
    raw_size = len(raw_header.getvalue()) + original_bytes  # the RAW payload is built only if chosen
    if fits:
        coding = dataclasses.replace(coding, qp=0)
        bound = max(-int(array.min()), int(array.max())) if array.size else 0
        # the narrowest level type; the values themselves where they already are one, or where
        # they are unsigned (their own magnitudes: no wider signed copy; uint64 as uint32)
        if array.dtype.kind == "u":
            levels = array.astype(np.uint32, copy=False) if array.dtype.itemsize > 4 else array
        else:
            levels = array.astype(level_type(bound), copy=False)
        mode = coding.mode
        if mode == CodingMode.UNIFIED and not coding.explicit_mode and _few_structured_blocks(levels, coding.block):
            mode = CodingMode.DENSE  # as for float tensors: no block map for (next to) no structure
        writer = ByteWriter()
        write_tensor_header(writer, dataclasses.replace(header, coding_mode=mode))
        block_counts = _write_levels(writer, levels, mode, coding, use_contexts)
        del levels
        coded = writer.getvalue()
        if coding.explicit_mode or len(coded) < raw_size:
            return coded, TensorReport(name, dtype, tuple(array.shape), mode, 0, original_bytes,
                                       len(coded), 0.0, block_counts, content_digest=digest, aliases=aliases or ())
    raw = _raw_tensor(name, dtype, tuple(array.shape), _raw_bytes(array, dtype), digest, aliases)
    note = "coded RAW: its values need more than 31 bits" if not fits else ""
    return raw, TensorReport(name, dtype, tuple(array.shape), CodingMode.RAW, None, original_bytes, len(raw),
                             0.0, None, note, content_digest=digest, aliases=aliases or ())


def _unquantizable(array: np.ndarray | BFloat16Array, coding: TensorCoding, dtype: DType) -> str:
    """Why the float tensor ``array`` of ``dtype`` cannot be quantized at ``coding``'s qp
    within the documented error, or "": values that are not finite; levels beyond 2**24,
    which the decoder's float32 reconstruction (§7.1) does not hold exactly (the error would
    grow with the level), unless the tensor is float32 or narrower and the step a power of two
    (its values are then whole numbers of steps that float32 holds); or a largest magnitude whose reconstruction, up to two steps above
    it, could overflow the tensor's type (float16 at a coarse qp rebuilt 65504 as inf)."""
    if array.size == 0:
        return ""
    low, high = _extremes(array)  # nan if any is (no full-size temporary)
    if not (np.isfinite(high) and np.isfinite(low)):
        return "it holds nan or inf"
    largest = max(high, -low)
    step = float(step_size(coding.qp, coding.qp_density))
    # a float32 (or narrower) value over a power-of-two step is a whole number of steps with its
    # low bits zero beyond 2**24, which float32 holds; float64 values and other steps are not
    exact_beyond = dtype != DType.FLOAT64 and math.frexp(step)[0] == 0.5
    if largest / step >= MAX_LEVEL:  # the format's limit (§6.4)
        return f"its largest magnitude {largest:g} needs levels beyond 2**31 at qp {coding.qp}"
    if largest / step >= MAX_EXACT_LEVEL and not exact_beyond:
        return (f"its largest magnitude {largest:g} needs levels beyond 2**24 at qp {coding.qp}, which float32 "
                "reconstruction does not hold exactly")
    if largest + 2 * step >= _LARGEST_REBUILT[dtype]:  # RDO and the trellis may go past the nearest level
        return f"its largest magnitude {largest:g} could be rebuilt beyond {dtype.name.lower()}'s range at qp {coding.qp}"
    return ""


MAX_EXACT_LEVEL = 1 << 24  # float32 holds every integer up to here, so level * step rounds once
# rebuilt values at or beyond these round to infinity in the tensor's type (float64's come
# from a float32 product, so float32's limit holds for it too)
_LARGEST_REBUILT = {DType.FLOAT16: 65520.0, DType.BFLOAT16: float(np.finfo(np.float32).max),
                    DType.FLOAT32: float(np.finfo(np.float32).max), DType.FLOAT64: float(np.finfo(np.float32).max)}


def _float_type(array: np.ndarray | BFloat16Array) -> DType:
    """The float DType of a float tensor as the encoder holds it."""
    if isinstance(array, BFloat16Array):
        return DType.BFLOAT16
    return {np.dtype(np.float16): DType.FLOAT16, np.dtype(np.float64): DType.FLOAT64}.get(array.dtype, DType.FLOAT32)


def _raw_bytes(array: np.ndarray | BFloat16Array, dtype: DType) -> bytes:
    if isinstance(array, BFloat16Array):
        return array.bits.astype("<u2").tobytes()
    if dtype == DType.BFLOAT16:
        return float32_to_bfloat16_bits(array).astype("<u2").tobytes()
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _write_dense_levels(writer: ByteWriter, matrix: np.ndarray, mask: np.ndarray | None, use_contexts: bool,
                        choice: LevelChoice) -> None:
    """offset_mode, column_offsets, dense_levels and dense_signs (§5.5, §5.6, §6.10): the
    levels of the masked positions, less their column's offset when offsets pay off (those of
    ``choice``, else chosen here). Only an unmasked plane takes offsets and given classes."""
    offsets, classes = choice.offsets, choice.classes
    if mask is not None or not use_contexts:
        offsets = classes = None
    elif not choice.use_offsets:
        offsets = None
    elif offsets is None:
        offsets = choose_column_offsets(matrix)
    elif max(int(matrix.max()), -int(matrix.min())) + int(np.abs(offsets).max()) > MAX_LEVEL:
        offsets = None  # residuals would not fit
    writer.u8(OffsetMode.COLUMN if offsets is not None else OffsetMode.NONE)
    signs = None
    if offsets is not None:
        write_level_plane(writer, encode_plane(zigzag(offsets)[None, :], None, use_contexts=False))
        packer = BitPacker()
        # a temporary (the call takes the only reference): the symbols go over it
        plane = encode_plane(_residual_magnitudes(matrix, offsets, packer), None, use_contexts=use_contexts,
                             classes=classes, scratch=True)
        signs = packer.getvalue()
    elif mask is None and matrix.dtype.kind == "u":  # their own magnitudes, the caller's: not written over
        plane = encode_plane(matrix, None, use_contexts=use_contexts, classes=classes)
    elif mask is None:  # a temporary (the call takes the only reference): the symbols go over it
        plane = encode_plane(_absolute(matrix), None, use_contexts=use_contexts, classes=classes, scratch=True)
    else:  # the masked positions' magnitudes only
        plane = encode_plane(matrix, mask, use_contexts=use_contexts, signed=True)
    write_level_plane(writer, plane)
    del plane
    if signs is None:
        signs = _packed_signs(matrix.reshape(-1) if mask is None else matrix[mask])
    write_sign_section(writer, signs)


def _residual_magnitudes(matrix: np.ndarray, offsets: np.ndarray, signs: BitPacker) -> np.ndarray:
    """The magnitudes of ``matrix - offsets[None, :]`` in the narrowest unsigned type that
    holds them, their signs added to ``signs`` as :func:`_packed_signs` packs them, a few
    rows at a time: no signed matrix of the residuals. Their bound comes from each column's
    extremes (the offsets' choice keeps it within MAX_LEVEL); the pages of a mapped input go
    behind each pass (as in :func:`_absolute`)."""
    step = max(1, _CHUNK // max(1, matrix.shape[1]))
    low = high = offsets  # no magnitude below 0
    for start in range(0, matrix.shape[0], step):
        lines = matrix[start:start + step]
        low, high = np.minimum(low, lines.min(axis=0)), np.maximum(high, lines.max(axis=0))
        release_pages(lines)
    largest = max(int((high - offsets).max()), int((offsets - low).max()))
    magnitudes = np.empty(matrix.shape, level_type(largest, np.uint8))
    for start in range(0, matrix.shape[0], step):
        residuals = matrix[start:start + step] - offsets[None, :]  # int64: a few rows
        signs.add(residuals[residuals != 0] < 0)
        np.abs(residuals, out=magnitudes[start:start + step], casting="unsafe")  # within largest
        release_pages(matrix[start:start + step])
    return magnitudes


def _absolute(levels: np.ndarray) -> np.ndarray:
    """``np.abs(levels)``, a chunk at a time when ``levels`` is contiguous, letting the pages
    of a mapped input (an integer tensor's own values) go behind it: they are read again only
    for the signs. Unsigned levels are their own magnitudes: returned as they are."""
    if levels.dtype.kind == "u":
        return levels
    if not levels.flags.c_contiguous:
        return np.abs(levels)
    magnitudes = np.empty_like(levels)
    flat, flat_magnitudes = levels.reshape(-1), magnitudes.reshape(-1)
    for start, stop in _chunks(levels.size):
        np.abs(flat[start:stop], out=flat_magnitudes[start:stop])
        release_pages(flat[start:stop])
    return magnitudes


def _packed_signs(levels: np.ndarray) -> bytes:
    """``np.packbits(levels[levels != 0] < 0)`` for flat ``levels``, a chunk at a time (the
    pages of a mapped input go behind it, as in :func:`_absolute`)."""
    packer = BitPacker()
    for start, stop in _chunks(levels.size):
        part = levels[start:stop]
        packer.add(part[part != 0] < 0)
        release_pages(part)
    return packer.getvalue()


_OFFSET_MIN_SIZE = 1 << 16  # smaller matrices gain too little to pay for the offsets
_OFFSET_SAMPLE_ROWS = 2048  # rows the medians come from
_ESTIMATE_SAMPLE = 1 << 18


_MEDIAN_RANGE = 64  # medians are searched among -64..64; weights' column medians are small


def _column_medians(sample: np.ndarray, centre: int = 0) -> np.ndarray:
    """The lower median of each column of an integer matrix, from one histogram pass a few
    rows and columns at a time; ``centre`` for a column whose median lies more than
    _MEDIAN_RANGE from ``centre``."""
    rows, cols = sample.shape
    width = 2 * _MEDIAN_RANGE + 3  # the two extra bins collect everything beyond the range
    medians = np.zeros(cols, dtype=np.int64)
    group = max(1, _CHUNK // (8 * width))  # columns whose histograms are counted together
    for first in range(0, cols, group):
        columns = slice(first, min(first + group, cols))
        count = columns.stop - first
        histogram = np.zeros(count * width, dtype=np.int64)
        column_starts = (np.arange(count, dtype=np.intp) * width + (_MEDIAN_RANGE + 1))[None, :]
        step = max(1, _CHUNK // count)
        for start in range(0, rows, step):
            bins = sample[start:start + step, columns].astype(np.intp)
            bins -= centre
            np.clip(bins, -_MEDIAN_RANGE - 1, _MEDIAN_RANGE + 1, out=bins)
            bins += column_starts
            histogram += np.bincount(bins.ravel(), minlength=histogram.size)
        below = np.cumsum(histogram.reshape(count, width), axis=1)
        medians[columns] = np.argmax(below > (rows - 1) // 2, axis=1) - (_MEDIAN_RANGE + 1)
    medians[np.abs(medians) > _MEDIAN_RANGE] = 0
    return medians + centre


def choose_column_offsets(matrix: np.ndarray) -> np.ndarray | None:
    """Per-column offsets to subtract from the levels (the median of each column, from a
    sample of rows; searched near 0, or for unsigned levels near their median), or None when
    they would not make the plane smaller.

    Weights often have a per-input mean (embeddings do); removing it makes the magnitudes
    smaller and the signs balanced. Sizes are estimated on the sample with order-0 entropies.
    """
    rows, cols = matrix.shape
    if matrix.size < _OFFSET_MIN_SIZE or rows < 64:
        return None
    sample = matrix[::max(1, rows // _OFFSET_SAMPLE_ROWS)]  # a view: read a few rows at a time
    # unsigned values (a quantized tensor's, around its zero point) have column medians near
    # their overall one, not near 0
    unsigned = matrix.dtype.kind == "u"
    centre = int(np.median(sample[::max(1, sample.shape[0] // 64)])) if unsigned else 0
    offsets = _column_medians(sample, centre)
    if not offsets.any():
        return None
    largest = max(int(matrix.max()), -int(matrix.min()))
    if largest + int(np.abs(offsets).max()) > MAX_LEVEL:
        return None  # residuals might not fit: rare (huge levels), so not worth a closer look
    sample = sample[::max(1, sample.size // _ESTIMATE_SAMPLE)].astype(np.int64)  # enough to tell the sizes apart
    residuals = sample - offsets[None, :]

    def estimated_bits(levels: np.ndarray) -> float:
        magnitudes = np.abs(levels).ravel()
        raw = 0.0
        if unsigned:  # large values (all of a wide unsigned tensor's, around its zero point):
            # about their bit length, less the top bits a binarization symbol carries (§6.4);
            # rare in weights, where clipping them is rough but fine
            large = magnitudes >= 1 << 12
            raw = float(np.log2(magnitudes[large]).sum()) - 2.0 * np.count_nonzero(large)
        return entropy_bits(np.bincount(np.minimum(magnitudes, 1 << 12))) + raw + float(np.count_nonzero(levels))

    scale = matrix.size / sample.size
    codes = zigzag(offsets)
    side = entropy_bits(np.bincount(codes)) + 8.0 * np.unique(codes).size + 64.0
    gain = (estimated_bits(sample) - estimated_bits(residuals)) * scale - side
    return offsets if gain > 0 else None


def _write_unified(writer: ByteWriter, matrix: np.ndarray, block: tuple[int, int],
                   use_contexts: bool, choice: LevelChoice) -> tuple[int, int, int]:
    """§5.6 unified_payload: block map, unified magnitudes, their signs, dense levels, their signs."""
    block_rows, block_cols = block
    rows, cols = matrix.shape
    writer.u8(block_rows)
    writer.u8(block_cols)
    magnitudes = _absolute(matrix)
    kinds = block_kinds(magnitudes, block_rows, block_cols)
    write_level_plane(writer, encode_plane(kinds, None, use_contexts=use_contexts))
    unified_blocks = kinds == BlockKind.UNIFIED
    grid_rows, grid_cols = grid_shape(rows, cols, block_rows, block_cols)
    block_magnitude = np.zeros((grid_rows, grid_cols), dtype=magnitudes.dtype)
    if rows and cols:
        # any element of a unified block carries its magnitude: take the block's top-left one
        block_magnitude[unified_blocks] = magnitudes[::block_rows, ::block_cols][unified_blocks]
    write_level_plane(writer, encode_plane(block_magnitude - 1, unified_blocks, use_contexts=use_contexts))
    del magnitudes
    # per-element kinds only where some block is not dense (not for a typical weight matrix)
    in_dense, unified_negative = None, np.zeros(0, dtype=bool)
    if not bool((kinds == BlockKind.DENSE).all()):
        element_kinds = expand_blocks(kinds, block_rows, block_cols, rows, cols)
        if unified_blocks.any():
            unified_negative = matrix[element_kinds == BlockKind.UNIFIED] < 0
        in_dense = element_kinds == BlockKind.DENSE
        del element_kinds
    write_sign_section(writer, unified_negative)
    del unified_negative
    _write_dense_levels(writer, matrix, in_dense, use_contexts, choice)
    counts = np.bincount(kinds.ravel(), minlength=len(BlockKind))
    return int(counts[BlockKind.PRUNED]), int(counts[BlockKind.UNIFIED]), int(counts[BlockKind.DENSE])
