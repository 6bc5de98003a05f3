"""The decode path imports neither torch nor training code (issue 2, item 5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

import nncodec_unify as nu


def test_decoding_never_imports_torch(tmp_path):
    stream = tmp_path / "model.nnu"
    stream.write_bytes(nu.encode({"w": np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8),
                                  "b": np.ones(8, np.float32), "i": np.arange(3)}))
    script = textwrap.dedent(f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "nncodec_unify.admm", "nncodec_unify.unify"):
                    raise ImportError("blocked: " + name)

        sys.meta_path.insert(0, Block())
        import nncodec_unify
        tensors = nncodec_unify.decode(open({str(stream)!r}, "rb").read())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch" or m.endswith((".admm", ".unify")))
        assert not loaded, loaded
        print(sorted(tensors))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['b', 'i', 'w']"
