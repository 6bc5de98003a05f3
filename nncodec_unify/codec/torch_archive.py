"""A ``.pt`` file (``torch.save``'s zip archive) written tensor by tensor, so that decoding
into ``.pt`` holds one tensor at a time, as decoding into safetensors does.

``torch.save`` runs once, inside ``torch.serialization.skip_data()``, on placeholders:
``torch.empty`` tensors of the decoded tensors' dtypes and shapes, never touched and so never
resident. It writes the whole archive (``data.pkl``, each storage record's header and
alignment, the central directory) and leaves each storage's bytes out. Each decoded tensor is
then written at its record's offset, by the parent or a worker, and at the end the records'
CRC-32s are patched in where the zip format keeps them (the record's data descriptor and its
central directory entry). Names that alias one tensor share one storage, as ``torch.save``
makes them.

:func:`start_archive` returns None where this cannot be done as planned: torch without
``skip_data`` (before 2.5), a big-endian machine, or an archive laid out otherwise than
expected. The caller then writes the whole state_dict with ``torch.save``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import struct
import sys
import zipfile
import zlib
from collections.abc import Iterable, Mapping

import numpy as np

from .format import DTYPE_NAMES, DType
from .safetensors_io import tensor_pieces

_LOCAL_HEADER = b"PK\x03\x04"
_DATA_DESCRIPTOR = b"PK\x07\x08"
_CENTRAL_ENTRY = b"PK\x01\x02"
_END_OF_DIRECTORY = b"PK\x05\x06"
_ZIP64_END_OF_DIRECTORY = b"PK\x06\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"


@dataclasses.dataclass
class _Record:
    """A storage record of the archive: where its data starts, how many bytes it holds, and
    where its CRC-32 is kept (in its data descriptor and its central directory entry)."""

    data_offset: int
    size: int
    crc_offsets: tuple[int, ...]
    crc: int = 0


@dataclasses.dataclass
class TorchArchive:
    """A ``.pt`` file whose storages are still to be written: ``places[name]`` is where the
    data of the tensor ``name`` (an alias: the tensor it aliases) starts in ``path``."""

    path: str
    places: dict[str, int]
    _records: dict[str, _Record]  # by every name, aliases included: the same record

    def write(self, file, name: str, array: np.ndarray, dtype: DType) -> None:
        """Write tensor ``name``'s data into ``file`` (this archive, open for update) at its place."""
        file.seek(self.places[name])
        crc = 0
        for piece in tensor_pieces(array, dtype):  # native byte order: this is a little-endian machine
            crc = zlib.crc32(piece, crc)
            file.write(piece)
        self.written_elsewhere(name, crc)

    def written_elsewhere(self, name: str, crc: int) -> None:
        """Tensor ``name``'s data was written by another process; its bytes have CRC-32 ``crc``."""
        self._records[name].crc = crc

    def finish(self) -> None:
        """Patch every storage record's CRC-32 in (call once every tensor is written)."""
        records = {id(record): record for record in self._records.values()}.values()
        handle = os.open(self.path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        try:
            for record in records:
                for offset in record.crc_offsets:
                    os.pwrite(handle, struct.pack("<I", record.crc), offset)
        finally:
            os.close(handle)


def start_archive(path: str | os.PathLike, tensors: Iterable[tuple[str, tuple[int, ...], DType, str | None]]
                  ) -> TorchArchive | None:
    """Write the ``.pt`` archive of ``tensors`` (``(name, shape, dtype, alias_of)`` in the
    order ``torch.save`` should keep; an alias names an earlier tensor) at ``path``, with
    every storage's bytes still to be written (see the module docstring). Returns None,
    having written nothing that matters, where this is not possible; then write the file with
    ``torch.save``."""
    import torch

    if sys.byteorder != "little" or not hasattr(torch.serialization, "skip_data"):
        return None
    placeholders: dict[str, object] = {}
    for name, shape, dtype, alias_of in tensors:
        placeholders[name] = (placeholders[alias_of] if alias_of is not None
                              else torch.empty(shape, dtype=getattr(torch, DTYPE_NAMES[dtype])))
    path = os.fspath(path)
    with torch.serialization.skip_data(), open(path, "wb") as file:
        torch.save(placeholders, file)  # a file object: the archive's folder is "archive", not the file's random name
    expected = {name: (int(value.untyped_storage().nbytes()), value.element_size() * value.numel())
                for name, value in placeholders.items()}
    del placeholders
    try:
        return _laid_out(path, expected)
    except (OSError, ValueError, KeyError, struct.error, zipfile.BadZipFile, pickle.UnpicklingError):
        return None


def _laid_out(path: str, expected: Mapping[str, tuple[int, int]]) -> TorchArchive | None:
    """The :class:`TorchArchive` of the archive at ``path``, checked to be laid out as
    planned: each name's storage record holds its tensor from its start, and every CRC-32 to
    patch is where the zip format says. None otherwise."""
    with open(path, "rb") as file:
        archive = zipfile.ZipFile(file)
        entries = {info.filename: info for info in archive.infolist()}
        pickled = [name for name in entries if name.endswith("/data.pkl")]
        if len(pickled) != 1:
            return None
        prefix = pickled[0][:-len("data.pkl")]
        storages = _StorageKeys(io.BytesIO(archive.read(pickled[0]))).load()
        central = _central_crc_offsets(file)
        records: dict[str, _Record] = {}
        by_key: dict[str, _Record] = {}
        for name, (storage_bytes, tensor_bytes) in expected.items():
            key, element_offset = storages[name]
            info = entries[f"{prefix}data/{key}"]
            if element_offset != 0 or info.file_size != storage_bytes or storage_bytes != tensor_bytes:
                return None
            if key not in by_key:
                by_key[key] = _storage_record(file, info, central)
            records[name] = by_key[key]
    return TorchArchive(path, {name: record.data_offset for name, record in records.items()}, records)


def _storage_record(file, info: zipfile.ZipInfo, central: Mapping[str, int]) -> _Record:
    """A stored (uncompressed) record's data offset and CRC-32 places; raises ValueError
    where they are not as expected."""
    file.seek(info.header_offset)
    header = file.read(30)
    if header[:4] != _LOCAL_HEADER or info.compress_type != zipfile.ZIP_STORED:
        raise ValueError("not a stored record")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    data_offset = info.header_offset + 30 + name_length + extra_length
    crc_offsets = [central[info.filename]]
    flags = struct.unpack("<H", header[6:8])[0]
    if info.file_size and flags & 0x08:  # a data descriptor follows the data: its CRC-32 too
        file.seek(data_offset + info.file_size)
        if file.read(4) != _DATA_DESCRIPTOR:
            raise ValueError("no data descriptor after the data")
        crc_offsets.append(data_offset + info.file_size + 4)
    elif info.file_size:  # the CRC-32 is in the local header
        crc_offsets.append(info.header_offset + 14)
    return _Record(data_offset, info.file_size, tuple(crc_offsets))


def _central_crc_offsets(file) -> dict[str, int]:
    """Where each entry's CRC-32 sits in the central directory, by entry name."""
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(size - 22)
    end = file.read(22)
    if end[:4] != _END_OF_DIRECTORY:  # torch writes no archive comment: the record ends the file
        raise ValueError("no end of central directory record")
    count, _, start = struct.unpack("<HII", end[10:20])
    if start == 0xFFFFFFFF or count == 0xFFFF:  # zip64: the locator sits just before
        file.seek(size - 22 - 20)
        locator = file.read(20)
        if locator[:4] != _ZIP64_LOCATOR:
            raise ValueError("no zip64 locator")
        file.seek(struct.unpack("<Q", locator[8:16])[0])
        record = file.read(56)
        if record[:4] != _ZIP64_END_OF_DIRECTORY:
            raise ValueError("no zip64 end of central directory record")
        count, _, start = struct.unpack("<QQQ", record[32:56])
    offsets = {}
    file.seek(start)
    position = start
    for _ in range(count):
        fixed = file.read(46)
        if fixed[:4] != _CENTRAL_ENTRY:
            raise ValueError("not a central directory entry")
        name_length, extra_length, comment_length = struct.unpack("<HHH", fixed[28:34])
        name = file.read(name_length).decode("utf-8")
        offsets[name] = position + 16
        position += 46 + name_length + extra_length + comment_length
        file.seek(position)
    return offsets


class _StorageKeys(pickle.Unpickler):
    """Reads ``data.pkl`` of a state_dict archive without torch: ``{name: (storage key,
    element offset)}``. Only what ``torch.save`` of a dict of tensors pickles is accepted."""

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor_v3"):  # v3: uint16/32/64
            return lambda storage, offset, *_: (storage, offset)
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        if (module == "torch" and (name.endswith("Storage") or name in DTYPE_NAMES.values())
                or (module, name) == ("torch.storage", "UntypedStorage")):
            return name
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in data.pkl")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("unexpected persistent id in data.pkl")
        return pid[2]
