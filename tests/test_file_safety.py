"""Safe file handling in the CLI and the file API (issue 5, item 4).

* weights are loaded with ``weights_only=True``, always, with no unsafe fallback: pickled code
  never runs, and a pickled module is refused with a one-line fix;
* outputs go to a temporary file renamed into place: a failed or interrupted run leaves no
  partial file and does not clobber an existing one; ``-f`` is needed to overwrite;
* input and output being the same file is refused;
* nothing in a stream is used as a file-system path, and names are printed escaped.
"""

from __future__ import annotations

import errno
import os
import pathlib
import re

import numpy as np
import pytest

import nncodec_unify as nu
from nncodec_unify.codec import checkpoint
from nncodec_unify.codec.checkpoint import CheckpointError, atomic_output, decode_file, encode_file, write_bytes
from nncodec_unify.cli import EXIT_BAD_INPUT, EXIT_EXISTS, EXIT_IO, EXIT_OK, EXIT_USAGE, main

torch = pytest.importorskip("torch")


class Payload:
    """Pickles to a call of ``Path.touch(marker)``: loading it must never create the marker."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _files(folder: pathlib.Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture()
def stream(tmp_path) -> pathlib.Path:
    path = tmp_path / "m.nnu"
    path.write_bytes(nu.encode({"w": np.arange(12, dtype=np.float32).reshape(3, 4) / 8,
                                "b": np.ones(3, np.float32)}))
    return path


# ---------------------------------------------------------------------------------------------
# loading never unpickles code


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_pickled_code_never_runs_and_is_refused_in_one_line(tmp_path, capsys, how):
    marker = tmp_path / "PWNED"
    source = tmp_path / "evil.pt"
    if how == "torch.save":
        torch.save({"w": torch.ones(2), "x": Payload(marker)}, source)
    else:
        import pickle

        source.write_bytes(pickle.dumps(Payload(marker)))
    assert main(["encode", str(source), str(tmp_path / "out.nnu")]) == EXIT_BAD_INPUT
    assert not marker.exists()
    message = _one_line(capsys.readouterr().err)
    assert "refused to unpickle" in message and "state_dict()" in message
    assert _files(tmp_path) == {"evil.pt"}


def test_a_pickled_module_is_refused_with_the_fix(tmp_path, capsys):
    torch.save(torch.nn.Linear(3, 2), tmp_path / "module.pt")
    assert main(["encode", str(tmp_path / "module.pt"), str(tmp_path / "out.nnu")]) == EXIT_BAD_INPUT
    assert "torch.save(model.state_dict(), path)" in _one_line(capsys.readouterr().err)


def test_torch_load_is_always_weights_only_with_no_fallback(tmp_path, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    torch.save({"x": Payload(tmp_path / "PWNED")}, tmp_path / "evil.pt")
    torch.save({"w": torch.ones(2, 2)}, tmp_path / "good.pt")
    with pytest.raises(CheckpointError):
        checkpoint.load_tensors(tmp_path / "evil.pt")
    assert set(checkpoint.load_tensors(tmp_path / "good.pt")) == {"w"}
    assert main(["encode", str(tmp_path / "evil.pt"), str(tmp_path / "e.nnu")]) == EXIT_BAD_INPUT
    assert calls == [True, True, True]  # one call per load, none without weights_only


def test_a_hostile_safetensors_header_is_refused_in_one_line(tmp_path, capsys):
    source = tmp_path / "bomb.safetensors"
    source.write_bytes((1 << 62).to_bytes(8, "little") + b'{"w": {"dtype": "F32", "shape": [1000000000000]')
    assert main(["encode", str(source), str(tmp_path / "out.nnu")]) == EXIT_BAD_INPUT
    assert "not a readable safetensors file" in _one_line(capsys.readouterr().err)
    assert _files(tmp_path) == {"bomb.safetensors"}


# ---------------------------------------------------------------------------------------------
# no partial outputs, no clobbering


def test_a_failed_decode_leaves_no_file(tmp_path, stream, capsys):
    data = bytearray(stream.read_bytes())
    data[-1] ^= 1
    stream.write_bytes(bytes(data))
    for target in ("out.pt", "out.safetensors"):
        assert main(["decode", str(stream), str(tmp_path / target)]) == EXIT_BAD_INPUT
        assert "invalid stream" in _one_line(capsys.readouterr().err)
    assert _files(tmp_path) == {"m.nnu"}


@pytest.mark.parametrize("target", ["out.pt", "out.safetensors"])
@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_an_interrupted_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, stream, monkeypatch,
                                                                           capsys, target, failure):
    existing = tmp_path / target
    existing.write_bytes(b"the previous output")

    def half_written(tensors, target, *args, **kwargs):  # torch.save into a path or an open file
        if hasattr(target, "write"):
            target.write(b"half a file")
        else:
            pathlib.Path(target).write_bytes(b"half a file")
        raise failure

    def half_written_safetensors(file, tensors, *args, **kwargs):
        file.write(b"half a file")
        raise failure

    monkeypatch.setattr(torch, "save", half_written)
    import nncodec_unify.codec.checkpoint

    monkeypatch.setattr(nncodec_unify.codec.checkpoint, "write_safetensors", half_written_safetensors)
    monkeypatch.setattr(nncodec_unify.codec.checkpoint, "write_safetensors_header", half_written_safetensors)
    code = main(["decode", str(stream), str(existing), "-f"])
    assert code == (130 if isinstance(failure, KeyboardInterrupt) else EXIT_IO)
    _one_line(capsys.readouterr().err)
    assert existing.read_bytes() == b"the previous output"
    assert _files(tmp_path) == {"m.nnu", target}


def test_a_failure_after_writing_the_stream_leaves_no_file(tmp_path, stream, monkeypatch, capsys):
    torch.save({"w": torch.ones(3, 3)}, tmp_path / "m.pt")

    def no_space(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "new.nnu")]) == EXIT_IO
    assert "No space left" in _one_line(capsys.readouterr().err)
    assert _files(tmp_path) == {"m.nnu", "m.pt"}


def test_overwriting_needs_force(tmp_path, stream, capsys):
    torch.save({"w": torch.ones(3, 3)}, tmp_path / "m.pt")
    for argv, target in ((["encode", str(tmp_path / "m.pt")], tmp_path / "m.nnu"),
                         (["decode", str(stream)], tmp_path / "o.pt")):
        target.write_bytes(b"keep me") if not target.exists() else None
        before = target.read_bytes()
        assert main(argv + [str(target)]) == EXIT_EXISTS
        assert "use -f to overwrite" in _one_line(capsys.readouterr().err)
        assert target.read_bytes() == before
    assert main(["decode", str(stream), str(tmp_path / "o.pt"), "-f"]) == EXIT_OK
    assert set(torch.load(tmp_path / "o.pt", weights_only=True)) == {"w", "b"}


def test_a_file_that_appears_during_the_write_is_not_clobbered(tmp_path):
    """The final move is a hard link, which fails if the target exists: no check-then-rename race."""
    target = tmp_path / "out.nnu"
    with pytest.raises(FileExistsError), atomic_output(target, overwrite=False) as temporary:
        pathlib.Path(temporary).write_bytes(b"ours")
        target.write_bytes(b"theirs")  # another process wins the race
    assert target.read_bytes() == b"theirs"
    assert _files(tmp_path) == {"out.nnu"}


def test_outputs_get_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        write_bytes(tmp_path / "a.nnu", b"x")
        os.umask(0o077)
        write_bytes(tmp_path / "b.nnu", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.nnu").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.nnu").stat().st_mode & 0o777 == 0o600


def test_a_replaced_file_keeps_its_permissions_and_long_names_fit(tmp_path, stream):
    """-f keeps a private file private (it became 0644); a name near the system's 255-byte
    limit can be written (the temporary name beside it had 18 bytes more)."""
    target = tmp_path / "private.safetensors"
    target.write_bytes(b"old")
    target.chmod(0o600)
    decode_file(stream, target, overwrite=True)
    assert target.stat().st_mode & 0o777 == 0o600 and target.read_bytes() != b"old"
    long_name = tmp_path / ("x" * 245 + ".nnu")
    write_bytes(long_name, b"x")
    assert long_name.read_bytes() == b"x" and _files(tmp_path) == {stream.name, target.name, long_name.name}


def test_a_full_disk_names_the_output(tmp_path, stream, capsys):
    """ENOSPC names no file when a write fails: the error names the output (it said ": No space
    left on device"), in the library and the CLI, and nothing is left."""
    with pytest.raises(OSError, match="No space left") as caught, atomic_output(tmp_path / "o.nnu", overwrite=False):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert caught.value.filename == str(tmp_path / "o.nnu") and _files(tmp_path) == {stream.name}
    import subprocess
    import sys

    with open("/dev/full", "wb") as full:
        result = subprocess.run([sys.executable, "-m", "nncodec_unify", "decode", "-q", str(stream), "-"],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == EXIT_IO
    assert _one_line(result.stderr) == "nncodec: error: standard output: No space left on device"


@pytest.mark.parametrize("argv", [["decode", "IN", "-"], ["encode", "W", "-"], ["decode", "-", "OUT"]])
def test_a_closed_standard_stream_is_one_line(tmp_path, stream, argv):
    import subprocess
    import sys

    torch.save({"w": torch.ones(3, 3)}, tmp_path / "w.pt")
    names = {"IN": str(stream), "W": str(tmp_path / "w.pt"), "OUT": str(tmp_path / "o.safetensors")}
    closed = "0" if argv[1] == "-" else "1"
    command = " ".join([sys.executable, "-m", "nncodec_unify", *(names.get(a, a) for a in argv), f"{closed}>&-"])
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    which = "input" if closed == "0" else "output"
    assert result.returncode == EXIT_USAGE
    assert _one_line(result.stderr) == f"nncodec: error: standard {which} is closed: give a file instead of -"
    assert _files(tmp_path) == {stream.name, "w.pt"}


def test_an_existing_report_needs_force(tmp_path, capsys):
    torch.save({"w": torch.ones(3, 3)}, tmp_path / "w.pt")
    (tmp_path / "r.json").write_text("keep me")
    assert main(["encode", str(tmp_path / "w.pt"), str(tmp_path / "w.nnu"), "--report", str(tmp_path / "r.json")]) \
        == EXIT_EXISTS
    assert "r.json: already exists (use -f to overwrite)" in _one_line(capsys.readouterr().err)
    assert (tmp_path / "r.json").read_text() == "keep me" and not (tmp_path / "w.nnu").exists()
    assert main(["encode", "-q", str(tmp_path / "w.pt"), str(tmp_path / "w.nnu"), "--report", str(tmp_path / "r.json"),
                 "-f"]) == EXIT_OK
    assert (tmp_path / "r.json").read_text().startswith("{")


def test_a_missing_output_folder_is_named(tmp_path, stream, capsys):
    assert main(["decode", str(stream), str(tmp_path / "no" / "such" / "o.pt")]) == EXIT_IO
    message = _one_line(capsys.readouterr().err)
    assert "no such directory" in message and ".partial" not in message


# ---------------------------------------------------------------------------------------------
# same file, non-regular files


def test_input_and_output_being_the_same_file_is_refused(tmp_path, stream, capsys):
    torch.save({"w": torch.ones(3, 3)}, tmp_path / "m.pt")
    os.symlink(tmp_path / "m.pt", tmp_path / "link.pt")
    os.link(stream, tmp_path / "hard.nnu")
    original = stream.read_bytes()
    for argv in (["encode", "m.pt", "m.pt"], ["encode", "m.pt", "link.pt", "-f"],
                 ["decode", "m.nnu", "hard.nnu", "-f"], ["decode", "m.nnu", "m.nnu", "-f"]):
        assert main([argv[0]] + [str(tmp_path / a) if not a.startswith("-") else a for a in argv[1:]]) == EXIT_USAGE
        assert "same file" in _one_line(capsys.readouterr().err)
    assert stream.read_bytes() == original
    with pytest.raises(CheckpointError, match="same file"):
        decode_file(stream, tmp_path / "hard.nnu", overwrite=True)
    with pytest.raises(CheckpointError, match="same file"):
        encode_file(tmp_path / "m.pt", tmp_path / "link.pt", overwrite=True)


def test_a_non_regular_input_is_refused_without_reading_it(tmp_path, capsys):
    assert main(["decode", "/dev/zero", str(tmp_path / "o.pt")]) == EXIT_IO
    _one_line(capsys.readouterr().err)
    with pytest.raises(FileNotFoundError):
        decode_file("/dev/zero", tmp_path / "o.pt")
    assert _files(tmp_path) == set()


# ---------------------------------------------------------------------------------------------
# names from a stream are data, never paths or terminal controls


HOSTILE_NAMES = ["../../escaped.pt", "/tmp/absolute.pt", "sub/dir/x", "..", "con", "a\x00b", "\u202eevil"]


@pytest.mark.parametrize("target", ["out.pt", "out.safetensors"])
def test_stream_names_are_never_used_as_paths(tmp_path, capsys, target):
    work = tmp_path / "work"
    work.mkdir()
    model = {name: np.full(2, i, np.float32) for i, name in enumerate(HOSTILE_NAMES)}
    (work / "m.nnu").write_bytes(nu.encode(model))
    assert main(["decode", str(work / "m.nnu"), str(work / target)]) == EXIT_OK
    assert _files(tmp_path) == {"work", "work/m.nnu", f"work/{target}"}
    back = checkpoint.load_tensors(work / target)
    assert list(back) == HOSTILE_NAMES or set(back) == set(HOSTILE_NAMES)
    for i, name in enumerate(HOSTILE_NAMES):
        assert np.asarray(back[name]).tolist() == [i, i]


def test_a_name_safetensors_reserves_is_refused_not_written_corrupt(tmp_path, capsys):
    (tmp_path / "m.nnu").write_bytes(nu.encode({"__metadata__": np.ones(2, np.float32)}))
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "o.safetensors")]) == EXIT_BAD_INPUT
    assert "__metadata__" in _one_line(capsys.readouterr().err)
    assert _files(tmp_path) == {"m.nnu"}
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "o.pt")]) == EXIT_OK
    assert set(torch.load(tmp_path / "o.pt", weights_only=True)) == {"__metadata__"}


def test_info_prints_names_with_control_characters_escaped(tmp_path, capsys):
    names = ["plain.weight", "\x1b[2J\x1b[31mred", "two\nlines", "tab\there", "ünïcode"]
    (tmp_path / "m.nnu").write_bytes(nu.encode({n: np.ones(1, np.float32) for n in names}))
    assert main(["info", str(tmp_path / "m.nnu")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\t" not in out
    # title, table header, one row per tensor, the model digest
    assert len(out.strip().splitlines()) == 3 + len(names)
    assert "ünïcode" in out and "\\x1b[2J" in out and "two\\nlines" in out


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_workers_must_be_a_whole_number_of_at_least_one(tmp_path, stream, workers):
    message = rf"^workers must be a whole number of at least 1, got {re.escape(repr(workers))}$"
    with pytest.raises(ValueError, match=message):
        nu.decode(stream.read_bytes(), workers=workers)
    with pytest.raises(ValueError, match=message):
        nu.encode_with_report({"w": np.ones((4, 4), np.float32)}, workers=workers)
    with pytest.raises(ValueError, match=message):
        nu.decode_to_file(stream, tmp_path / "o.safetensors", workers=workers)
    assert _files(tmp_path) == {stream.name}


def test_encode_file_into_a_folder_path_is_refused_for_what_it_is(tmp_path, stream):
    torch.save({"w": torch.ones(3, 3)}, tmp_path / "w.pt")
    (tmp_path / "out").mkdir()
    for target in (f"{tmp_path / 'new'}/", tmp_path / "out"):
        with pytest.raises(CheckpointError, match="the stream is one file; give its path, not a folder's"):
            encode_file(tmp_path / "w.pt", target, overwrite=True)
    assert _files(tmp_path) == {stream.name, "w.pt", "out"}


def test_file_names_that_are_not_utf8_or_hold_newlines_are_printed_escaped(tmp_path):
    """Under a UTF-8 locale (strict stdout), a name with bytes that are not UTF-8 raised
    UnicodeEncodeError in the summary, after the output was written; a newline in a name could
    fake a line of output."""
    import subprocess
    import sys

    from safetensors.numpy import save_file

    folder = os.fsencode(str(tmp_path))
    weights = os.path.join(folder, b"bad\xff.safetensors")
    save_file({"w": np.ones((4, 4), np.float32)}, weights.decode("utf-8", "surrogateescape"))
    environment = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    for argv in ([b"encode", weights, os.path.join(folder, b"bad\xff.nnu")],
                 [b"info", os.path.join(folder, b"bad\xff.nnu")],
                 [b"decode", os.path.join(folder, b"bad\xff.nnu"), os.path.join(folder, b"out\xff.safetensors")]):
        result = subprocess.run([os.fsencode(sys.executable), b"-m", b"nncodec_unify", *argv], capture_output=True,
                                env=environment, timeout=120)
        assert result.returncode == EXIT_OK and b"Traceback" not in result.stderr, result.stderr
        assert b"bad\\udcff" in result.stdout
    result = subprocess.run([sys.executable, "-m", "nncodec_unify", "info", str(tmp_path / "no\nnncodec: error: x")],
                            capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode != EXIT_OK and _one_line(result.stderr).startswith("nncodec: error: ")
    assert "no\\nnncodec: error: x" in result.stderr


def test_standard_output_that_is_the_input_file_is_refused(tmp_path, stream):
    """`- 1<> in` or `- >> in` would write over the input as it is read."""
    import subprocess
    import sys

    torch.save({"w": torch.ones(3, 3)}, tmp_path / "w.pt")
    kept = {path: path.read_bytes() for path in (tmp_path / "w.pt", stream)}
    for command, source in ((f"encode {tmp_path / 'w.pt'} - 1<> {tmp_path / 'w.pt'}", tmp_path / "w.pt"),
                            (f"decode {stream} - >> {stream}", stream)):
        result = subprocess.run(f"{sys.executable} -m nncodec_unify {command}", shell=True, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == EXIT_USAGE
        assert _one_line(result.stderr) == (f"nncodec: error: standard output is the input file {source}: give the "
                                            "output its own file")
    assert {path: path.read_bytes() for path in kept} == kept


def test_an_input_name_that_cannot_be_looked_up_says_why(tmp_path, capsys):
    """A loop of links or a name too long said "no such file"."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    long_name = str(tmp_path / ("y" * 300))
    for argv, reason in ((["decode", str(tmp_path / "a"), str(tmp_path / "o.safetensors")], "Too many levels"),
                         (["encode", str(tmp_path / "a"), str(tmp_path / "o.nnu")], "Too many levels"),
                         (["decode", long_name, str(tmp_path / "o.safetensors")], "File name too long"),
                         (["decode", str(tmp_path / "none.nnu"), str(tmp_path / "o.safetensors")], "no such file")):
        assert main(argv) == EXIT_IO
        assert reason in _one_line(capsys.readouterr().err)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        nu.decode_to_file(tmp_path / "a", tmp_path / "o.safetensors")
    assert _files(tmp_path) == {"a", "b"}


def test_a_full_disk_under_torch_save_is_named_as_such(tmp_path, stream, monkeypatch):
    """torch.save turned the write's ENOSPC into RuntimeError('unexpected pos ...')."""
    real_open = open

    class Full:
        def __init__(self, file):
            self._file, self._written = file, 0

        def write(self, data):
            self._written += len(data)
            if self._written > 100:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self._file.write(data)

        def __getattr__(self, name):
            return getattr(self._file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._file.close()

    monkeypatch.setattr(checkpoint, "open", lambda path, mode="r", *a, **k: Full(real_open(path, mode, *a, **k))
                        if mode == "wb" else real_open(path, mode, *a, **k), raising=False)
    with pytest.raises(OSError, match="No space left on device") as caught:
        decode_file(stream, tmp_path / "o.pt")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "o.pt")
    assert _files(tmp_path) == {stream.name}


@pytest.mark.parametrize("rate_control", [[], ["--target-size", "400"]])
def test_a_report_that_cannot_be_written_leaves_no_stream_either(tmp_path, monkeypatch, capsys, rate_control):
    """The report is written before the stream is committed (the stream was left behind when
    the report hit a full disk, with exit 3)."""
    from nncodec_unify import cli

    torch.save({"w": torch.randn(16, 16)}, tmp_path / "w.pt")

    def full(path, data, *, overwrite=False):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(cli, "write_bytes", full)
    assert main(["encode", "-q", str(tmp_path / "w.pt"), str(tmp_path / "w.nnu"), "--report", str(tmp_path / "r.json"),
                 *rate_control]) == EXIT_IO
    assert _one_line(capsys.readouterr().err) == f"nncodec: error: {tmp_path / 'r.json'}: No space left on device"
    assert _files(tmp_path) == {"w.pt"}


def test_a_pipe_that_is_not_a_stream_is_refused_at_its_first_bytes(tmp_path):
    """`decode - < /dev/zero` read until memory ran out: the file header is checked first."""
    import subprocess
    import sys

    with open("/dev/zero", "rb") as zeros:
        result = subprocess.run([sys.executable, "-m", "nncodec_unify", "decode", "-", str(tmp_path / "o.safetensors")],
                                stdin=zeros, capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_BAD_INPUT
    assert _one_line(result.stderr) == ("nncodec: error: -: invalid stream: magic at byte 0: not an nncodec_unify "
                                        "stream (bad magic number)")
    assert _files(tmp_path) == set()


def test_the_library_file_functions_name_the_stream_in_their_errors(tmp_path):
    """A batch of decode_to_file calls told which syntax element failed, not in which file."""
    import pickle

    bad = tmp_path / "bad.nnu"
    bad.write_bytes(b"not a stream at all")
    for decode in (nu.decode_to_file, decode_file):
        with pytest.raises(nu.BitstreamError) as caught:
            decode(bad, tmp_path / "o.safetensors")
        error = caught.value
        assert str(error) == f"{bad}: magic at byte 0: not an nncodec_unify stream (bad magic number)"
        assert (error.element, error.offset, error.source) == ("magic", 0, str(bad))
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
    assert _files(tmp_path) == {"bad.nnu"}


@pytest.mark.parametrize("rate_control", [[], ["--target-size", "400"]])
def test_a_stream_that_cannot_be_committed_takes_its_report_along(tmp_path, monkeypatch, capsys, rate_control):
    """The report is written before the stream is committed; when the commit itself fails (a
    rename refused), the report went on describing a stream that was not there."""
    from nncodec_unify.codec import checkpoint

    torch.save({"w": torch.randn(16, 16)}, tmp_path / "w.pt")

    real = checkpoint._rename_no_clobber

    def refused(temporary, path):  # the stream's rename only: the report is committed first
        if pathlib.Path(path).suffix == ".nnu":
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(temporary, path)

    monkeypatch.setattr(checkpoint, "_rename_no_clobber", refused)
    assert main(["encode", "-q", str(tmp_path / "w.pt"), str(tmp_path / "w.nnu"), "--report", str(tmp_path / "r.json"),
                 *rate_control]) == EXIT_IO
    assert _one_line(capsys.readouterr().err) == f"nncodec: error: {tmp_path / 'w.nnu'}: Permission denied"
    assert _files(tmp_path) == {"w.pt"}
