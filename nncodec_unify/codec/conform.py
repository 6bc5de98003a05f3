"""Check this package's decoder against a conformance suite (``conformance/``, spec §3.6, §7.3).

A suite directory holds ``valid/`` and ``invalid/``, each with a ``manifest.json``. A valid
stream passes when it decodes into exactly the listed tensors (name, dtype, shape and the
SHA-256 of the canonical bytes, in order) and attached files (path, size and SHA-256 of the
content, in order; none when the entry lists none); an invalid stream passes when the decoder rejects
it with the listed error category and element. Either group directory may also be given
alone.

>>> results = check_suite("conformance")            # doctest: +SKIP
>>> all(r.passed for r in results)                  # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .decoder import decode_tensors
from .errors import (BitstreamError, ChecksumError, LimitExceededError, NncodecError, TruncatedError,
                     UnsupportedVersionError)
from . import integrity
from .format import DTYPE_BY_NAME, Limits

GROUPS = ("valid", "invalid")
CATEGORIES = ("malformed", "truncated", "checksum", "unsupported_version", "limit")  # spec §3.6


class ManifestError(NncodecError):
    """A conformance group's ``manifest.json`` is not what the suite format says."""


def read_manifest(path: Path) -> list[dict]:
    """The stream entries of a group's manifest, checked: a JSON object whose ``streams`` is a
    list of objects, each naming a ``.nnu`` file of the group's own folder (a bare file name,
    listed once) and giving either its ``tensors`` or its ``error`` (a category of spec §3.6
    and an element). Raises ManifestError otherwise."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not a JSON manifest ({exc})") from None
    streams = manifest.get("streams") if isinstance(manifest, dict) else None
    if not isinstance(streams, list):
        raise ManifestError(f"{path}: needs an object with a list of \"streams\"")
    names: set[str] = set()
    for number, entry in enumerate(streams):
        where = f"{path}: streams[{number}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise ManifestError(f"{where}: needs a \"file\" name")
        name = entry["file"]
        if name in ("", ".", "..") or "/" in name or "\\" in name:
            raise ManifestError(f"{where}: {name!r} is not a file name in the group's folder")
        if name.casefold() in names:  # checked, and counted, twice (on a case-blind file system too)
            raise ManifestError(f"{where}: {name!r} is listed a second time")
        names.add(name.casefold())
        if ("tensors" in entry) == ("error" in entry):
            raise ManifestError(f"{where} ({name}): needs either \"tensors\" or \"error\"")
        if "tensors" in entry:
            tensors = entry["tensors"]
            if not isinstance(tensors, list) or not all(
                    isinstance(t, dict) and isinstance(t.get("name"), str) and t.get("dtype") in DTYPE_BY_NAME
                    and isinstance(t.get("shape"), list) and isinstance(t.get("sha256"), str) for t in tensors):
                raise ManifestError(f"{where} ({name}): \"tensors\" must list objects with name, dtype, shape "
                                    "and sha256")
        elif not (isinstance(entry["error"], dict) and isinstance(entry["error"].get("category"), str)
                  and isinstance(entry["error"].get("element"), str)):
            raise ManifestError(f"{where} ({name}): \"error\" needs a category and an element")
        elif entry["error"]["category"] not in CATEGORIES:  # no decoder could ever match it
            raise ManifestError(f"{where} ({name}): error category {entry['error']['category']!r} is not one "
                                f"of spec §3.6's ({', '.join(CATEGORIES)})")
        if entry.get("limits") is not None and not isinstance(entry["limits"], dict):
            raise ManifestError(f"{where} ({name}): \"limits\" must be an object")
        files = entry.get("attached_files", [])
        if not isinstance(files, list) or not all(
                isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("bytes"), int)
                and isinstance(f.get("sha256"), str) for f in files):
            raise ManifestError(f"{where} ({name}): \"attached_files\" must list objects with path, bytes and sha256")
    return streams


@dataclasses.dataclass(frozen=True)
class FileResult:
    """The outcome for one stream of the suite."""

    group: str
    file: str
    passed: bool
    detail: str  # what was found (decoded tensors, or the error) and, on failure, what was expected

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.group}/{self.file}: {self.detail}"


def error_category(exc: BitstreamError) -> str:
    """The implementation-neutral category of spec §3.6 for one of our errors."""
    for cls, name in ((UnsupportedVersionError, "unsupported_version"), (ChecksumError, "checksum"),
                      (TruncatedError, "truncated"), (LimitExceededError, "limit")):
        if isinstance(exc, cls):
            return name
    return "malformed"


def canonical_bytes(array: np.ndarray, dtype_name: str) -> bytes:
    """Spec §7.3: little-endian, C order; bfloat16 as its 16-bit patterns; bool one byte each
    (what a content digest hashes, :func:`integrity.canonical_bytes`)."""
    return bytes(integrity.canonical_bytes(array, DTYPE_BY_NAME[dtype_name]))


def check_stream(data: bytes, entry: dict, group: str) -> FileResult:
    """Decode one stream and compare with its manifest ``entry``."""
    name = entry["file"]
    try:
        limits = Limits(**entry["limits"]) if entry.get("limits") else None
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{name}: bad \"limits\" in the manifest ({exc})") from None
    try:
        model = decode_tensors(data, limits=limits)
    except BitstreamError as exc:
        got = (error_category(exc), exc.element)
        if "error" not in entry:
            return FileResult(group, name, False, f"rejected ({got[0]} at {got[1]}: {exc}), expected to decode")
        want = (entry["error"]["category"], entry["error"]["element"])
        if got != want:
            return FileResult(group, name, False, f"rejected as {got[0]} at {got[1]} ({exc}), "
                                                  f"expected {want[0]} at {want[1]}")
        return FileResult(group, name, True, f"rejected: {got[0]} at {got[1]}")
    if "error" in entry:
        return FileResult(group, name, False, f"decoded {len(model.tensors)} tensors, expected "
                                              f"{entry['error']['category']} at {entry['error']['element']}")
    got = [{"name": t.name, "dtype": t.dtype_name, "shape": list(t.array.shape),
            "sha256": hashlib.sha256(canonical_bytes(t.array, t.dtype_name)).hexdigest()} for t in model.tensors]
    want = [{key: t[key] for key in ("name", "dtype", "shape", "sha256")} for t in entry["tensors"]]
    if len(got) != len(want):
        return FileResult(group, name, False, f"decoded {len(got)} tensors, expected {len(want)}")
    for g, w in zip(got, want, strict=True):
        if g != w:
            fields = ", ".join(k for k in w if g[k] != w[k])
            return FileResult(group, name, False, f"tensor {w['name']!r}: {fields} differ (got {g}, expected {w})")
    got_files = [{"path": f.path, "bytes": len(f.content), "sha256": hashlib.sha256(f.content).hexdigest()}
                 for f in model.files]
    want_files = entry.get("attached_files", [])
    if got_files != want_files:
        return FileResult(group, name, False, f"attached files: got {got_files}, expected {want_files}")
    files = f", {len(got_files)} attached file{'s' if len(got_files) != 1 else ''}" if got_files else ""
    return FileResult(group, name, True, f"{len(got)} tensor{'s' if len(got) != 1 else ''} match{files}")


def check_group(folder: str | Path, group: str | None = None, *,
                progress: Callable[[int, int, str], None] | None = None,
                entries: list[dict] | None = None, counted: tuple[int, int] | None = None) -> list[FileResult]:
    """Check every stream listed in ``folder/manifest.json`` (its ``entries``, when the caller
    has read them), and flag streams it does not list. ``progress(done, total, name)`` hears
    of each listed stream as it is taken up, counted from ``counted`` = (streams before this
    group, streams in all) when given."""
    folder = Path(folder)
    group = group or folder.name
    results = []
    listed = set()
    if entries is None:
        entries = read_manifest(_manifest_of(folder))
    before, total = counted or (0, len(entries))
    for done, entry in enumerate(entries):
        if progress is not None:
            progress(before + done, total, f"{group}/{entry['file']}")
        listed.add(entry["file"])
        path = folder / entry["file"]
        if not path.is_file():
            results.append(FileResult(group, entry["file"], False, "listed in the manifest but missing"))
            continue
        results.append(check_stream(path.read_bytes(), entry, group))
    for path in sorted(folder.glob("*.nnu")):
        if path.name not in listed:
            results.append(FileResult(group, path.name, False, "not listed in the manifest"))
    return results


def _manifest_of(folder: Path) -> Path:
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no such file (not a conformance group)")
    return manifest_path


def check_suite(directory: str | Path, *,
                progress: Callable[[int, int, str], None] | None = None) -> list[FileResult]:
    """Check a suite directory (holding ``valid/`` and ``invalid/``) or a single group
    directory; ``progress(done, total, name)`` hears of each listed stream, counted over the
    whole suite."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory}: not a directory (give a suite folder, or its valid/ or invalid/)")
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    if (directory / "manifest.json").is_file():
        return check_group(directory, progress=progress)
    groups = [g for g in GROUPS if (directory / g).is_dir()]
    if not groups:
        raise FileNotFoundError(f"{directory}: holds neither valid/ nor invalid/ nor a manifest.json")
    manifests = [read_manifest(_manifest_of(directory / group)) for group in groups]
    total = sum(map(len, manifests))
    results: list[FileResult] = []
    before = 0
    for group, entries in zip(groups, manifests, strict=True):
        results += check_group(directory / group, group, progress=progress, entries=entries, counted=(before, total))
        before += len(entries)
    return results


def main(argv: Sequence[str] | None = None, *, progress: Callable[[int, int, str], None] | None = None) -> int:
    """``nncodec conform DIR``: one line per stream on stdout, then a summary; 1 if any
    failed. ``progress`` as for :func:`check_suite`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: nncodec conform DIR", file=sys.stderr)
        return 2
    results = check_suite(args[0], progress=progress)
    for result in results:
        print(result.line())
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed ({len(results)} streams)")
    return 1 if failed else 0
