"""Decoding into ``.pt`` a tensor at a time (``torch_archive``): ``torch.load`` gives every
tensor of every dtype and shape, tied names stay one storage, the zip's CRC-32s are right,
a bad tensor leaves no file, and where the archive cannot be made as planned the whole
state_dict is saved as before."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nncodec_unify as nu  # noqa: E402
from nncodec_unify.cli import EXIT_OK, main  # noqa: E402
from nncodec_unify.codec import checkpoint, torch_archive  # noqa: E402
from nncodec_unify.codec.decoder import torch_tensors  # noqa: E402
from nncodec_unify.codec.errors import BitstreamError  # noqa: E402
from nncodec_unify.codec.tensors import BFloat16Array  # noqa: E402

torch.set_num_threads(1)


def every_kind() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    weights = rng.normal(0, 0.05, size=(40, 24)).astype(np.float32)
    bfloat = rng.normal(0, 0.05, size=(8, 16)).astype(np.float32)
    model = {"w": weights, "half": rng.normal(0, 0.1, size=(6, 10)).astype(np.float16),
             "bf": BFloat16Array((bfloat.view(np.uint32) >> 16).astype(np.uint16)),
             "double": rng.normal(size=(3, 3)), "scalar": np.float32(2.5).reshape(()),
             "empty": np.zeros((0, 5), dtype=np.float32), "mask": rng.random(9) < 0.5, "tied": weights}
    for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        model[name] = rng.integers(0, 100, size=(4, 7)).astype(name)
    return model


def assert_same_state(loaded: dict, expected: dict) -> None:
    assert list(loaded) == list(expected)
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name


@pytest.mark.parametrize("mmap", [False, True])
def test_a_pt_output_holds_every_tensor_as_torch_would_save_it(tmp_path, mmap):
    data = nu.encode(every_kind())
    count, parameters = checkpoint.decode_to_pt(data, tmp_path / "m.pt")
    expected = torch_tensors(nu.decode_tensors(data).tensors)
    assert (count, parameters) == (len(expected), sum(t.numel() for t in expected.values()))
    loaded = torch.load(tmp_path / "m.pt", weights_only=True, mmap=mmap)
    assert_same_state(loaded, expected)
    assert loaded["bf"].dtype == torch.bfloat16 and loaded["scalar"].dim() == 0
    assert loaded["tied"].untyped_storage().data_ptr() == loaded["w"].untyped_storage().data_ptr()
    archive = zipfile.ZipFile(tmp_path / "m.pt")
    assert archive.testzip() is None  # every CRC-32, central directory and data descriptors alike
    assert all(name.startswith("archive/") for name in archive.namelist())  # not the temporary file's name


def test_the_cli_writes_the_same_pt_file_every_time(tmp_path):
    stream = tmp_path / "m.nnu"
    stream.write_bytes(nu.encode(every_kind()))
    for name in ("a.pt", "b.pt"):
        assert main(["decode", "-q", str(stream), str(tmp_path / name)]) == EXIT_OK
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert_same_state(torch.load(tmp_path / "a.pt", weights_only=True), torch_tensors(nu.decode_tensors(stream.read_bytes()).tensors))


@pytest.mark.parametrize("failure", ["no archive", "unexpected pickle"])
def test_where_the_archive_cannot_be_made_the_whole_state_dict_is_saved(tmp_path, monkeypatch, failure):
    if failure == "no archive":
        monkeypatch.setattr(torch_archive, "start_archive", lambda path, tensors: None)
    else:
        def refuse(self, module, name):
            raise pickle.UnpicklingError("no")

        monkeypatch.setattr(torch_archive._StorageKeys, "find_class", refuse)
        assert torch_archive.start_archive(tmp_path / "x.pt", [("w", (2, 3), nu.DType.FLOAT32, None)]) is None
    data = nu.encode(every_kind())
    checkpoint.decode_to_pt(data, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=True)
    assert_same_state(loaded, torch_tensors(nu.decode_tensors(data).tensors))


def test_a_bad_tensor_leaves_no_pt_file(tmp_path):
    from test_parallel_decode import with_bad_digests

    data = with_bad_digests(nu.encode(every_kind()), {3})
    with pytest.raises(BitstreamError):
        checkpoint.decode_to_pt(data, tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_data_pkl_is_read_without_running_anything():
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        torch_archive._StorageKeys(__import__("io").BytesIO(pickle.dumps({"w": Evil()}))).load()


def test_the_fallback_and_save_decoded_write_the_same_file_every_time(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_archive, "start_archive", lambda path, tensors: None)
    data = nu.encode(every_kind())
    for name in ("a.pt", "b.pt"):
        checkpoint.decode_to_pt(data, tmp_path / name)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    for name in ("c.pt", "d.pt"):
        checkpoint.save_decoded(tmp_path / name, nu.decode_tensors(data))
    assert (tmp_path / "c.pt").read_bytes() == (tmp_path / "d.pt").read_bytes()
