"""Decoding with worker processes (``workers=N``, ``nncodec decode --workers N``): the tensors,
their order and the errors (type, syntax element, byte offset) of one process."""

from __future__ import annotations

import concurrent.futures
import contextlib
from pathlib import Path

import numpy as np
import pytest

import nncodec_unify as nu
from nncodec_unify.cli import EXIT_OK, main
from nncodec_unify.codec import decoder
from nncodec_unify.codec.errors import BitstreamError

SUITE = Path(__file__).resolve().parents[1] / "conformance"


def outcome(data: bytes, workers: int):
    """What decoding gives: every tensor (name, dtype, bytes, alias), or the error."""
    try:
        model = nu.decode_tensors(data, workers=workers)
    except BitstreamError as exc:
        return type(exc).__name__, exc.element, exc.offset, str(exc)
    return [(t.name, t.dtype, t.array.dtype, t.array.shape, t.array.tobytes(), t.alias_of) for t in model.tensors]


@pytest.fixture
def thread_pool(monkeypatch):
    """Workers as threads: the scheduling of decoder._decoded_units without starting processes."""

    @contextlib.contextmanager
    def pool(workers):
        with concurrent.futures.ThreadPoolExecutor(workers) as executor:
            yield executor

    monkeypatch.setattr(decoder, "process_pool", pool)


@pytest.mark.parametrize("buffered", [decoder.BUFFERED_BYTES, 1])
def test_every_conformance_stream_decodes_in_workers_as_in_one_process(thread_pool, monkeypatch, buffered):
    """Valid streams give the same tensors in the same order; invalid ones the first error in
    stream order, even where a later unit is bad too (more tensors than declared, a dropped
    STREAM_END) or a worker is still decoding when the walk finds it. ``buffered`` 1: every
    finished tensor behind the head holds the walk back."""
    monkeypatch.setattr(decoder, "BUFFERED_BYTES", buffered)
    streams = sorted(SUITE.glob("*/*.nnu"))
    assert len(streams) > 300
    for path in streams:
        data = path.read_bytes()
        assert outcome(data, 3) == outcome(data, 1), path.name


def test_worker_processes_report_payload_errors_where_one_process_does(tmp_path):
    """Real processes: an error inside a tensor payload crosses back with its syntax element
    and its offset in the file (the worker reads only the payload); the CLI's safetensors
    output is byte for byte that of one process, tied weights included."""
    for name in ("sign-padding", "v4-content-digest-bit-flipped", "raw-bits-padding"):
        (path,) = SUITE.glob(f"invalid/[0-9][0-9][0-9]-{name}.nnu")
        expected = outcome(path.read_bytes(), 1)
        assert expected[0] != "ok" and outcome(path.read_bytes(), 2) == expected
    rng = np.random.default_rng(1)
    weights = {f"layer{i}.weight": rng.laplace(0, 0.02, size=(64, 96)).astype(np.float32) for i in range(5)}
    weights["head.weight"] = weights["layer0.weight"]  # tied: coded once, restored under both names
    weights["steps"] = np.arange(7, dtype=np.int64)
    stream = tmp_path / "m.nnu"
    stream.write_bytes(nu.encode(weights))
    for workers in ("1", "2"):
        assert main(["decode", "-q", "--workers", workers, str(stream), str(tmp_path / f"w{workers}.safetensors")]) \
            == EXIT_OK
    assert (tmp_path / "w1.safetensors").read_bytes() == (tmp_path / "w2.safetensors").read_bytes()
    decoded, alone = nu.decode(stream.read_bytes(), workers=2), nu.decode(stream.read_bytes())
    assert list(decoded) == list(alone) and sorted(decoded) == sorted(weights)
    assert all(np.array_equal(decoded[name], alone[name]) for name in alone)
    assert decoded["head.weight"] is decoded["layer0.weight"]


def test_a_consumer_that_stops_early_leaves_no_work_running(thread_pool, monkeypatch):
    """Closing the iterator after the first tensor cancels what was queued: no more than two
    tensors per worker were ever taken up, not all twelve."""
    rng = np.random.default_rng(2)
    data = nu.encode({f"t{i}": rng.normal(size=(32, 32)).astype(np.float32) for i in range(12)})
    started = []
    real = decoder._decode_payload

    def counted(*args):
        started.append(args[2].name)
        return real(*args)

    monkeypatch.setattr(decoder, "_decode_payload", counted)
    tensors = decoder.iter_decoded(data, workers=2)
    assert next(tensors).name == "t0"
    tensors.close()
    assert 1 <= len(started) <= 1 + 2 * 2


def test_a_worker_that_dies_is_one_line_and_no_output(tmp_path, monkeypatch, capsys):
    """A worker killed (the system out of memory) breaks the pool: the CLI says so in one
    line, with an I/O exit status, and leaves no file."""
    from concurrent.futures.process import BrokenProcessPool

    from nncodec_unify import cli

    stream = tmp_path / "m.nnu"
    stream.write_bytes(nu.encode({"w": np.ones((4, 4), np.float32)}))

    def broken(*args, **kwargs):
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    monkeypatch.setattr(cli, "decode_to_safetensors", broken)
    assert main(["decode", "--workers", "2", str(stream), str(tmp_path / "out.safetensors")]) == cli.EXIT_IO
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "worker process ended abruptly" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnu"]
