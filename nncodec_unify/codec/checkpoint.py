"""Reading and writing weight files: ``.pt``/``.pth`` state_dicts, ``.safetensors`` and streams.

Loading never unpickles code: ``torch.load`` always runs with ``weights_only=True`` and there
is no unsafe fallback. Every file is written to a temporary file in the target's folder and
renamed into place, so a failed or interrupted run leaves no partial file behind and never
clobbers an existing one unless ``overwrite`` was asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import math
import os
import re
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from . import termination
from .decoder import DecodedModel, torch_tensors
from .errors import BitstreamError, EncodeError, NncodecError, OutputExistsError
from .format import DTYPE_ITEMSIZE, DType
from .memory import FileMapping, map_file, mapped_regions
from .syntax import AttachedFile, check_attachment_path
from .safetensors_io import (
    METADATA,
    SafetensorsError,
    UnsupportedDtypeError,
    read_safetensors,
    tensor_pieces,
    write_safetensors,
    write_safetensors_header,
)
from .tensors import BFloat16Array
from .workers import OutputLayout, WrittenArray, check_workers

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "weights")
SAFETENSORS_RESERVED = METADATA


class CheckpointError(NncodecError, ValueError):
    """A weight file that cannot be read or written as asked."""


class MissingDependencyError(CheckpointError):
    """An optional package (torch) that this file type needs is not installed."""


def checkpoint_format(path: str | os.PathLike) -> str:
    """'pt' (.pt, .pth, .bin), 'safetensors' or 'npz' by the file's extension;
    CheckpointError otherwise (.npz is written, never read, by this package)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".pt", ".pth", ".bin"):
        return "pt"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".npz":
        return "npz"
    raise CheckpointError(f"{path}: unknown weight file extension {suffix!r} (use .pt, .pth, .safetensors or, "
                          "for output, .npz; a path ending in / for a model folder)")


def input_missing(path: str | os.PathLike, what: str = "file") -> OSError:
    """The error for an input ``path`` that does not exist as ``what``: "no such {what}" when
    nothing is there, the system's own reason when the name cannot be looked up (a loop of
    links, a name too long, a folder that cannot be searched): "no such file" would hide it."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return FileNotFoundError(f"{path}: no such {what}")
    except OSError as exc:
        return type(exc)(exc.errno, exc.strerror, str(path))
    return FileNotFoundError(f"{path}: no such {what}")


def load_tensors(path: str | os.PathLike) -> Mapping[str, object]:
    """Tensors of a ``.pt``/``.pth`` state_dict (or a checkpoint dict holding one), a
    ``.safetensors`` file or a Hugging Face model folder (:func:`load_folder`), by name.
    Values are torch tensors when torch loaded them; safetensors tensors are read lazily."""
    path = Path(path)
    if path.is_dir():
        return load_folder(path)
    if not path.exists():  # before the extension: a mistyped folder name has none
        raise input_missing(path, "file or folder")
    kind = checkpoint_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a regular file")
    if kind == "safetensors":
        return _load_safetensors(path)
    return _load_torch(path)


SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_INDEX = "pytorch_model.bin.index.json"


def load_folder(folder: str | os.PathLike) -> Mapping[str, object]:
    """The weights of a Hugging Face model folder, from the files ``transformers`` loads, in
    its order of preference (:func:`weight_files`): ``model.safetensors``, or the shards
    named by ``model.safetensors.index.json`` (every tensor they hold, shard by shard), or
    (read with ``weights_only``) ``pytorch_model.bin`` or its shards. Safetensors shards are
    read a tensor at a time."""
    layout = _weight_layout(Path(folder))
    load = _load_safetensors if layout.safetensors else _load_torch
    if layout.weight_map is None:
        return load(layout.files[0])
    sharded = _Shards({file.relative_to(layout.folder).as_posix(): load(file) for file in layout.files},
                      layout.weight_map)
    return sharded if layout.safetensors else {name: sharded[name] for name in sharded}


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files of a Hugging Face model folder that ``transformers``'
    ``from_pretrained`` reads, in the order it prefers them: ``model.safetensors``; else the
    shards ``model.safetensors.index.json`` names; else ``pytorch_model.bin``; else the
    shards ``pytorch_model.bin.index.json`` names. Raises CheckpointError for a folder with
    none of them, or an index that names a file not in the folder."""
    return list(_weight_layout(Path(folder)).files)


@dataclasses.dataclass(frozen=True)
class _WeightLayout:
    """How a model folder stores its weights: the files, whether they are safetensors, and
    the shard index's weight_map (None for a single file)."""

    folder: Path
    files: tuple[Path, ...]
    safetensors: bool
    weight_map: dict[str, str] | None


def _weight_layout(folder: Path) -> _WeightLayout:
    """:func:`weight_files`' choice, with what loading needs to know about it."""
    for single, index, safetensors in (("model.safetensors", SAFETENSORS_INDEX, True),
                                       ("pytorch_model.bin", TORCH_INDEX, False)):
        if (folder / single).is_file():
            return _WeightLayout(folder, (folder / single,), safetensors, None)
        if (folder / index).is_file():
            weight_map = _shards_of(folder / index)
            files = tuple(folder / shard for shard in dict.fromkeys(weight_map.values()))
            return _WeightLayout(folder, files, safetensors, weight_map)
    raise CheckpointError(f"{folder}: no model weights in this folder (model.safetensors, sharded "
                          f"model-*.safetensors with {SAFETENSORS_INDEX}, pytorch_model.bin, or its shards "
                          f"with {TORCH_INDEX})")


MAX_ATTACHMENT_BYTES = 16 << 20  # a model folder's config and tokenizer files are far smaller
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")


def folder_attachments(folder: str | os.PathLike, *, leave_out: Iterable[str | os.PathLike] = ()
                       ) -> tuple[list[AttachedFile], list[str]]:
    """The files of a model folder to carry beside its weights (config, tokenizer, README):
    every regular, non-hidden file in it or its subfolders that is not a weight file, a
    shard index or a stream (``.nnu``: an earlier encoding's output, which would otherwise be
    carried inside the next), up to 16 MiB each; symbolic links to files (a Hugging Face
    cache) are read, linked folders not entered. ``leave_out`` names further files not to
    carry (the encoder's own outputs: its report). Returns the attachments, sorted by path,
    and notes on the files left out."""
    folder = Path(folder)
    attached, notes = [], []
    excluded = [Path(path) for path in leave_out]
    try:
        read = {path.relative_to(folder).as_posix() for path in weight_files(folder)}
    except CheckpointError:
        read = set()
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith(".") and not (Path(root) / f).is_symlink())
        for name in sorted(names):
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if name.startswith(".") or name.endswith(".index.json"):
                continue
            if name.endswith(_WEIGHT_SUFFIXES):
                if relative not in read:  # e.g. an adapter, an ONNX export, unused shards
                    notes.append(f"{relative}: neither encoded nor attached (a weight file from_pretrained does "
                                 "not read)")
                continue
            if not path.is_file():
                continue
            if name.endswith(".nnu") or any(_same_path(path, other) for other in excluded):
                notes.append(f"{relative}: not attached (a stream or report of the encoder)")
                continue
            size = path.stat().st_size
            problem = check_attachment_path(relative)
            if size > MAX_ATTACHMENT_BYTES or problem:
                notes.append(f"{relative}: not attached ({problem or f'{size:,} bytes, over {MAX_ATTACHMENT_BYTES:,}'})")
                continue
            attached.append(AttachedFile(relative, path.read_bytes()))
    return attached, notes


def _shards_of(index: Path) -> dict[str, str]:
    """The ``weight_map`` of a sharded checkpoint's index: tensor name -> shard file name."""
    import json

    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index}: not a readable shard index ({_first_line(exc)})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: weight_map must map tensor names to shard file names")
    for shard in set(weight_map.values()):
        path = index.parent / shard
        inside = not Path(shard).is_absolute() and ".." not in Path(shard).parts and "\\" not in shard
        if not inside or not path.is_file():  # a subfolder is fine, as for transformers; outside it is not
            raise CheckpointError(f"{index}: shard {shard!r} is not a file in {index.parent}")
    return weight_map


class _Shards(Mapping):
    """Tensors spread over shards, as ``transformers`` loads them: every tensor
    of every shard, shard by shard, each read from its own shard on lookup. Built from
    ``{shard file name: its SafetensorsFile}`` and the index's ``weight_map``; a name the
    index places in a shard that lacks it, or a name in two shards, is an error when the
    folder is opened, not halfway through an encode."""

    def __init__(self, shards: dict[str, Mapping], weight_map: Mapping[str, str]):
        self._files: dict[str, Mapping] = {}
        seen_in: dict[str, str] = {}
        for shard, tensors in shards.items():
            for name in tensors:
                if name in seen_in:
                    raise CheckpointError(f"tensor {name!r} is in two shards ({seen_in[name]!r} and {shard!r})")
                seen_in[name] = shard
                self._files[name] = tensors
        for name, shard in weight_map.items():
            if name not in shards[Path(shard).as_posix()]:  # "./a.safetensors" is "a.safetensors"
                raise CheckpointError(f"tensor {name!r}: the index names a shard that does not hold it ({shard!r})")

    def __getitem__(self, name: str) -> object:
        return self._files[name][name]

    def __iter__(self):
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def _load_safetensors(path: Path) -> dict[str, object]:
    """Memory-mapped numpy arrays (bfloat16 as BFloat16Array): no torch (safetensors_io.py)."""
    try:
        return read_safetensors(path)
    except UnsupportedDtypeError as exc:  # a dtype we cannot code: "cannot encode", as for a .pt input
        raise EncodeError(str(exc)) from None
    except SafetensorsError as exc:
        raise CheckpointError(f"not a readable safetensors file: {exc}") from None


def load_checkpoint(path: str | os.PathLike, *, key: str | None = None,
                    strip_prefixes: tuple[str, ...] = ()) -> tuple[Mapping[str, object], list[str]]:
    """:func:`load_tensors` with the options a training checkpoint needs, and notes on what
    was left out. ``key`` picks the state_dict inside a ``.pt`` checkpoint (``"ema"``,
    ``"model"``); ``strip_prefixes`` removes leading prefixes from names (``"module."`` of
    DDP, ``"_orig_mod."`` of ``torch.compile``), the first that matches."""
    path = Path(path)
    notes: list[str] = []
    if key is not None:
        if path.is_dir() or checkpoint_format(path) != "pt":
            raise CheckpointError(f"{path}: --key picks an entry of a .pt checkpoint; this is not one")
        loaded = _torch_object(path)
        if not isinstance(loaded, Mapping) or key not in loaded:
            keys = ", ".join(map(str, loaded)) if isinstance(loaded, Mapping) else "none"
            raise CheckpointError(f"{path}: no entry {key!r} in the checkpoint (its keys: {keys})")
        tensors = _state_dict_of(loaded[key], path)
        notes += [f"left out checkpoint entry {k!r}" for k in loaded if k != key]
    else:
        tensors = load_tensors(path)
        if not path.is_dir() and checkpoint_format(path) == "pt":
            notes += _left_out(path)
    if strip_prefixes:
        renamed: dict[str, object] = {}
        for name in tensors:
            short = next((name[len(p):] for p in strip_prefixes if name.startswith(p)), name)
            if short in renamed:
                raise CheckpointError(f"{path}: stripping prefixes gives two tensors named {short!r}")
            renamed[short] = name
        tensors = _Renamed(tensors, renamed)
    return tensors, notes


class _Renamed(Mapping):
    """``tensors`` under new names (``{new: old}``), looked up lazily."""

    def __init__(self, tensors: Mapping[str, object], names: dict[str, str]):
        self._tensors, self._names = tensors, names

    def __getitem__(self, name: str) -> object:
        return self._tensors[self._names[name]]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _left_out(path: Path) -> list[str]:
    """Notes on a checkpoint dict's entries other than the state_dict taken (optimizer, epoch)."""
    loaded = _torch_object(path)
    if not isinstance(loaded, Mapping) or all(_is_tensor(v) for v in loaded.values()):
        return []
    taken = next((k for k in STATE_DICT_KEYS if isinstance(loaded.get(k), Mapping)), None)
    return [f"left out checkpoint entry {k!r}" for k in loaded if k != taken]


def _load_torch(path: Path) -> dict[str, object]:
    return _file_views(_state_dict_of(_torch_object(path), path), path)


# torch dtypes whose bytes numpy reads as they are (bfloat16 as its bit patterns)
_NUMPY_OF_TORCH = {"float32": "<f4", "float16": "<f2", "float64": "<f8", "bfloat16": "<u2", "int8": "i1",
                   "uint8": "u1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "bool": "?"}


def _file_views(state: dict[str, object], path: Path) -> dict[str, object]:
    """``state`` with each tensor that ``torch.load`` mapped from ``path`` replaced by a
    read-only numpy view of the same bytes in a :class:`~.memory.FileMapping` of the file
    (bfloat16: :class:`BFloat16Array` of its bits), as a safetensors input's tensors are: the
    encoder then lets each tensor's pages go behind every pass, and workers map the values
    themselves instead of receiving them through a pipe. Ties stay ties (one storage, one
    view). A tensor stays as torch loaded it where its place in the file is not known (no
    ``/proc/self/maps``: not Linux; a legacy file read whole), or its strides are not
    exactly row-major (a view would tie it to another tensor that torch keeps apart), or
    the file's byte order is not this machine's (torch swaps them in its own copy), or its
    bytes in the file are not its values (checked on its first and last elements)."""
    regions = mapped_regions(path)
    if not regions or _archive_byteorder(path) != sys.byteorder:  # torch swaps the bytes in its own copy
        return state
    try:
        with open(path, "rb") as file:
            mapping = map_file(file)
    except (OSError, ValueError):
        return state
    return {name: _file_view(value, regions, mapping) for name, value in state.items()}


def _archive_byteorder(path: Path) -> str:
    """The byte order a zip-format ``.pt`` file stores its tensors in: its ``byteorder``
    record, or ``"little"`` where it has none (as torch.load assumes)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            record = next((name for name in archive.namelist() if name.endswith("/byteorder")), None)
            return archive.read(record).decode("ascii").strip() if record else "little"
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, ValueError):
        return ""


def _row_major_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _file_view(value: object, regions: list[tuple[int, int, int]], mapping: FileMapping) -> object:
    """:func:`_file_views` for one value."""
    dtype = _NUMPY_OF_TORCH.get(str(getattr(value, "dtype", "")).removeprefix("torch."))
    if (dtype is None or isinstance(value, np.ndarray) or value.device.type != "cpu" or value.numel() == 0
            or tuple(value.stride()) != _row_major_strides(tuple(value.shape))):
        return value  # (strides exactly row-major: a view keeps the tensor's identity for ties)
    value = value.detach()
    address, size = value.data_ptr(), value.numel() * value.element_size()
    offset = next((offset + address - start for start, end, offset in regions
                   if start <= address and address + size <= end), None)
    if offset is None or offset + size > len(mapping):
        return value
    view = np.frombuffer(mapping, dtype=dtype, count=value.numel(), offset=offset).reshape(tuple(value.shape))
    flat = value.reshape(-1)
    if dtype == "<u2" and str(value.dtype) == "torch.bfloat16":
        import torch  # only reached with a torch tensor in hand

        flat = flat.view(torch.int16)
    ends = np.concatenate([flat[:16].numpy().reshape(-1), flat[-16:].numpy().reshape(-1)]).view(np.uint8)
    if not np.array_equal(ends, np.concatenate([view.reshape(-1)[:16], view.reshape(-1)[-16:]]).view(np.uint8)):
        return value
    return BFloat16Array(view) if str(value.dtype) == "torch.bfloat16" else view


def _torch_object(path: Path) -> object:
    """What a .pt file holds, loaded without unpickling code; clear errors for files that are
    empty or not in a format torch writes."""
    with open(path, "rb") as file:
        head = file.read(4)
    if not head:
        raise CheckpointError(f"{path}: the file is empty")
    if not head.startswith(b"PK\x03\x04") and head[0] != 0x80:
        raise CheckpointError(f"{path}: not a torch file (neither the zip archive torch.save writes nor a "
                              "legacy pickle)")
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(f"{path}: reading .pt files needs torch (pip install torch)") from None
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says it all
            warnings.simplefilter("ignore")
            loaded = _torch_load(torch, path)
    except Exception as exc:  # weights_only refuses pickled code with UnpicklingError
        message = _first_line(exc)
        if "weights_only" in message or "Unsupported global" in message or "Unpickl" in type(exc).__name__:
            raise CheckpointError(
                f"{path}: refused to unpickle code (the file holds a pickled object, e.g. a whole "
                "nn.Module); save the weights instead: torch.save(model.state_dict(), path)") from None
        raise CheckpointError(f"{path}: not a readable torch file ({message})") from None
    return loaded


def _torch_load(torch, path: Path):
    """``torch.load`` without unpickling code, memory-mapped (tensors are read as they are
    coded, not all at once) when the file is in the zip format that allows it."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):  # legacy (non-zip) files cannot be mapped: read them whole
            raise
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _state_dict_of(loaded: object, path: Path) -> dict[str, object]:
    if isinstance(loaded, Mapping):
        if loaded and all(_is_tensor(v) for v in loaded.values()):
            return {str(k): v for k, v in loaded.items()}
        for key in STATE_DICT_KEYS:
            inner = loaded.get(key)
            if isinstance(inner, Mapping) and inner and all(_is_tensor(v) for v in inner.values()):
                return {str(k): v for k, v in inner.items()}
        if not loaded:
            return {}
    raise CheckpointError(
        f"{path}: holds no state_dict (expected a dict of tensors, or a checkpoint dict with one of "
        f"the keys {', '.join(STATE_DICT_KEYS)})")


def _is_tensor(value: object) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "dtype") or isinstance(value, np.ndarray)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def save_decoded(path: str | os.PathLike, model: DecodedModel, *, overwrite: bool = False) -> None:
    """Write decoded tensors as ``.pt``, ``.safetensors`` or ``.npz`` (by extension) with
    their names, shapes and stored dtypes (bfloat16 restored; in ``.npz``, which numpy writes
    and has no bfloat16, as exact float32 values), atomically."""
    path = Path(path)
    kind = checkpoint_format(path)
    if kind == "safetensors" and any(t.name == SAFETENSORS_RESERVED for t in model.tensors):
        # safetensors writes such a tensor into its header's metadata slot: a corrupt file
        raise CheckpointError(f"{path}: a tensor is named {SAFETENSORS_RESERVED!r}, which safetensors "
                              "reserves; write a .pt file instead")
    if kind == "safetensors":  # numpy alone: shapes (0-dim too) and bfloat16 kept exactly
        with atomic_output(path, overwrite=overwrite) as temporary, open(temporary, "wb") as file:
            write_safetensors(file, ((t.name, t.array, t.dtype) for t in model.tensors))
        return
    if kind == "npz":  # numpy has no bfloat16: such tensors are stored as their exact float32 values
        with atomic_output(path, overwrite=overwrite) as temporary, open(temporary, "wb") as file:
            np.savez(file, **{t.name: t.array for t in model.tensors})
        return
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(f"{path}: writing .pt files needs torch (write .safetensors instead)") from None
    with atomic_output(path, overwrite=overwrite) as temporary:
        _torch_save(torch, model, temporary)


def _torch_save(torch, model: DecodedModel, path: str) -> None:
    """``torch.save`` of ``model``'s tensors (ties kept) into ``path``, through a file object:
    the archive's folder is then "archive" rather than the (temporary) file's random name, so
    the same model gives the same file."""
    with open(path, "wb") as file:
        recorder = _WriteErrors(file)
        try:
            torch.save(torch_tensors(model.tensors), recorder)
        except RuntimeError:
            if recorder.error is not None:  # torch says "unexpected pos ..."; the write said why
                raise recorder.error from None
            raise


class _WriteErrors:
    """A binary file whose ``write`` remembers the OSError it raised: ``torch.save`` turns it
    into a RuntimeError that does not say why (a full disk reads "unexpected pos 1728 vs
    1622")."""

    def __init__(self, file):
        self._file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(Path(path), overwrite=overwrite) as temporary, open(temporary, "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_output(path: Path, *, overwrite: bool) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    Raises :class:`OutputExistsError` (a FileExistsError) if ``path`` exists and ``overwrite`` is false. On any failure the
    temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such directory")
    try:  # the name cut short: a name near the system's limit still leaves room for the suffixes
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".partial", dir=path.parent)
    except OSError as exc:  # name the output asked for, not the temporary file's random name
        raise type(exc)(exc.errno, f"cannot write there ({exc.strerror})", str(path)) from None
    os.close(descriptor)
    try:
        yield temporary
        termination.check()  # never complete an output after SIGTERM, even if its exception was lost
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, _output_mode(path))
        if overwrite:
            os.replace(temporary, path)
        else:
            _rename_no_clobber(temporary, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if exc.filename is None and exc.errno in _FULL:  # a full disk: say which output it was
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # write errors that name no file when they happen


def _output_mode(path: Path) -> int:
    """The permissions of a new output: those of the regular file it replaces (``-f`` keeps a
    private file private), else what ``open()`` would give (mkstemp makes 0600)."""
    with contextlib.suppress(OSError):
        if path.is_file() and not path.is_symlink():
            return stat.S_IMODE(path.stat().st_mode)
    return 0o666 & ~_umask()


def _rename_no_clobber(temporary: str, path: Path) -> None:
    """Move ``temporary`` to ``path`` unless ``path`` exists, atomically where hard links work:
    a file created at ``path`` since the caller's check is never replaced."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise OutputExistsError(path) from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise OutputExistsError(path) from None
        os.replace(temporary, path)
        return
    os.unlink(temporary)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@dataclasses.dataclass(frozen=True)
class EncodedFile:
    """What :func:`encode_file` wrote: the stream file, its size in bytes and a
    :class:`~nncodec_unify.codec.encoder.TensorReport` per tensor coded. ``data`` reads the whole
    stream back from the file on each access, for code written against ``EncodeResult``."""

    path: Path
    stream_bytes: int
    reports: tuple

    @property
    def data(self) -> bytes:
        """The stream's bytes, read from ``path`` (the whole stream in memory)."""
        return self.path.read_bytes()


def encode_file(source: str | os.PathLike, target: str | os.PathLike, *, config=None,
                overwrite: bool = False, progress=None, workers: int = 1) -> EncodedFile:
    """Encode the weight file or model folder ``source`` into the stream file ``target``
    (a folder's other files attached, §5.7) as ``nncodec encode`` does: written unit by unit,
    atomically, so memory holds the tensors being coded, never the stream or the model.
    ``progress(done, total, name)`` and ``workers`` as for
    :func:`~nncodec_unify.codec.encoder.encode_with_report` (workers are spawned processes: a
    script must start them under ``if __name__ == "__main__":``). Each report carries the
    tensor's maximum quantization error. Returns an :class:`EncodedFile`."""
    if _same_path(source, target):
        raise CheckpointError(f"{target}: input and output are the same file")
    if is_folder_target(target):
        raise CheckpointError(f"{target}: the stream is one file; give its path, not a folder's")
    if Path(target).exists() and not overwrite:
        raise OutputExistsError(target)
    from .encoder import encode_to_file

    attachments = folder_attachments(source)[0] if Path(source).is_dir() else []
    with atomic_output(Path(target), overwrite=overwrite) as temporary, open(temporary, "wb") as file:
        reports = encode_to_file(load_tensors(source), file, config=config, measure_error=True, progress=progress,
                                 workers=workers, attachments=attachments)
        size = file.tell()
    return EncodedFile(Path(target), size, reports)


def decode_file(source: str | os.PathLike, target: str | os.PathLike, *, limits=None,
                overwrite: bool = False, verify: bool = True, workers: int = 1) -> DecodedModel:
    """Decode the stream file ``source`` into ``target``: .pt/.pth, .safetensors, .npz or a model
    folder (a path ending in a separator, or an existing folder: :func:`decode_to_folder`),
    and return the decoded model, which is then held in memory whole; :func:`decode_to_file`
    writes tensor by tensor and returns counts. ``verify=False`` skips the content digests'
    comparison, ``workers`` > 1 decodes in that many processes (see :func:`decode`)."""
    check_workers(workers)
    from .decoder import decode_tensors

    _check_decode_paths(source, target)
    with _naming_the_stream(source):
        if is_folder_target(target):
            data = read_stream(source)
            model = decode_tensors(data, limits=limits, verify=verify, workers=workers)
            decode_to_folder(data, target, limits=limits, overwrite=overwrite, model=model, source=source)
            return model
        checkpoint_format(target)
        if Path(target).exists() and not overwrite:
            raise OutputExistsError(target)
        model = decode_tensors(read_stream(source), limits=limits, verify=verify, workers=workers)
        save_decoded(target, model, overwrite=overwrite)
        return model


@contextlib.contextmanager
def _naming_the_stream(source: str | os.PathLike) -> Iterator[None]:
    """A :class:`BitstreamError` raised inside names the stream file ``source`` (the library's
    file functions; the CLI names it itself)."""
    try:
        yield
    except BitstreamError as exc:
        if exc.source is not None:
            raise
        raise exc.in_file(source) from None


DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' default max_shard_size, "5GB"


@dataclasses.dataclass(frozen=True)
class DecodedFiles:
    """What decoding into files wrote: the tensors and parameters (every name counted, an
    alias's too), the attached files written (into a model folder), and the paths of those a
    weight file had no place for."""

    tensor_count: int
    parameter_count: int
    attached_written: int = 0  # attached files written (into a model folder)
    attached_left_out: tuple[str, ...] = ()  # the paths of those a weight file had no place for
    notes: tuple[str, ...] = ()  # what the output could not keep as the stream has it


def decode_to_file(source: str | os.PathLike, target: str | os.PathLike, *, limits=None, progress=None,
                   overwrite: bool = False, verify: bool = True, workers: int = 1,
                   max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> DecodedFiles:
    """Decode the stream file ``source`` into ``target`` as ``nncodec decode`` does: tensor
    by tensor, so memory holds the stream's pages in use and the tensors being decoded, never
    the model (unlike :func:`decode_file`, which returns it). ``target`` is a model folder (a
    path ending in a separator, or an existing folder), ``.safetensors``, ``.pt`` or
    ``.npz`` (which numpy writes at once, holding the model); atomic like every output.
    ``progress(done, total, name)``, ``verify``, ``workers`` and ``limits`` as for
    :func:`~.decoder.decode_tensors`."""
    _check_decode_paths(source, target)
    with _naming_the_stream(source):
        return decode_into(read_stream(source), target, limits=limits, progress=progress, overwrite=overwrite,
                           verify=verify, workers=workers, max_shard_bytes=max_shard_bytes, source=source)


def _check_decode_paths(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """A stream file to decode that is a regular file and not the output."""
    if _same_path(source, target):
        raise CheckpointError(f"{target}: input and output are the same file")
    if not Path(source).exists():
        raise input_missing(source)
    if not Path(source).is_file():  # not a FIFO or /dev/zero, which would never end
        raise FileNotFoundError(f"{source}: not a regular file")


def decode_into(data, target: str | os.PathLike, *, limits=None, progress=None, overwrite: bool = False,
                verify: bool = True, workers: int = 1, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                source: str | os.PathLike | None = None) -> DecodedFiles:
    """:func:`decode_to_file` for the stream ``data`` (bytes, or a mapping of the stream file
    ``source``, which a folder output must not write over)."""
    check_workers(workers)
    if is_folder_target(target):
        count, parameters, written = decode_to_folder(data, target, limits=limits, progress=progress,
                                                      overwrite=overwrite, max_shard_bytes=max_shard_bytes,
                                                      verify=verify, workers=workers, source=source)
        return DecodedFiles(count, parameters, written)
    kind = checkpoint_format(target)
    if Path(target).exists() and not overwrite:
        raise OutputExistsError(target)
    files: list[AttachedFile] = []
    options = dict(limits=limits, progress=progress, overwrite=overwrite, verify=verify, workers=workers, files=files)
    if kind == "safetensors":
        count, parameters = decode_to_safetensors(data, target, **options)
    elif kind == "pt":  # torch.save's archive, then its storages
        count, parameters = decode_to_pt(data, target, **options)
    else:  # .npz: numpy writes the whole state_dict at once
        from .decoder import decode_tensors

        model = decode_tensors(data, limits=limits, progress=progress, verify=verify, workers=workers)
        save_decoded(target, model, overwrite=overwrite)
        widened = sum(t.dtype == DType.BFLOAT16 for t in model.tensors)
        notes = (f"{widened} bfloat16 tensor(s) written as their exact float32 values (numpy has no bfloat16; "
                 ".safetensors and .pt keep them bfloat16)",) if widened else ()
        return DecodedFiles(len(model.tensors), sum(t.array.size for t in model.tensors), 0,
                            tuple(f.path for f in model.files), notes)
    return DecodedFiles(count, parameters, 0, tuple(f.path for f in files))


MAP_STREAMS_FROM = 32 << 20  # larger stream files are memory-mapped, not read into memory


def read_stream(path: str | os.PathLike) -> bytes | FileMapping:
    """The stream file at ``path`` for the decoder: its bytes, or for a file of
    MAP_STREAMS_FROM bytes or more a read-only mapping of it, whose pages the decoder lets go
    unit by unit (a 7B-parameter model's stream is gigabytes). A mapped file that another
    program truncates while it is being decoded ends the process with SIGBUS, as for the
    encoder's mapped inputs."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size >= MAP_STREAMS_FROM:
            return map_file(file)
        return file.read()


def decode_to_safetensors(data: bytes, target: str | os.PathLike, *, limits=None, progress=None,
                          overwrite: bool = False, verify: bool = True, workers: int = 1,
                          files: list[AttachedFile] | None = None) -> tuple[int, int]:
    """Decode the stream ``data`` into the safetensors file ``target`` one tensor at a time:
    the header comes from the tensor headers (:func:`describe`), then each tensor is decoded,
    written and let go, so memory holds the stream and one tensor. Atomic like every output.
    Returns the number of tensors and of parameters. ``verify`` and ``workers`` as for
    :func:`decode`; the stream's attached files, which a weight file has no place for, are
    appended to ``files`` when it is given."""
    infos = _safetensors_infos(data, limits, files)
    with atomic_output(Path(target), overwrite=overwrite) as temporary:
        return len(infos), _decode_into_files(data, [(temporary, infos)], limits, progress, verify, workers)


def decode_to_pt(data: bytes, target: str | os.PathLike, *, limits=None, progress=None,
                 overwrite: bool = False, verify: bool = True, workers: int = 1,
                 files: list[AttachedFile] | None = None) -> tuple[int, int]:
    """Decode the stream ``data`` into the ``.pt`` file ``target`` one tensor at a time:
    ``torch.save`` writes the archive with the storages' bytes left out, then each tensor is
    decoded and written into its storage record (by the worker that decodes it when large;
    :mod:`.torch_archive`), so memory holds the stream and one tensor. Tied names stay one
    storage. Where that archive cannot be made (torch before 2.5, a big-endian machine) the
    whole state_dict is decoded and saved at once. Atomic like every output. Returns the
    number of tensors and of parameters. ``verify``, ``workers`` and ``files`` as for
    :func:`decode_to_safetensors`."""
    from .decoder import decode_tensors, describe, iter_decoded
    from .torch_archive import start_archive

    try:
        import torch  # noqa: F401  (only to fail early and clearly)
    except ImportError:
        raise MissingDependencyError(f"{target}: writing .pt files needs torch (write .safetensors instead)") from None
    _, infos = describe(data, limits=limits, files=files)
    with atomic_output(Path(target), overwrite=overwrite) as temporary:
        archive = start_archive(temporary, [(i.name, i.shape, i.dtype, i.alias_of) for i in infos])
        if archive is None:
            model = decode_tensors(data, limits=limits, progress=progress, verify=verify, workers=workers)
            _torch_save(torch, model, temporary)
            return len(model.tensors), sum(t.array.size for t in model.tensors)
        output = _worker_layout({name: (temporary, offset) for name, offset in archive.places.items()}, workers,
                                crc32=True)
        tensors = iter_decoded(data, limits=limits, progress=progress, verify=verify, workers=workers, output=output)
        with open(temporary, "r+b") as file:

            def write(tensor) -> None:
                if tensor.alias_of is not None:  # an alias's storage is its tensor's
                    return
                if isinstance(tensor.array, WrittenArray):
                    archive.written_elsewhere(tensor.name, tensor.array.crc32)
                else:
                    archive.write(file, tensor.name, tensor.array, tensor.dtype)

            parameters = _each_tensor(infos, tensors, write)
        archive.finish()
    return len(infos), parameters


def decode_to_safetensors_file(data: bytes, file, *, limits=None, progress=None,
                               verify: bool = True, workers: int = 1) -> tuple[int, int]:
    """:func:`decode_to_safetensors` into an open binary file (a pipe: nothing is atomic
    there, and a tensor found wrong midway leaves the reader a cut file; the stream's framing,
    order and stream digest are checked before the first byte is written)."""
    from .decoder import iter_decoded

    infos = _safetensors_infos(data, limits)
    write_safetensors_header(file, [(info.name, info.shape, info.dtype) for info in infos])
    tensors = iter_decoded(data, limits=limits, progress=progress, verify=verify, workers=workers)
    return len(infos), _stream_tensors(infos, tensors, file)


def _safetensors_infos(data: bytes, limits, files: list[AttachedFile] | None = None) -> list:
    """The tensors a stream decodes to (:func:`describe`; attached files appended to
    ``files``), checked to be writable as safetensors."""
    from .decoder import describe

    _, infos = describe(data, limits=limits, files=files)
    if any(info.name == SAFETENSORS_RESERVED for info in infos):
        raise CheckpointError(f"a tensor is named {SAFETENSORS_RESERVED!r}, which safetensors reserves; "
                              "write a .pt file instead")
    return infos


def _decode_into_files(data: bytes, files, limits, progress, verify: bool, workers: int,
                       model: DecodedModel | None = None) -> int:
    """Decode ``data`` (or take ``model``'s tensors) into the safetensors files ``files``
    (``(path, infos)``, stream order): each is created with its header first, and with
    ``workers`` > 1 the workers write the large tensors into them themselves (the parent
    neither receives nor writes their bytes). Returns the parameters."""
    from .decoder import iter_decoded

    starts = _start_files(files)
    if model is not None:
        tensors = iter(model.tensors)
    else:
        output = _output_layout([(path, infos, file_starts) for (path, infos), file_starts
                                 in zip(files, starts, strict=True)], workers)
        tensors = iter_decoded(data, limits=limits, progress=progress, verify=verify, workers=workers, output=output)
    parameters = _fill_files(files, starts, tensors)
    if next(tensors, None) is not None:  # also runs the end-of-stream checks
        raise AssertionError("the stream holds more tensors than its headers describe")
    return parameters


def _output_layout(files, workers: int) -> OutputLayout | None:
    """Where workers write large tensors themselves, for ``files`` of ``(path, infos, data
    starts)`` (see :func:`_worker_layout`)."""
    return _worker_layout({info.name: (os.fspath(path), start) for path, infos, starts in files
                           for info, start in zip(infos, starts, strict=True)}, workers)


def _worker_layout(places: Mapping[str, tuple[str, int]], workers: int, *, crc32: bool = False
                   ) -> OutputLayout | None:
    """The :class:`~.workers.OutputLayout` of ``places`` (each name's file and data offset);
    None with one process or without positional writes (Windows)."""
    if workers <= 1 or not hasattr(os, "pwrite"):
        return None
    return OutputLayout(dict(places), crc32=crc32)


def _each_tensor(infos, tensors, write) -> int:
    """``write(tensor)`` for each of ``tensors`` (an iterator of decoded tensors, one per
    info, possibly decoded as they are asked for), then the check that none is left (which
    also runs a decoding iterator's end-of-stream checks); returns the parameters. Each
    tensor is let go before the next one is asked for."""
    parameters = 0
    for info in infos:  # not zip(): its result tuple would hold a tensor while the next is decoded
        tensor = next(tensors)
        assert (tensor.name, tensor.array.shape) == (info.name, info.shape)  # the same stream, parsed twice
        write(tensor)
        parameters += tensor.array.size
        del tensor
    if next(tensors, None) is not None:
        raise AssertionError("the stream holds more tensors than its headers describe")
    return parameters


def _stream_tensors(infos, tensors, file, starts: list[int] | None = None) -> int:
    """The data of ``tensors`` after their header (see :func:`_each_tensor`); returns the
    parameters. With ``starts`` (where each tensor's data starts in ``file``) a tensor a
    worker wrote itself (:class:`~.workers.WrittenArray`) is skipped, and each other one
    written at its start."""
    where = iter(starts) if starts is not None else None

    def write(tensor) -> None:
        if where is not None:
            file.seek(next(where))
        if not isinstance(tensor.array, WrittenArray):
            for piece in tensor_pieces(tensor.array, tensor.dtype):  # bfloat16 converted a piece at a time
                file.write(piece)

    return _each_tensor(infos, tensors, write)


def _shard_plan(infos, max_shard_bytes: int) -> list[list]:
    """Consecutive groups of tensors (stream order) of at most ``max_shard_bytes`` each (a
    larger tensor alone in its shard), as transformers shards a checkpoint."""
    shards: list[list] = [[]]
    size = 0
    for info in infos:
        nbytes = math.prod(info.shape) * DTYPE_ITEMSIZE[info.dtype]
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(info)
        size += nbytes
    return shards


def _shard_names(plan: list[list]) -> list[str]:
    return [f"model-{number:05d}-of-{len(plan):05d}.safetensors" for number in range(1, len(plan) + 1)]


def _write_shard_index(plan: list[list], folder: Path) -> None:
    """``model.safetensors.index.json`` in ``folder`` for the shards of ``plan``
    (:func:`_shard_plan`)."""
    import json

    weight_map, total = {}, 0
    for name, shard in zip(_shard_names(plan), plan, strict=True):
        for info in shard:
            weight_map[info.name] = name
            total += math.prod(info.shape) * DTYPE_ITEMSIZE[info.dtype]
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _start_files(files) -> list[list[int]]:
    """Create each safetensors file of ``files`` (``(path, infos)``) with its header alone;
    returns where each tensor's data starts in its file. All exist before any tensor is
    decoded, so that workers running ahead can write into any of them."""
    starts = []
    for path, infos in files:
        with open(path, "wb") as file:
            starts.append(write_safetensors_header(file, [(info.name, info.shape, info.dtype) for info in infos]))
    return starts


def _fill_files(files, starts: list[list[int]], tensors) -> int:
    """Write ``tensors`` (stream order) into the files :func:`_start_files` made, each at
    its start (none where a worker wrote it); returns the parameters."""
    parameters = 0
    for (path, infos), file_starts in zip(files, starts, strict=True):
        with open(path, "r+b") as file:
            parameters += _stream_tensors(infos, itertools.islice(tensors, len(infos)), file, file_starts)
    return parameters


def is_folder_target(path: str | os.PathLike) -> bool:
    """Whether an output path names a folder: it ends with a separator or is one."""
    text = os.fspath(path)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def decode_to_folder(data: bytes, target: str | os.PathLike, *, limits=None, progress=None,
                     overwrite: bool = False, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                     model: DecodedModel | None = None, verify: bool = True,
                     workers: int = 1, source: str | os.PathLike | None = None) -> tuple[int, int, int]:
    """Decode a stream into a model folder: ``model.safetensors`` (written tensor by tensor;
    shards and their index, as transformers writes them, when the tensors exceed
    ``max_shard_bytes``) and the stream's attached files (§5.7) at their paths, so that
    ``transformers``' ``from_pretrained`` loads it when the config was attached. Built in a
    temporary folder (inside ``target`` when it exists, else beside it) and moved into place
    at the end: nothing partial is left, and a decode that could not put every file in place
    (a folder where a file goes, a file where a folder goes) is refused before anything is
    written.
    A non-empty existing ``target`` needs ``overwrite``. ``model``, the stream already
    decoded, saves decoding it again. ``verify`` and ``workers`` as for :func:`decode`. With
    ``overwrite``, weight files of an earlier model in ``target`` that this one does not write
    (``model.safetensors`` beside new shards, or shards and their index beside a new single
    file) are removed, so that the folder loads the new model and only it. ``source``, the
    stream file, is never written over (a stream kept inside the folder it decodes to).
    Returns tensors, parameters, files."""
    from .decoder import describe

    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(target))
    if not target.parent.is_dir():  # the folder is made; its parents must be there, as for a file output
        if target.parent.exists():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder, so the output folder cannot be made in it",
                                     str(target.parent))
        raise FileNotFoundError(errno.ENOENT, "no such folder to make the output folder in", str(target.parent))
    # a staging folder that a killed decode left behind does not count: it is never written over
    if target.is_dir() and not overwrite and any(not path.name.startswith(_STAGING_PREFIX)
                                                 for path in target.iterdir()):
        raise OutputExistsError(target, "folder exists and is not empty")
    files: list[AttachedFile] = []
    _, infos = describe(data, limits=limits, files=files)
    plan = _shard_plan(infos, max_shard_bytes)
    sharded = len(plan) > 1
    written = {SAFETENSORS_INDEX, *_shard_names(plan)} if sharded else {"model.safetensors"}
    clash = [attached.path for attached in files if attached.path in written]
    if clash:
        raise CheckpointError(f"{target}: the stream attaches {clash[0]!r}, which the weights are written to")
    destinations = sorted(written | {attached.path for attached in files})
    if source is not None:
        for relative in destinations:
            if _same_path(source, target / relative):
                raise CheckpointError(f"{target / relative}: decoding would write over the stream being decoded "
                                      f"({source}); decode into another folder")
    if target.is_dir():
        _check_destinations(target, destinations)
    staging = _staging_folder(target)
    try:
        weights = ([(staging / name, shard) for name, shard in zip(_shard_names(plan), plan, strict=True)]
                   if sharded else [(staging / "model.safetensors", infos)])
        parameters = _decode_into_files(data, weights, limits, progress, verify, workers, model)
        if sharded:
            _write_shard_index(plan, staging)
        count = len(infos)
        for attached in files:
            path = staging / attached.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(attached.content)
        termination.check()  # as atomic_output: no folder is completed after SIGTERM
        if not target.exists():
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp made it private
            os.replace(staging, target)
        else:
            for path in sorted(staging.rglob("*")):
                if path.is_file():
                    destination = target / path.relative_to(staging)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, destination)
            for stale in _weight_files(target) - written:  # an earlier model's: it would load instead, or beside
                if source is None or not _same_path(source, target / stale):  # never the stream being decoded
                    (target / stale).unlink()
    except OSError as exc:
        if exc.filename is None and exc.errno in _FULL:  # a full disk: say which output it was
            raise type(exc)(exc.errno, exc.strerror, str(target)) from exc
        raise
    finally:
        if staging.exists():
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return count, parameters, len(files)


def _check_destinations(target: Path, destinations: Sequence[str]) -> None:
    """Refuse, before anything is written, a decode into the existing folder ``target`` that
    could not put every file in place (so that it never stops half way, leaving a mix of the
    old model and the new): a folder where a file goes, or a file where a folder goes."""
    for relative in destinations:
        path = target / relative
        for parent in list(Path(relative).parents)[-2::-1]:  # outermost first, "." left out
            if (target / parent).exists() and not (target / parent).is_dir():
                raise CheckpointError(f"{target / parent}: a file, where the decoded model puts the folder of "
                                      f"{relative}; remove it or decode into another folder")
        if path.is_dir() and not path.is_symlink():  # a link is replaced, not what it points to
            raise CheckpointError(f"{path}: a folder, where the decoded model puts the file {relative}; "
                                  "remove it or decode into another folder")


_STAGING_PREFIX = ".nncodec-"  # a staging folder inside an existing output folder


def _staging_folder(target: Path) -> Path:
    """A new private folder to build the model folder ``target`` in: inside ``target`` when it
    exists (a mount point, or a folder whose parent is not writable, can still be filled;
    its files are then moved into place one by one), else beside it (then renamed whole)."""
    inside = target.is_dir()
    try:
        return Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX if inside else f".{target.name[:200]}.",
                                     dir=target if inside else target.parent))
    except OSError as exc:
        raise OSError(exc.errno, f"cannot build the output folder there ({exc.strerror})", str(target)) from None


_SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def _weight_files(folder: Path) -> set[str]:
    """The safetensors weight files that this package writes into a model folder and that
    ``from_pretrained`` reads: ``model.safetensors``, its shards and their index."""
    return {path.name for path in folder.iterdir() if path.is_file() and (
        path.name in ("model.safetensors", SAFETENSORS_INDEX) or _SHARD_NAME.fullmatch(path.name))}


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False
