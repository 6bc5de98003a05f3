"""Our torch-free safetensors reader/writer: exact shapes and dtypes, and files that the
safetensors package and torch read the same way."""

import hashlib
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nncodec_unify as nu
from nncodec_unify.codec.checkpoint import CheckpointError, load_tensors, save_decoded
from nncodec_unify.codec.format import DTYPE_NUMPY, DType
from nncodec_unify.codec.safetensors_io import SafetensorsError, read_safetensors, write_safetensors
from nncodec_unify.codec.tensors import BFloat16Array, to_numpy

SHAPES = st.one_of(st.just(()), st.just((0,)), st.just((3, 0)),
                   st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple))


def _values(dtype: DType, shape, rng) -> np.ndarray:
    if dtype == DType.BOOL:
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype == DType.BFLOAT16:
        return (rng.normal(size=shape).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
    numpy_type = np.dtype(DTYPE_NUMPY[dtype])
    if numpy_type.kind == "f":
        return rng.normal(size=shape).astype(numpy_type)
    info = np.iinfo(numpy_type)
    return rng.integers(info.min, info.max, size=shape, dtype=numpy_type, endpoint=True)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(DType)), SHAPES), min_size=1, max_size=5), st.integers(0, 2**32 - 1))
def test_every_dtype_and_shape_round_trips_through_our_writer_and_reader(tmp_path_factory, specs, seed):
    rng = np.random.default_rng(seed)
    tensors = [(f"t{i}", _values(dtype, shape, rng), dtype) for i, (dtype, shape) in enumerate(specs)]
    path = tmp_path_factory.mktemp("st") / "m.safetensors"
    with open(path, "wb") as file:
        write_safetensors(file, tensors)
    back = read_safetensors(path)
    assert list(back) == [name for name, _, _ in tensors]
    for name, values, dtype in tensors:
        array, read_dtype = to_numpy(name, back[name])
        assert read_dtype == dtype and array.shape == values.shape
        assert array.tobytes() == np.asarray(values, dtype=array.dtype).tobytes()


def test_the_safetensors_package_and_torch_read_our_files_alike(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load

    rng = np.random.default_rng(0)
    tensors = [("a", rng.normal(size=(3, 4)).astype(np.float32), DType.FLOAT32),
               ("s", np.array(5, np.int64), DType.INT64), ("e", np.zeros((0, 2), np.float16), DType.FLOAT16),
               ("b", _values(DType.BFLOAT16, (2, 3), rng), DType.BFLOAT16)]
    with open(tmp_path / "m.safetensors", "wb") as file:
        write_safetensors(file, tensors)
    loaded = torch_load(str(tmp_path / "m.safetensors"))
    assert loaded["s"].shape == () and loaded["b"].dtype == torch.bfloat16
    assert torch.equal(loaded["b"].float(), torch.from_numpy(tensors[3][1]))
    from safetensors.torch import save_file

    save_file({"x": torch.arange(6, dtype=torch.int16).reshape(2, 3), "z": torch.tensor(2.5),
               "h": torch.ones(2, dtype=torch.bfloat16)}, str(tmp_path / "theirs.safetensors"))
    theirs = read_safetensors(tmp_path / "theirs.safetensors")
    assert theirs["x"].tolist() == [[0, 1, 2], [3, 4, 5]] and theirs["z"].shape == () and float(theirs["z"]) == 2.5
    assert isinstance(theirs["h"], BFloat16Array) and theirs["h"].bits.tolist() == [0x3F80, 0x3F80]


def test_decoded_zero_dim_tensors_keep_their_shape_in_safetensors_output(tmp_path):
    """Regression (issue 11): num_batches_tracked came back with shape (1,)."""
    data = nu.encode({"num_batches_tracked": np.array(12, np.int64), "w": np.ones((2, 2), np.float32)})
    save_decoded(tmp_path / "o.safetensors", nu.decode_tensors(data))
    back = load_tensors(tmp_path / "o.safetensors")
    assert back["num_batches_tracked"].shape == () and int(back["num_batches_tracked"]) == 12


def _file(header: str, data: bytes = b"") -> bytes:
    encoded = header.encode()
    return len(encoded).to_bytes(8, "little") + encoded + data


@pytest.mark.parametrize("content, problem", [
    (b"", "shorter than"), (b"\xff" * 8 + b"{}", "exceeds the file"), (_file("nope!"), "not JSON"),
    (_file("[]"), "not a JSON object"),
    (_file('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'), "outside"),
    (_file('{"w":{"dtype":"X9","shape":[2],"data_offsets":[0,8]}}', bytes(8)), "dtype"),
    (_file('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8)), "bytes for"),
    (_file('{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', bytes(8)), "non-negative"),
    (_file('{"w":{"dtype":"F32"}}', bytes(8)), "lacks"),
])
def test_malformed_files_are_one_clear_error(tmp_path, content, problem):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorsError, match=problem):
        read_safetensors(path)
    if problem == "dtype":  # well formed, but a dtype the codec does not code: it cannot be encoded
        with pytest.raises(nu.EncodeError, match="dtype 'X9' is not supported"):
            load_tensors(path)
        return
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_tensors(path)


def _resident_mib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) // 1024


def _write(path, tensors):
    with open(path, "wb") as file:
        write_safetensors(file, [(name, array, DType.FLOAT32) for name, array in tensors.items()])


def test_tensors_are_views_of_the_mapped_file_whose_pages_can_be_released(tmp_path):
    """The encoder lets a mapped tensor's pages go once its levels stand for it; the values
    stay readable (from the file again), and arrays that map nothing are left alone."""
    from nncodec_unify.codec.memory import release_pages

    values = np.random.default_rng(1).normal(size=(2048, 4096)).astype(np.float32)  # 32 MiB
    _write(tmp_path / "m.safetensors", {"w": values})
    mapped = read_safetensors(tmp_path / "m.safetensors")["w"]
    assert not mapped.flags.writeable and not mapped.flags.owndata
    before = _resident_mib()
    assert float(mapped.sum()) == pytest.approx(float(values.sum()), rel=1e-4)  # every page read
    touched = _resident_mib()
    assert release_pages(mapped)
    if before + 24 <= touched:  # Linux counts mapped file pages as resident
        assert _resident_mib() <= touched - 24
    assert np.array_equal(mapped, values)
    assert not release_pages(values) and not release_pages(mapped.T) and not release_pages(mapped[:0])


def test_copy_on_write_and_anonymous_mappings_keep_their_values(tmp_path):
    """Only the reader's own read-only file mappings are released: dropping the pages of a
    copy-on-write memmap would bring back the file's old values, of an anonymous one zeros."""
    import mmap

    from nncodec_unify.codec.memory import release_pages

    values = np.random.default_rng(3).laplace(0, 0.02, size=(1536, 1024)).astype(np.float32)
    values.tofile(tmp_path / "w.bin")
    edited = np.memmap(tmp_path / "w.bin", dtype=np.float32, mode="c", shape=values.shape)
    edited *= 2
    assert nu.encode({"w": edited}) == nu.encode({"w": values * 2})
    assert np.array_equal(edited, values * 2)
    anonymous = np.frombuffer(mmap.mmap(-1, values.nbytes), dtype=np.float32).reshape(values.shape)
    anonymous[...] = values
    assert not release_pages(anonymous) and np.array_equal(anonymous, values)


def test_a_file_that_shrinks_after_opening_is_a_clear_error_not_a_crash(tmp_path):
    path = tmp_path / "m.safetensors"
    _write(path, {"a": np.ones(4096, np.float32), "b": np.ones(4096, np.float32)})
    opened = read_safetensors(path)
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size - 4096)
    with pytest.raises(SafetensorsError, match="'b' is cut short"):
        opened["b"]


def test_encoding_a_mapped_file_gives_the_bytes_of_encoding_the_arrays(tmp_path):
    """Pages released pass by pass (quantization, the trellis) read back the same values."""
    rng = np.random.default_rng(2)
    tensors = {"big": rng.laplace(0, 0.02, size=(1536, 1024)).astype(np.float32),  # > one 2**20 chunk
               "bias": rng.normal(size=1024).astype(np.float32)}
    _write(tmp_path / "m.safetensors", tensors)
    assert nu.encode(read_safetensors(tmp_path / "m.safetensors")) == nu.encode(tensors)
    half = (tensors["big"].view(np.uint32) & 0xFFFF0000).view(np.float32)  # bfloat16 values
    with open(tmp_path / "h.safetensors", "wb") as file:
        write_safetensors(file, [("half", half, DType.BFLOAT16)])
    mapped = read_safetensors(tmp_path / "h.safetensors")
    result = nu.encode_with_report(mapped, measure_error=True)
    assert result.data == nu.encode({"half": BFloat16Array((half.view(np.uint32) >> 16).astype(np.uint16))})
    # the error is measured against the values the bits widen to, after the widened copy has gone
    decoded = nu.decode(result.data)["half"].astype(np.float64)
    assert result.reports[0].max_abs_error == pytest.approx(float(np.max(np.abs(decoded - half))), rel=0, abs=0)
    assert result.reports[0].max_abs_error > 0


@pytest.fixture
def recorded_pool(monkeypatch):
    """Encoder workers as threads that record the pickled size of every job submitted."""
    import concurrent.futures
    import contextlib
    import pickle

    from nncodec_unify.codec import encoder

    sizes = []

    class Recording(concurrent.futures.ThreadPoolExecutor):
        def submit(self, function, *args):
            sizes.append(len(pickle.dumps(args)))
            return super().submit(function, *args)

    @contextlib.contextmanager
    def pool(workers):
        with Recording(workers) as executor:
            yield executor

    monkeypatch.setattr(encoder, "process_pool", pool)
    return sizes


def test_workers_map_a_safetensors_input_themselves_instead_of_receiving_its_values(tmp_path, recorded_pool):
    """A job that views the mapped input file goes to a worker as a reference (file, offset,
    dtype, shape) of a few hundred bytes, bfloat16 included; the stream is the same."""
    rng = np.random.default_rng(5)
    big = rng.laplace(0, 0.02, size=(1024, 1536)).astype(np.float32)  # 6 MiB
    half = (big[:512].view(np.uint32) & 0xFFFF0000).view(np.float32)
    with open(tmp_path / "m.safetensors", "wb") as file:
        write_safetensors(file, [("big", big, DType.FLOAT32), ("half", half, DType.BFLOAT16),
                                 ("scalar", np.array(1.5, np.float32), DType.FLOAT32)])
    mapped = read_safetensors(tmp_path / "m.safetensors")
    assert nu.encode_with_report(mapped, workers=2).data == nu.encode(mapped)
    assert len(recorded_pool) == 3 and max(recorded_pool) < 2048


def test_workers_encode_a_mapped_input_in_real_processes(tmp_path):
    rng = np.random.default_rng(6)
    tensors = {f"w{i}": rng.normal(0, 0.05, size=(64 + i, 96)).astype(np.float32) for i in range(3)}
    _write(tmp_path / "m.safetensors", tensors)
    assert nu.encode_with_report(read_safetensors(tmp_path / "m.safetensors"), workers=2).data == nu.encode(tensors)


def test_an_input_file_replaced_after_it_was_opened_is_encoded_as_opened_or_refused(tmp_path, recorded_pool):
    """The parent sends the values themselves when the path no longer names the file it
    mapped (replaced, deleted): the stream is that of one process. A worker that finds the
    path changed after the parent looked refuses, with one clear error, rather than code the
    other file's values."""
    from nncodec_unify.codec.encoder import _SourceReference
    from nncodec_unify.codec.memory import FileChangedError, MappedSlice

    path = tmp_path / "m.safetensors"
    _write(path, {"w": np.ones((64, 64), np.float32), "b": np.ones(64, np.float32)})
    opened = read_safetensors(path)
    reference = MappedSlice.of(opened["w"])  # mapped now, as the encoder's first look at it does
    assert reference is not None and reference.file.still_names_it()
    _write(tmp_path / "other.safetensors", {"w": np.zeros((64, 64), np.float32), "b": np.ones(64, np.float32)})
    os.replace(tmp_path / "other.safetensors", path)
    assert not reference.file.still_names_it()
    assert nu.encode_with_report(opened, workers=2).data == nu.encode({"w": np.ones((64, 64), np.float32),
                                                                       "b": np.ones(64, np.float32)})
    assert max(recorded_pool) > 64 * 64 * 4  # the values went to the worker
    with pytest.raises(FileChangedError, match="changed"):
        reference.load()
    with pytest.raises(nu.EncodeError, match=r"^tensor 'w': cannot read its values again in a worker: .*changed"):
        _SourceReference(reference, False).load("w")


@pytest.mark.parametrize("changes, structured", [({}, False), ({"dependent": False}, False), ({"rdo": False}, False),
                                                 ({}, True)])
def test_bfloat16_bits_choose_the_levels_their_widened_values_choose(changes, structured):
    """Every quantization pass widens a bfloat16 tensor a chunk at a time (no float32 copy of
    the whole tensor): the trellis, the scalar RDO, plain rounding, and the block-kind RDO of
    a tensor whose 4x4 blocks are unified or pruned choose the levels the float32 values do."""
    from nncodec_unify.codec.config import EncoderConfig
    from nncodec_unify.codec.encoder import choose_levels
    from nncodec_unify.codec.quant import step_size

    rng = np.random.default_rng(5)
    config = EncoderConfig(**changes)
    coding = config.coding_for("w", DType.BFLOAT16, 2)
    step = float(step_size(coding.qp, coding.qp_density))
    if structured:  # one magnitude per 4x4 block (0 in a third of them), own signs, a little noise
        magnitudes = np.kron(rng.integers(0, 6, size=(275, 250)) * (rng.random((275, 250)) > 0.33), np.ones((4, 4)))
        values = (magnitudes * step * rng.choice([-1, 1], size=magnitudes.shape)
                  + rng.normal(0, 0.05 * step, size=magnitudes.shape)).astype(np.float32)
    else:
        values = rng.laplace(0, 0.02, size=(1100, 1000)).astype(np.float32)  # more than one 2**20 chunk
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    widened = (bits.astype(np.uint32) << 16).view(np.float32)
    from_bits = choose_levels(BFloat16Array(bits), step, coding.mode, coding, True)
    from_values = choose_levels(widened, step, coding.mode, coding, True)
    assert np.array_equal(from_bits.levels, from_values.levels) and from_bits.dependent == from_values.dependent
    assert from_bits.dependent == (config.dependent and config.rdo and not structured)


def test_bfloat16_and_big_endian_tensors_are_written_a_piece_at_a_time():
    """Decoding a bfloat16 model to safetensors converts 2**20 elements at a time (a 128 MiB
    tensor decoded at 360 MiB instead of 720): the pieces are the tensor's bytes, in order."""
    from nncodec_unify.codec.integrity import canonical_bytes, content_digest
    from nncodec_unify.codec.safetensors_io import tensor_bytes, tensor_pieces
    from nncodec_unify.codec.tensors import float32_to_bfloat16_bits

    rng = np.random.default_rng(3)
    values = (rng.normal(size=(1100, 1000)).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
    pieces = list(tensor_pieces(values, DType.BFLOAT16))
    assert len(pieces) == 2 and b"".join(pieces) == bytes(tensor_bytes(values, DType.BFLOAT16))
    assert b"".join(pieces) == (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    assert content_digest(values, DType.BFLOAT16) == hashlib.sha256(b"".join(pieces)).digest()
    swapped = values.astype(">f4")
    assert b"".join(tensor_pieces(swapped, DType.FLOAT32)) == values.astype("<f4").tobytes()
    assert len(list(tensor_pieces(values, DType.FLOAT32))) == 1  # already laid out: one view, no copy
    for shaped in (np.float32(1.5).reshape(()), np.zeros((0, 3), np.float32)):
        bits = float32_to_bfloat16_bits(shaped)
        assert bits.shape == shaped.shape and bits.dtype == np.uint16
        assert bytes(canonical_bytes(shaped, DType.BFLOAT16)) == bits.astype("<u2").tobytes()
    assert float32_to_bfloat16_bits(np.float32(1.5).reshape(())) == 0x3FC0
