"""A ``.pt`` input's tensors are read through the encoder's own mapping of the file, as a
safetensors input's are (pages let go behind each pass; workers map the values themselves),
wherever /proc/self/maps tells where torch mapped them; the bytes coded never change."""

import sys

import numpy as np
import pytest
import torch

import nncodec_unify as nu
from nncodec_unify.cli import EXIT_OK, main
from nncodec_unify.codec import checkpoint
from nncodec_unify.codec.checkpoint import load_tensors
from nncodec_unify.codec.memory import MappedSlice
from nncodec_unify.codec.tensors import BFloat16Array, find_ties

torch.set_num_threads(1)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps is Linux's")


def _state():
    generator = torch.Generator().manual_seed(3)
    shared = torch.randn(300, 200, generator=generator)
    return {"a": shared, "tied": shared, "bf": torch.randn(64, 64, generator=generator).to(torch.bfloat16),
            "half": torch.randn(10, 10, generator=generator).half(), "ints": torch.arange(7),
            "scalar": torch.tensor(3.0), "empty": torch.zeros(0, 3),
            "transposed": torch.randn(20, 30, generator=generator).t(), "flags": torch.arange(5) % 2 == 0}


def _mapped(value) -> bool:
    array = value.bits if isinstance(value, BFloat16Array) else value
    return isinstance(array, np.ndarray) and MappedSlice.of(array) is not None


def test_contiguous_tensors_become_views_of_the_file_and_code_the_same_bytes(tmp_path):
    state = _state()
    torch.save(state, tmp_path / "m.pt")
    loaded = load_tensors(tmp_path / "m.pt")
    assert list(loaded) == list(state)
    assert {name for name, value in loaded.items() if _mapped(value)} == set(state) - {"empty", "transposed"}
    assert isinstance(loaded["transposed"], torch.Tensor)  # not contiguous: as torch loaded it
    assert find_ties(loaded) == {"tied": "a"}
    for name, value in loaded.items():
        expected = state[name]
        if isinstance(value, BFloat16Array):
            assert np.array_equal(value.bits, expected.view(torch.int16).numpy().view(np.uint16))
        else:
            assert np.array_equal(np.asarray(value), expected.numpy()) and np.shape(value) == tuple(expected.shape)
    assert nu.encode(loaded) == nu.encode(state)


def test_without_the_places_or_with_wrong_ones_the_tensors_stay_as_torch_loaded_them(tmp_path, monkeypatch):
    """No /proc (not Linux), or places whose bytes are not the tensor's (the check on the
    first and last elements): nothing is replaced, and the stream is the same."""
    state = _state()
    torch.save(state, tmp_path / "m.pt")
    expected = nu.encode(state)
    monkeypatch.setattr(checkpoint, "mapped_regions", lambda path: [])
    assert not any(_mapped(value) for value in load_tensors(tmp_path / "m.pt").values())
    from nncodec_unify.codec.memory import mapped_regions

    monkeypatch.setattr(checkpoint, "mapped_regions",
                        lambda path: [(start, end, offset + 8) for start, end, offset in mapped_regions(path)])
    shifted = load_tensors(tmp_path / "m.pt")
    assert not any(_mapped(value) for name, value in shifted.items() if name not in ("scalar",))
    assert nu.encode(shifted) == expected


def test_a_pt_input_encodes_with_workers_to_the_bytes_of_one_process(tmp_path):
    rng = np.random.default_rng(5)
    state = {f"layer{i}.weight": torch.from_numpy(rng.normal(0, 0.02, (512, 600)).astype(np.float32))
             for i in range(3)}
    torch.save(state, tmp_path / "m.pt")
    for workers in ("1", "2"):
        assert main(["encode", "-q", "--workers", workers, str(tmp_path / "m.pt"),
                     str(tmp_path / f"w{workers}.nnu")]) == EXIT_OK
    assert (tmp_path / "w2.nnu").read_bytes() == (tmp_path / "w1.nnu").read_bytes() == nu.encode(state)


def test_parameters_that_need_gradients_are_read_too(tmp_path):
    """Regression (review): a checkpoint of nn.Parameters (requires_grad) crashed the check."""
    layer = torch.nn.Linear(64, 32)
    torch.save(dict(layer.named_parameters()), tmp_path / "m.pt")
    loaded = load_tensors(tmp_path / "m.pt")
    assert all(_mapped(value) for value in loaded.values())
    assert nu.encode(loaded) == nu.encode({name: value.detach() for name, value in layer.named_parameters()})


def test_a_big_endian_file_is_left_to_torch(tmp_path, monkeypatch):
    """Regression (review): torch swaps a big-endian file's bytes in its own copy of the
    pages, so a view of the file would read them unswapped; ends that read the same either
    way (zeros) hid it from the check."""
    values = torch.zeros(100)
    values[16:84] = torch.linspace(-1, 1, 68)
    swapped = torch.from_numpy(values.numpy().byteswap().copy())
    monkeypatch.setattr(sys, "byteorder", "big")
    torch.save({"w": swapped}, tmp_path / "be.pt")
    monkeypatch.undo()
    loaded = load_tensors(tmp_path / "be.pt")
    assert not _mapped(loaded["w"]) and torch.equal(loaded["w"], values)
    assert nu.encode(loaded) == nu.encode({"w": values})


def test_strides_that_differ_in_size_one_dimensions_do_not_make_new_ties(tmp_path):
    """Regression (review): two tensors torch keeps apart (strides differing where a
    dimension has size 1) must not become one view, and so a tie."""
    shared = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    state = {"a": shared.view(1, 1000), "b": shared.view(1000, 1).t()}
    torch.save(state, tmp_path / "m.pt")
    loaded = load_tensors(tmp_path / "m.pt")
    assert find_ties(loaded) == find_ties(state) == {}
    assert nu.encode(loaded) == nu.encode(state)
