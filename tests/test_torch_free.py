"""The decode path imports neither torch nor training code (issue 2, item 5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

import nncodec_unify as nu

# makes torch and the method subpackage unimportable in a child process, as on a device
BLOCKER = ("import sys; "
           "Block = type('Block', (), {'find_spec': lambda self, name, path=None, target=None: "
           "(_ for _ in ()).throw(ImportError('blocked: ' + name)) "
           "if name.split('.')[0] == 'torch' or name.startswith('nncodec_unify.method') else None}); "
           "sys.meta_path.insert(0, Block())")


def test_decoding_never_imports_torch(tmp_path):
    stream = tmp_path / "model.nnu"
    stream.write_bytes(nu.encode({"w": np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8),
                                  "b": np.ones(8, np.float32), "i": np.arange(3)}))
    script = textwrap.dedent(f"""
        {BLOCKER}
        import nncodec_unify
        tensors = nncodec_unify.decode(open({str(stream)!r}, "rb").read())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith("nncodec_unify.method"))
        assert not loaded, loaded
        print(sorted(tensors))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['b', 'i', 'w']"


def test_safetensors_round_trip_through_the_cli_without_torch(tmp_path):
    """encode and decode of .safetensors files, bfloat16 and 0-dim tensors included, in a
    process where torch cannot be imported at all (as on a device's decode-only install)."""
    from nncodec_unify.codec.format import DType
    from nncodec_unify.codec.safetensors_io import write_safetensors

    source = tmp_path / "model.safetensors"
    with open(source, "wb") as file:
        write_safetensors(file, [("w", np.linspace(-1, 1, 48, dtype=np.float32).reshape(6, 8), DType.FLOAT32),
                                 ("bf", np.array([[1.5, -2.0], [0.25, 3.0]], np.float32), DType.BFLOAT16),
                                 ("steps", np.array(7, np.int64), DType.INT64)])
    script = textwrap.dedent(f"""
        {BLOCKER}
        from nncodec_unify.cli import main
        from nncodec_unify.codec.safetensors_io import read_safetensors
        assert main(["encode", {str(source)!r}, {str(tmp_path / "m.nnu")!r}, "--json"]) == 0
        assert main(["decode", {str(tmp_path / "m.nnu")!r}, {str(tmp_path / "back.safetensors")!r}]) == 0
        assert main(["verify", {str(tmp_path / "m.nnu")!r}, "-q"]) == 0  # digests checked on the device
        back = read_safetensors({str(tmp_path / "back.safetensors")!r})
        assert back["steps"].shape == () and int(back["steps"]) == 7
        assert back["bf"].bits.tolist() == [[0x3FC0, 0xC000], [0x3E80, 0x4040]]
        assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"


def test_the_codec_subpackage_imports_neither_torch_nor_the_method():
    """The device boundary (issue 11, item 7): every module of nncodec_unify.codec loads with
    torch and nncodec_unify.method unimportable."""
    import pkgutil

    import nncodec_unify.codec

    modules = sorted(m.name for m in pkgutil.iter_modules(nncodec_unify.codec.__path__))
    assert {"decoder", "encoder", "checkpoint", "safetensors_io"} <= set(modules)
    script = textwrap.dedent(f"""
        import importlib
        {BLOCKER}
        for module in {modules!r}:
            importlib.import_module("nncodec_unify.codec." + module)
        import nncodec_unify, nncodec_unify.cli
        loaded = [m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith("nncodec_unify.method")]
        assert not loaded, loaded
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
