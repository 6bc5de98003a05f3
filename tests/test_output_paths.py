"""Every output path keeps every tensor's shape, dtype and bytes (issue 11, item 1): the API
(numpy and torch), a .safetensors file, a .pt file and a model folder, for 0-dim, empty and
odd shapes of every dtype, bfloat16 included, through one and two workers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nncodec_unify as nu
from nncodec_unify.codec.format import DType
from nncodec_unify.codec.integrity import canonical_bytes
from nncodec_unify.codec.safetensors_io import read_safetensors
from nncodec_unify.cli import main
from nncodec_unify.codec.tensors import BFloat16Array, to_numpy
from strategies import raw_arrays

torch = pytest.importorskip("torch")

RAW = nu.EncoderConfig(rules=(nu.TensorRule("*", mode=nu.CodingMode.RAW),))  # values exact, whatever they are
TORCH_DTYPES = {torch.float64: DType.FLOAT64, torch.float32: DType.FLOAT32, torch.float16: DType.FLOAT16,
                torch.bfloat16: DType.BFLOAT16, torch.int64: DType.INT64, torch.int32: DType.INT32,
                torch.int16: DType.INT16, torch.int8: DType.INT8, torch.uint8: DType.UINT8, torch.bool: DType.BOOL,
                torch.uint16: DType.UINT16, torch.uint32: DType.UINT32, torch.uint64: DType.UINT64}


def _numpy_form(array) -> tuple[DType, tuple[int, ...], bytes]:
    """What a numpy-side tensor is: its dtype, shape and canonical bytes (spec §7.3)."""
    values, dtype = to_numpy("t", array)
    return dtype, tuple(values.shape), bytes(canonical_bytes(values, dtype))


def _torch_form(tensor) -> tuple[DType, tuple[int, ...], bytes]:
    """The same for a torch tensor (bfloat16 as its bit patterns, little-endian)."""
    values = tensor.detach().view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor.detach()
    return TORCH_DTYPES[tensor.dtype], tuple(tensor.shape), values.numpy().astype(values.numpy().dtype.newbyteorder("<")).tobytes()


@settings(max_examples=15, deadline=None)
@given(st.lists(raw_arrays(), min_size=1, max_size=4), st.lists(st.integers(0, 0xFFFF), max_size=6),
       st.sampled_from([1, 2]))
def test_every_dtype_and_shape_comes_back_exactly_on_every_output_path(tmp_path_factory, arrays, bf16_bits, workers):
    folder = tmp_path_factory.mktemp("out")
    tensors = {f"t{i}": array for i, array in enumerate(arrays)}
    tensors["bf"] = BFloat16Array(np.array(bf16_bits, dtype=np.uint16).reshape(len(bf16_bits)))
    expected = {name: _numpy_form(value) for name, value in tensors.items()}
    stream = folder / "m.nnu"
    stream.write_bytes(nu.encode(tensors, config=RAW))

    decoded = nu.decode_tensors(stream.read_bytes())
    assert {t.name: (t.dtype, t.array.shape, bytes(canonical_bytes(t.array, t.dtype))) for t in decoded.tensors} \
        == expected
    as_torch = nu.decode(stream.read_bytes(), framework="pt")
    assert {name: _torch_form(tensor) for name, tensor in as_torch.items()} == expected

    for target in ("o.safetensors", "o.pt", "dir/"):
        assert main(["decode", "-q", "--workers", str(workers), str(stream), f"{folder}/{target}"]) == 0
    for path in (folder / "o.safetensors", folder / "dir" / "model.safetensors"):
        back = read_safetensors(path)
        assert list(back) == list(tensors)
        assert {name: _numpy_form(value) for name, value in back.items()} == expected
    loaded = torch.load(folder / "o.pt", weights_only=True)
    assert list(loaded) == list(tensors)
    assert {name: _torch_form(tensor) for name, tensor in loaded.items()} == expected
