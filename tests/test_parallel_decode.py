"""Decoding at scale: worker processes (``workers=N``, ``nncodec decode --workers N``) give the
tensors, their order and the errors (type, syntax element, byte offset) of one process; a
memory-mapped stream decodes as its bytes and is let go unit by unit."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import nncodec_unify as nu
from nncodec_unify.cli import EXIT_BAD_INPUT, EXIT_OK, main
from nncodec_unify.codec import decoder, workers
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
    """Workers as threads: the scheduling of decoder._decoded_units without starting processes.
    The mappings the "workers" make of stream files are closed afterwards (a worker process's
    go with it; here they would pile up in the test process, a descriptor each)."""
    from nncodec_unify.codec import memory

    @contextlib.contextmanager
    def pool(workers):
        with concurrent.futures.ThreadPoolExecutor(workers) as executor:
            yield executor

    monkeypatch.setattr(decoder, "process_pool", pool)
    monkeypatch.setattr(memory, "_MAPPED", {})
    yield
    for mapping in memory._MAPPED.values():
        with contextlib.suppress(BufferError):  # a test may still hold a view of it
            mapping.close()


@pytest.mark.parametrize("buffered, spill_bytes", [(decoder.BUFFERED_BYTES, workers.SPILL_BYTES), (1, 1)])
def test_every_conformance_stream_decodes_in_workers_as_in_one_process(thread_pool, monkeypatch, buffered,
                                                                       spill_bytes):
    """Valid streams give the same tensors in the same order; invalid ones the first error in
    stream order, even where a later unit is bad too (more tensors than declared, a dropped
    STREAM_END) or a worker is still decoding when the walk finds it. ``buffered`` 1: every
    finished tensor behind the head holds the walk back; ``spill_bytes`` 1: every array comes
    back through a file."""
    monkeypatch.setattr(decoder, "BUFFERED_BYTES", buffered)
    monkeypatch.setattr(workers, "SPILL_BYTES", spill_bytes)
    streams = sorted(SUITE.glob("*/*.nnu"))
    assert len(streams) > 300
    for path in streams:
        data = path.read_bytes()
        assert outcome(data, 3) == outcome(data, 1), path.name


def with_bad_digests(data: bytes, which: set[int]) -> bytes:
    """``data`` with the content digest of the tensor units numbered in ``which`` altered and
    their unit CRCs recomputed: the walk accepts them, the tensors' own checks do not."""
    import struct
    import zlib

    from nncodec_unify.codec.bitio import ByteReader
    from nncodec_unify.codec.format import DEFAULT_LIMITS, UnitType
    from nncodec_unify.codec.syntax import read_file_header, read_tensor_header, read_unit

    out = bytearray(data)
    reader = ByteReader(data)
    major = read_file_header(reader).version_major
    index = 0
    while reader.remaining:
        unit = read_unit(reader, data)
        if unit.unit_type == UnitType.TENSOR:
            end = unit.payload_offset + unit.payload_length
            header = read_tensor_header(ByteReader(data, unit.payload_offset, end), DEFAULT_LIMITS, major)
            if index in which:
                out[header.digest_offset] ^= 1
                struct.pack_into("<I", out, end, zlib.crc32(bytes(out[unit.offset:end])))
            index += 1
    return bytes(out)


def consumed(data: bytes, workers: int) -> tuple[list[str], object]:
    """The names iter_decoded yields before it raises, and the error."""
    names = []
    try:
        for tensor in decoder.iter_decoded(data, workers=workers):
            names.append(tensor.name)
    except BitstreamError as exc:
        return names, (type(exc).__name__, exc.element, exc.offset, str(exc))
    return names, None


@pytest.mark.parametrize("bad", [{0, 1}, {2}, {2, 5}, {7}])
def test_the_first_bad_tensor_stops_the_decode_as_in_one_process(thread_pool, bad):
    """Regression (review): a worker's error was taken for the walk's, so later tensors were
    still yielded and a later tensor's error could be the one raised."""
    rng = np.random.default_rng(4)
    data = nu.encode({f"t{i}": rng.normal(size=(48, 48)).astype(np.float32) for i in range(8)})
    broken = with_bad_digests(data, bad)
    names, error = consumed(broken, 1)
    assert error is not None and names == [f"t{i}" for i in range(min(bad))]
    assert consumed(broken, 3) == (names, error)


def test_worker_processes_report_payload_errors_where_one_process_does(tmp_path, capsys):
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
    for count in ("1", "2"):
        assert main(["decode", "-q", "--workers", count, str(stream), str(tmp_path / f"w{count}.safetensors")]) \
            == EXIT_OK
    assert (tmp_path / "w1.safetensors").read_bytes() == (tmp_path / "w2.safetensors").read_bytes()
    (tmp_path / "bad.nnu").write_bytes(with_bad_digests(stream.read_bytes(), {2, 4}))
    for count in ("1", "2"):  # the same one line (safetensors output checks the framing first), no file
        assert main(["decode", "-q", "--workers", count, str(tmp_path / "bad.nnu"), str(tmp_path / "bad.safetensors")]) \
            == EXIT_BAD_INPUT
        assert not (tmp_path / "bad.safetensors").exists()
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and errors[0] == errors[1] and "invalid stream" in errors[0]
    decoded, alone = nu.decode(stream.read_bytes(), workers=2), nu.decode(stream.read_bytes())
    assert list(decoded) == list(alone) and sorted(decoded) == sorted(weights)
    assert all(np.array_equal(decoded[name], alone[name]) for name in alone)
    assert decoded["head.weight"] is decoded["layer0.weight"]


def test_a_consumer_that_stops_early_leaves_no_work_running(thread_pool, monkeypatch):
    """Closing the iterator after the first tensor cancels what was queued: far from all
    forty tensors were ever taken up (two per worker running, and the finished ones behind
    the head, before the first tensor came out)."""
    rng = np.random.default_rng(2)
    data = nu.encode({f"t{i}": rng.normal(size=(32, 32)).astype(np.float32) for i in range(40)})
    started = []
    real = decoder._decode_payload

    def counted(*args):
        started.append(args[2].name)
        return real(*args)

    monkeypatch.setattr(decoder, "_decode_payload", counted)
    tensors = decoder.iter_decoded(data, workers=2)
    assert next(tensors).name == "t0"
    tensors.close()
    assert 1 <= len(started) < 20


def test_a_worker_that_dies_is_one_line_and_no_output(tmp_path, monkeypatch, capsys):
    """A worker killed (the system out of memory) breaks the pool: the CLI says so in one
    line, with an I/O exit status, and leaves no file."""
    from concurrent.futures.process import BrokenProcessPool

    from nncodec_unify import cli
    from nncodec_unify.codec import checkpoint

    stream = tmp_path / "m.nnu"
    stream.write_bytes(nu.encode({"w": np.ones((4, 4), np.float32)}))

    def broken(*args, **kwargs):
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    monkeypatch.setattr(checkpoint, "decode_to_safetensors", broken)
    assert main(["decode", "--workers", "2", str(stream), str(tmp_path / "out.safetensors")]) == cli.EXIT_IO
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "worker process ended abruptly" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnu"]


def test_no_folder_is_completed_once_a_termination_signal_was_recorded(tmp_path, monkeypatch):
    """Regression (review): decode_to_folder moved its staging folder into place without
    asking whether a SIGTERM had been received (its exception lost in a finalizer)."""
    from nncodec_unify.codec import termination
    from nncodec_unify.codec.checkpoint import decode_to_folder

    data = nu.encode({"w": np.ones((4, 4), np.float32)})
    monkeypatch.setattr(termination, "_received", 15)
    with pytest.raises(termination.Terminated):
        decode_to_folder(data, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_progress_counts_the_tensors_as_they_come_out_of_the_workers(thread_pool):
    """With workers, progress(done, total, name) follows the tensors yielded, in order, once
    each (aliases are not tensors of their own), as one process reports them."""
    rng = np.random.default_rng(6)
    weights = {f"t{i}": rng.normal(size=(16, 16)).astype(np.float32) for i in range(9)}
    weights["tied"] = weights["t3"]
    data = nu.encode(weights)
    seen = {1: [], 3: []}
    for count, calls in seen.items():
        names = [t.name for t in decoder.iter_decoded(data, workers=count,
                                                       progress=lambda *call, calls=calls: calls.append(call))]
    assert seen[3] == seen[1] == [(i, 9, f"t{i}") for i in range(9)]
    assert "tied" in names


def test_workers_start_single_threaded_and_leave_the_callers_environment_alone(monkeypatch):
    """The BLAS thread variables reach the worker processes (set while a job is submitted,
    when the pool starts them), not the caller's environment while an iterator is paused."""
    import os

    from nncodec_unify.codec.workers import _THREAD_VARIABLES, process_pool

    for name in _THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with process_pool(1) as pool:
        seen = pool.submit(os.getenv, "OPENBLAS_NUM_THREADS").result()
        assert seen == "1" and not any(name in os.environ for name in _THREAD_VARIABLES)


def _sigint_state():
    """In a worker: whether SIGINT is blocked, and its handler."""
    import signal

    return signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []), signal.getsignal(signal.SIGINT)


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_sigmask"), reason="POSIX signal masks")
def test_workers_are_born_with_ctrl_c_held_back_and_then_die_of_it_quietly():
    """A Ctrl-C during a worker's start-up (its imports) printed a KeyboardInterrupt traceback
    from the worker: SIGINT is blocked while workers are started, so they inherit it blocked,
    and each unblocks it with the default action once started. The caller's mask is restored."""
    import signal

    from nncodec_unify.codec.workers import _child_environment, process_pool

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with _child_environment():
        assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    with process_pool(1) as pool:
        assert pool.submit(_sigint_state).result() == (False, signal.SIG_DFL)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_leaving_the_pool_on_an_error_stops_the_running_jobs_instead_of_waiting_for_them():
    """A failed tensor, Ctrl-C or SIGTERM leaves the pool at once: the workers are terminated
    rather than left to finish their tensors (seconds for a large one), and none is left
    running."""
    import signal
    import time

    from nncodec_unify.codec.workers import _processes_of, process_pool

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="stop"):
        with process_pool(2) as pool:
            jobs = [pool.submit(time.sleep, 120) for _ in range(2)]
            time.sleep(0.5)
            processes = _processes_of(pool._executor)
            raise RuntimeError("stop")
    assert time.monotonic() - started < 60  # not the 120 s the jobs would take
    assert len(processes) == 2
    for process in processes:
        process.join(10)
        assert process.exitcode == -signal.SIGTERM
    assert all(job.done() for job in jobs)


def test_leaving_the_pool_does_not_hang_on_a_result_cut_short(tmp_path):
    """A worker terminated while it sends a result leaves the message cut short; the
    executor's reader must get end-of-file, not wait for the rest for ever (which would hang
    the process at exit). Here the worker writes the first bytes of a 1 GiB message and stops."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "cut_short.py"
    script.write_text(textwrap.dedent("""
        import gc, multiprocessing.queues, os, struct, time
        from nncodec_unify.codec.workers import process_pool

        def cut_short():
            queue = next(o for o in gc.get_objects() if type(o) is multiprocessing.queues.SimpleQueue)
            os.write(queue._writer.fileno(), struct.pack("!i", 1 << 30) + b"x" * 100)
            time.sleep(600)

        if __name__ == "__main__":
            try:
                with process_pool(1) as pool:
                    pool.submit(cut_short)
                    time.sleep(3)  # the reader has the header and waits for the rest
                    raise RuntimeError("stop")
            except RuntimeError:
                print("left the pool", flush=True)
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "left the pool\n", result.stderr


def test_spill_folder_is_none_where_no_temporary_folder_can_be_made(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with workers.spill_folder() as folder:
        assert folder is None
    model = {f"w{i}": np.full((600, 512), i / 7, np.float32) for i in range(3)}
    data = nu.encode(model)
    assert [a.tobytes() for a in nu.decode(data, workers=2).values()] == [a.tobytes() for a in nu.decode(data).values()]


def test_large_tensors_come_back_from_real_workers_through_files_that_are_removed(tmp_path, monkeypatch):
    """A tensor of 1 MiB or more comes back through a file of a private temporary folder: the
    same values, writable, one array for a tensor and its alias, and nothing left behind."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rng = np.random.default_rng(8)
    shared = rng.normal(0, 0.05, size=(512, 1024)).astype(np.float32)  # 2 MiB
    model = {"a": shared, "tied": shared, "small": rng.normal(size=64).astype(np.float32),
             "b": rng.normal(0, 0.05, size=(600, 512)).astype(np.float32)}
    data = nu.encode(model)
    expected = nu.decode(data)
    decoded = nu.decode(data, workers=2)
    assert list(decoded) == list(expected)
    for name, array in expected.items():
        assert decoded[name].dtype == array.dtype and decoded[name].tobytes() == array.tobytes()
    assert decoded["tied"] is decoded["a"]
    decoded["b"][0, 0] += 1  # the caller's own array
    assert decoded["b"][0, 0] == expected["b"][0, 0] + 1
    assert list(tmp_path.iterdir()) == []


def test_spilling_falls_back_to_the_pipe_and_a_lost_file_is_an_os_error(tmp_path):
    array = np.arange(1 << 19, dtype=np.float32)  # 2 MiB
    assert workers.spill(array, str(tmp_path / "missing")) is array  # e.g. a full disk: sent as it is
    small, strided = array[:10], array[::2]  # too small to pay; not one block of memory
    assert workers.spill(small, str(tmp_path)) is small and workers.spill(strided, str(tmp_path)) is strided
    assert list(tmp_path.iterdir()) == []
    spilled = workers.spill(array, str(tmp_path))
    assert isinstance(spilled, workers.SpilledArray)
    assert np.array_equal(workers.unspill(spilled), array) and list(tmp_path.iterdir()) == []
    with pytest.raises(OSError):
        workers.unspill(spilled)


def mapped(path: Path):
    """A read-only mapping of the file at ``path``, as the CLI makes for large streams."""
    from nncodec_unify.codec.memory import map_file

    with open(path, "rb") as file:
        return map_file(file)


def test_a_mapped_stream_decodes_as_its_bytes(thread_pool):
    """The CLI maps streams of 32 MiB and more instead of reading them: every conformance
    stream gives the same tensors or the same error from a mapping, in one process and in
    workers."""
    for path in sorted(SUITE.glob("*/*.nnu")):
        if path.stat().st_size == 0:  # nothing to map (the CLI reads small files anyway)
            continue
        data = path.read_bytes()
        assert outcome(mapped(path), 1) == outcome(data, 1), path.name
    path = SUITE / "valid" / "003-dense-tiny.nnu"
    assert outcome(mapped(path), 3) == outcome(path.read_bytes(), 1)


def test_workers_map_large_payloads_of_a_stream_file_themselves(thread_pool, monkeypatch):
    """From a mapped stream file, a worker gets where a large payload's unit is (a reference
    of a few hundred bytes, and the CRC-32 the parent checked), not its bytes, and maps it
    itself: every conformance stream gives the tensors, or the error, of one process."""
    from nncodec_unify.codec.memory import MappedSlice

    monkeypatch.setattr(decoder, "MAPPED_PAYLOAD_BYTES", 1)  # every payload by reference
    sent = []
    real = decoder._decode_payload

    def recording(payload, *rest):
        if isinstance(payload, decoder._CheckedUnit):
            sent.append(type(payload.source))
        else:
            sent.append("empty" if not len(payload) else bytes)
        return real(payload, *rest)

    monkeypatch.setattr(decoder, "_decode_payload", recording)
    for path in sorted(SUITE.glob("*/*.nnu")):
        if path.stat().st_size:
            assert outcome(mapped(path), 2) == outcome(path.read_bytes(), 1), path.name
    assert MappedSlice in sent and set(sent) <= {MappedSlice, "empty"}  # an empty payload is no use to map
    sent.clear()
    outcome((SUITE / "valid" / "003-dense-tiny.nnu").read_bytes(), 2)  # bytes, not a file: the bytes are sent
    assert sent and set(sent) == {bytes}


@pytest.fixture
def before_first_job(monkeypatch):
    """``before_first_job(action)``: ``action()`` runs once, as the first worker job starts
    (workers are threads here: the thread_pool fixture), every payload going by reference."""
    monkeypatch.setattr(decoder, "MAPPED_PAYLOAD_BYTES", 1)
    real = decoder._decode_payload

    def install(action) -> None:
        once = threading.Lock()

        def first_changes(payload, *rest):
            if once.acquire(blocking=False):
                action()
            return real(payload, *rest)

        monkeypatch.setattr(decoder, "_decode_payload", first_changes)

    return install


def test_a_stream_file_written_in_place_while_workers_decode_it_is_found(tmp_path, thread_pool, before_first_job):
    """Bytes a worker maps are checked against the CRC-32 the parent checked: a stream file
    written in place meanwhile (the same size, even with its modification time put back) is
    refused, naming the file, never decoded from the new bytes."""
    from nncodec_unify.codec.memory import FileChangedError

    path = tmp_path / "m.nnu"
    path.write_bytes(nu.encode({"w": np.linspace(-1, 1, 600, dtype=np.float32).reshape(20, 30)}))
    stream = mapped(path)

    def write_one_byte() -> None:
        status = os.stat(path)
        with open(path, "r+b") as file:  # one byte of the coded data, the CRC left as it was
            file.seek(len(stream) // 2)  # inside the tensor unit, the largest
            byte = file.read(1)
            file.seek(-1, os.SEEK_CUR)
            file.write(bytes([byte[0] ^ 0xFF]))
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))

    before_first_job(write_one_byte)
    with pytest.raises(FileChangedError, match="changed while it was decoded") as caught:
        nu.decode_tensors(stream, workers=2)
    assert caught.value.filename == str(path)


@pytest.mark.parametrize("verify", [True, False])
def test_a_stream_file_overwritten_with_another_valid_stream_is_not_decoded_from_it(tmp_path, thread_pool,
                                                                                     before_first_job, verify):
    """`cp other.nnu m.nnu` while workers decode m.nnu: the same inode, new bytes with valid
    CRCs. The worker cannot map the file as it was; the unit's bytes the parent then sends
    are checked against the CRC it checked at first, not the new one: the file is named, no
    tensor of the other stream comes back (nor a content-digest error blaming the stream)."""
    from nncodec_unify.codec.memory import FileChangedError

    weights = np.linspace(-1, 1, 600, dtype=np.float32).reshape(20, 30)
    first, other = nu.encode({"w": weights}), nu.encode({"w": -weights})
    assert len(first) == len(other)
    path = tmp_path / "m.nnu"
    path.write_bytes(first)
    stream = mapped(path)

    def overwrite() -> None:
        with open(path, "r+b") as file:  # in place, never shorter: a mapping of a truncated file faults
            file.write(other)

    before_first_job(overwrite)
    with pytest.raises(FileChangedError, match="changed while it was decoded") as caught:
        nu.decode_tensors(stream, workers=2, verify=verify)
    assert caught.value.filename == str(path)


@pytest.mark.parametrize("change", ["replace", "unlink", "touch"])
def test_a_stream_file_moved_or_replaced_while_workers_decode_it_decodes_from_the_parents_mapping(
        tmp_path, thread_pool, before_first_job, change):
    """A worker that cannot map the file the parent mapped (replaced, removed, its time
    changed) gets the unit's bytes from the parent instead, as one process would decode it."""
    weights = {f"w{i}": np.linspace(-i, 1, 600, dtype=np.float32).reshape(20, 30) for i in range(3)}
    path = tmp_path / "m.nnu"
    path.write_bytes(nu.encode(weights))
    stream = mapped(path)

    def replace() -> None:
        (tmp_path / "other.nnu").write_bytes(nu.encode({"x": np.zeros(3, np.float32)}))
        os.replace(tmp_path / "other.nnu", path)

    before_first_job({"replace": replace, "unlink": path.unlink, "touch": lambda: os.utime(path, ns=(0, 0)),
                      }[change])
    decoded = nu.decode_tensors(stream, workers=2)
    assert [t.name for t in decoded.tensors] == list(weights)
    for tensor in decoded.tensors:
        assert np.abs(tensor.array - weights[tensor.name]).max() < 1e-2


def test_a_mapped_stream_is_let_go_unit_by_unit(tmp_path):
    """Decoding a mapped stream leaves little of it resident (Linux's /proc/self/smaps counts
    a mapping's pages): each unit's pages are dropped once it is read, so a stream of
    gigabytes costs its largest unit, not its size."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        pytest.skip("no /proc/self/smaps here")
    rng = np.random.default_rng(7)
    weights = {f"t{i}": rng.normal(size=(1024, 1024)).astype(np.float32) for i in range(8)}  # 32 MiB, RAW
    from nncodec_unify.codec.config import EncoderConfig, TensorRule
    from nncodec_unify.codec.format import CodingMode

    path = tmp_path / "raw.nnu"
    path.write_bytes(nu.encode(weights, config=EncoderConfig(rules=(TensorRule("*", mode=CodingMode.RAW),))))
    stream = mapped(path)
    for tensor in decoder.iter_decoded(stream):
        assert np.array_equal(tensor.array, weights[tensor.name])
    start = np.frombuffer(stream, dtype=np.uint8, count=1).ctypes.data
    resident_kib = None
    for line in smaps.read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
            low, high = (int(x, 16) for x in fields[0].split("-"))
            inside = low <= start < high
        elif inside and fields[0] == "Rss:":
            resident_kib = int(fields[1])
            break
    assert resident_kib is not None and resident_kib < 4 * 1024, resident_kib  # of 32 MiB


def test_the_cli_and_decode_file_map_large_streams(tmp_path, monkeypatch):
    """With the threshold at one byte every stream file is mapped: decode, verify, info and
    nu.decode_file give what they give from the stream's bytes."""
    from nncodec_unify.codec import checkpoint

    rng = np.random.default_rng(8)
    stream = tmp_path / "m.nnu"
    stream.write_bytes(nu.encode({f"t{i}": rng.normal(size=(40, 30)).astype(np.float32) for i in range(3)}))
    assert main(["decode", "-q", str(stream), str(tmp_path / "read.safetensors")]) == EXIT_OK
    monkeypatch.setattr(checkpoint, "MAP_STREAMS_FROM", 1)
    assert not isinstance(checkpoint.read_stream(tmp_path / "read.safetensors"), bytes)
    assert main(["decode", "-q", str(stream), str(tmp_path / "mapped.safetensors")]) == EXIT_OK
    assert (tmp_path / "read.safetensors").read_bytes() == (tmp_path / "mapped.safetensors").read_bytes()
    assert main(["verify", "-q", str(stream)]) == EXIT_OK and main(["info", str(stream)]) == EXIT_OK
    decoded = nu.decode_file(stream, tmp_path / "m.npz")
    assert [t.name for t in decoded.tensors] == ["t0", "t1", "t2"]


@pytest.mark.parametrize("scale, narrowed", [(0.05, True), (3e4, False)])
def test_float16_tensors_decode_through_int16_levels_where_they_fit(monkeypatch, scale, narrowed):
    """A float16 tensor's dense levels are decoded as int16 when the plane's tables bound them
    below 2**15 (a 128 MiB float16 tensor decodes at 335 MiB instead of 462), else as int32;
    the values are those of int32 levels either way."""
    from nncodec_unify.codec import planes
    from nncodec_unify.codec.config import EncoderConfig

    rng = np.random.default_rng(9)
    values = np.clip(rng.laplace(0, scale, size=(300, 200)), -6e4, 6e4).astype(np.float16)
    data = nu.encode({"h": values}, config=EncoderConfig(qp=-24))
    real = planes.decode_plane
    kinds = []

    def spied(*args, **kwargs):
        result = real(*args, **kwargs)
        kinds.append((args[6], result.dtype))
        return result

    monkeypatch.setattr(decoder, "decode_plane", spied)
    narrow = nu.decode(data)["h"]
    assert (("dense_levels", np.dtype(np.int16)) in kinds) == narrowed
    monkeypatch.setattr(decoder, "decode_plane", lambda *args: real(*args[:7]))  # never narrowed
    wide = nu.decode(data)["h"]
    assert narrow.dtype == np.float16 and narrow.tobytes() == wide.tobytes()
    assert np.allclose(narrow.astype(np.float64), values.astype(np.float64), rtol=0.02, atol=2 ** -5)


@pytest.mark.parametrize("unified_level, dense_scale, narrowed", [(3, 0.05, True), (3, 1e3, False), (2 ** 16, 0.05, False)])
def test_structured_float16_tensors_decode_through_int16_levels_where_they_fit(monkeypatch, unified_level, dense_scale,
                                                                                narrowed):
    """A float16 tensor with pruned and unified blocks holds int16 levels while its unified
    magnitudes and its dense plane's bound stay below 2**15; a dense plane that may reach it
    widens them, a unified magnitude that does keeps int32 throughout. The values are those
    of int32 levels every time."""
    from nncodec_unify.codec import planes
    from nncodec_unify.codec.config import EncoderConfig, TensorRule
    from nncodec_unify.codec.format import CodingMode

    rng = np.random.default_rng(10)
    step = 2.0 ** -6  # qp -24
    blocks = rng.integers(0, 3, size=(16, 16))  # 0 pruned, 1 unified, 2 dense (4x4 blocks)
    kinds = np.kron(blocks, np.ones((4, 4), dtype=int))
    signs = rng.choice([-1.0, 1.0], size=kinds.shape)
    dense = np.clip(np.rint(rng.laplace(0, dense_scale / step, size=kinds.shape)), -6e4 / step, 6e4 / step) * step
    values = np.where(kinds == 1, signs * unified_level * step, np.where(kinds == 2, dense, 0.0)).astype(np.float16)
    config = EncoderConfig(qp=-24, rdo=False, dependent=False, block=(4, 4),
                           rules=(TensorRule("h", mode=CodingMode.UNIFIED),))
    data = nu.encode({"h": values}, config=config)
    pruned, unified, dense_blocks = decoder.describe(data, with_blocks=True)[1][0].block_counts
    assert min(pruned, unified, dense_blocks) > 40  # about a third of the 256 blocks each
    real = planes.decode_plane
    dtypes = {}

    def spied(*args, **kwargs):
        result = real(*args, **kwargs)
        dtypes[args[6]] = result.dtype
        return result

    monkeypatch.setattr(decoder, "decode_plane", spied)
    narrow = nu.decode(data)["h"]
    assert "unified_magnitudes" in dtypes and (dtypes["dense_levels"] == np.int16) == narrowed
    monkeypatch.setattr(decoder, "decode_plane", lambda *args: real(*args[:7]))  # never narrowed
    wide = nu.decode(data)["h"]
    assert narrow.dtype == np.float16 and narrow.tobytes() == wide.tobytes() and np.array_equal(narrow, values)


@pytest.mark.parametrize("piece", [decoder._PIECE, 512])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_unified_blocks_are_filled_a_piece_of_block_rows_at_a_time(monkeypatch, piece, dtype):
    """The unified levels are written whole block rows at a time (``piece`` 512: one block
    row per piece), edge blocks cut by the matrix included; the levels matrix is the dense
    plane's working space first. Values on the grid come back exactly."""
    from nncodec_unify.codec.config import EncoderConfig, TensorRule
    from nncodec_unify.codec.format import CodingMode

    monkeypatch.setattr(decoder, "_PIECE", piece)
    rng = np.random.default_rng(12)
    step = 2.0 ** -6
    blocks = rng.integers(0, 3, size=(10, 8))  # 4x3 blocks over 37 x 23: edge blocks on both sides
    kinds = np.repeat(np.repeat(blocks, 4, axis=0), 3, axis=1)[:37, :23]
    magnitudes = np.repeat(np.repeat(rng.integers(1, 9, size=blocks.shape), 4, axis=0), 3, axis=1)[:37, :23]
    unified = rng.choice([-1, 1], size=kinds.shape) * magnitudes
    dense = rng.integers(-40, 41, size=kinds.shape)
    values = (np.where(kinds == 1, unified, np.where(kinds == 2, dense, 0)) * step).astype(dtype)
    config = EncoderConfig(qp=-24, rdo=False, dependent=False, block=(4, 3),
                           rules=(TensorRule("w", mode=CodingMode.UNIFIED),))
    data = nu.encode({"w": values}, config=config)
    pruned, unified_blocks, dense_blocks = decoder.describe(data, with_blocks=True)[1][0].block_counts
    assert min(pruned, unified_blocks, dense_blocks) > 10
    decoded = nu.decode(data)["w"]
    assert decoded.dtype == dtype and np.array_equal(decoded, values)


def test_a_float16_tensor_of_pruned_and_unified_blocks_only_keeps_int16_levels(monkeypatch):
    """No dense block: the empty dense plane does not widen the int16 levels."""
    from nncodec_unify.codec.config import EncoderConfig, TensorRule
    from nncodec_unify.codec.format import CodingMode

    rng = np.random.default_rng(14)
    kinds = np.repeat(np.repeat(rng.integers(0, 2, size=(16, 16)), 4, axis=0), 4, axis=1)  # pruned or unified
    values = (np.where(kinds == 1, rng.choice([-5.0, 5.0], size=kinds.shape), 0.0) * 2.0 ** -6).astype(np.float16)
    config = EncoderConfig(qp=-24, rdo=False, dependent=False, block=(4, 4),
                           rules=(TensorRule("h", mode=CodingMode.UNIFIED),))
    data = nu.encode({"h": values}, config=config)
    seen = []
    real = decoder._Levels.values

    def spied(self, step, dtype):
        seen.append(self.levels.dtype)
        return real(self, step, dtype)

    monkeypatch.setattr(decoder._Levels, "values", spied)
    decoded = nu.decode(data)["h"]
    assert seen == [np.dtype(np.int16)] and np.array_equal(decoded, values)


def _large_mixed_model():
    """Tensors of 1 MiB and more (float32, bfloat16, float16, tied under two names) between
    small ones, in an order that makes the parent write some and skip others."""
    from nncodec_unify.codec.tensors import BFloat16Array


    rng = np.random.default_rng(11)
    shared = rng.normal(0, 0.05, size=(512, 1024)).astype(np.float32)  # 2 MiB
    bfloat = rng.normal(0, 0.05, size=(600, 512)).astype(np.float32)
    return {"small0": rng.normal(size=7).astype(np.float32),
            "emb": shared, "bf": BFloat16Array((bfloat.view(np.uint32) >> 16).astype(np.uint16)),
            "scalar": np.float32(3.0).reshape(()), "half": rng.normal(0, 0.1, size=(1024, 600)).astype(np.float16),
            "head": shared, "small1": np.arange(5, dtype=np.int64)}


def test_workers_write_large_tensors_into_the_safetensors_output_themselves(tmp_path, thread_pool, monkeypatch):
    """With a regular safetensors file as the output, workers write each large tensor (and
    its alias) at its place in the file; the parent writes only the small ones, and the
    file is byte for byte the one-process file."""
    from nncodec_unify.codec import checkpoint

    stream = tmp_path / "m.nnu"
    stream.write_bytes(nu.encode(_large_mixed_model()))
    written = []
    original = decoder.write_tensor_at

    def recording(places, array, dtype, **options):
        written.append((len(places), array.nbytes))
        return original(places, array, dtype, **options)

    monkeypatch.setattr(decoder, "write_tensor_at", recording)
    checkpoint.decode_to_safetensors(stream.read_bytes(), tmp_path / "one.safetensors", workers=1)
    assert written == []
    checkpoint.decode_to_safetensors(stream.read_bytes(), tmp_path / "two.safetensors", workers=2)
    assert sorted(written) == sorted([(2, 2 << 20), (1, 600 * 512 * 4), (1, 1024 * 600 * 2)])
    assert (tmp_path / "two.safetensors").read_bytes() == (tmp_path / "one.safetensors").read_bytes()


def test_real_workers_write_into_the_output_and_a_pipe_gets_every_byte_from_the_parent(tmp_path, monkeypatch):
    """The same through the CLI with real processes, from the stream's bytes and from a
    mapped stream file (whose large payloads the workers map themselves), and on stdout (no
    positional writes into a pipe: the parent writes everything)."""
    import subprocess
    import sys

    from nncodec_unify.codec import checkpoint

    stream = tmp_path / "m.nnu"
    stream.write_bytes(nu.encode(_large_mixed_model()))
    for workers_option in ("1", "2"):
        assert main(["decode", "-q", "--workers", workers_option, str(stream),
                     str(tmp_path / f"w{workers_option}.safetensors")]) == EXIT_OK
    expected = (tmp_path / "w1.safetensors").read_bytes()
    assert (tmp_path / "w2.safetensors").read_bytes() == expected
    monkeypatch.setattr(checkpoint, "MAP_STREAMS_FROM", 1)
    monkeypatch.setattr(decoder, "MAPPED_PAYLOAD_BYTES", 1)
    assert main(["decode", "-q", "--workers", "2", str(stream), str(tmp_path / "mapped.safetensors")]) == EXIT_OK
    assert (tmp_path / "mapped.safetensors").read_bytes() == expected
    piped = subprocess.run([sys.executable, "-m", "nncodec_unify", "decode", "-q", "--workers", "2", str(stream), "-"],
                           capture_output=True, check=True, timeout=120)
    assert piped.stdout == expected


@pytest.mark.parametrize("max_shard_bytes", [10**9, 3 << 20])
def test_workers_write_large_tensors_into_a_folders_files_and_shards(tmp_path, thread_pool, monkeypatch,
                                                                     max_shard_bytes):
    """A model folder, whole or in shards (an alias in another shard than its tensor): every
    shard exists with its header before any tensor is decoded, workers write the large
    tensors at their places in any shard, and every file equals the one-process folder's."""
    from nncodec_unify.codec import checkpoint

    data = nu.encode(_large_mixed_model())
    written = []
    original = decoder.write_tensor_at

    def recording(places, array, dtype, **options):
        written.append(sorted(Path(path).name for path, _ in places))
        return original(places, array, dtype, **options)

    monkeypatch.setattr(decoder, "write_tensor_at", recording)
    checkpoint.decode_to_folder(data, tmp_path / "one", max_shard_bytes=max_shard_bytes, workers=1)
    assert written == []
    checkpoint.decode_to_folder(data, tmp_path / "two", max_shard_bytes=max_shard_bytes, workers=2)
    assert len(written) == 3
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "two").iterdir())
    assert (len(one) > 2) == (max_shard_bytes < 10**9)  # shards and their index
    if max_shard_bytes < 10**9:  # the tied tensor's two names are in two shards (threads finish in any order)
        assert sorted(len(set(files)) for files in written) == [1, 1, 2]
    for name in one:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_workers_write_large_tensors_into_the_pt_output_themselves(tmp_path, thread_pool, monkeypatch):
    """A .pt output: workers write each large tensor into its storage record (a tied pair's
    one record once) and send its CRC-32 back; the file is byte for byte the one-process
    file, and a zip reader finds every CRC right."""
    import zipfile

    from nncodec_unify.codec import checkpoint

    data = nu.encode(_large_mixed_model())
    written = []
    original = decoder.write_tensor_at

    def recording(places, array, dtype, **options):
        written.append((len(set(places)), array.nbytes, options))
        return original(places, array, dtype, **options)

    monkeypatch.setattr(decoder, "write_tensor_at", recording)
    checkpoint.decode_to_pt(data, tmp_path / "one.pt", workers=1)
    assert written == []
    checkpoint.decode_to_pt(data, tmp_path / "two.pt", workers=2)
    assert sorted(written, key=repr) == sorted([(1, 2 << 20, {"crc32": True}), (1, 600 * 512 * 4, {"crc32": True}),
                                                (1, 1024 * 600 * 2, {"crc32": True})], key=repr)
    assert (tmp_path / "two.pt").read_bytes() == (tmp_path / "one.pt").read_bytes()
    assert zipfile.ZipFile(tmp_path / "two.pt").testzip() is None


def test_real_workers_write_the_same_pt_file(tmp_path):
    stream = tmp_path / "m.nnu"
    stream.write_bytes(nu.encode(_large_mixed_model()))
    for workers_option in ("1", "2"):
        assert main(["decode", "-q", "--workers", workers_option, str(stream), str(tmp_path / f"w{workers_option}.pt")]) == EXIT_OK
    assert (tmp_path / "w2.pt").read_bytes() == (tmp_path / "w1.pt").read_bytes()


def test_workers_from_a_script_on_standard_input_are_refused_before_any_process(tmp_path):
    """Spawned workers re-run the main script; ``python - < script`` has none to re-run. The
    library says so (and what to do) instead of a broken pool and children's tracebacks."""
    import subprocess
    import sys

    stream = tmp_path / "m.nnu"
    stream.write_bytes(nu.encode({"w": np.ones((4, 4), np.float32)}))
    script = (f"import nncodec_unify as nu\n"
              f"nu.decode_to_file({str(stream)!r}, {str(tmp_path / 'out.safetensors')!r}, workers=2)\n")
    root = str(Path(__file__).resolve().parents[1])  # the tree under test, whatever is installed
    result = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": root})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ValueError: workers=2: worker processes are started by re-running the main script, and '<stdin>' is not "
        "a file (a script read from standard input?); run the script from a file, or pass workers=1")
    assert "BrokenProcessPool" not in result.stderr and "spawn_main" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnu"]


def test_a_pool_broken_in_the_library_says_what_to_check():
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool, match="terminated abruptly.* Was a worker killed.*workers=1 codes"):
        with workers.process_pool(1) as pool:
            pool.submit(_exit_worker).result()


def _exit_worker():
    """A job that kills its worker process (module level: spawned workers import it by name)."""
    os._exit(3)


def test_stopping_a_pool_whose_manager_thread_never_started_reaps_its_workers():
    """Regression: a SIGTERM while the pool was starting its workers (the executor's thread
    created, not yet started) made _stop raise "cannot join thread before it is started" — a
    traceback and exit 1 instead of exit 143 (3 of 25 runs of test_sigterm_and_a_closed_pipe)."""
    import multiprocessing

    executor = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    process = multiprocessing.get_context("spawn").Process(target=os.getpid)
    process.start()
    executor._processes = {process.pid: process}  # what the pool had launched
    executor._executor_manager_thread = threading.Thread(target=lambda: None)  # created, never started
    workers._stop(executor)
    assert not process.is_alive()
