#!/usr/bin/env python3
"""Coverage-guided fuzzing of the decoder with atheris (libFuzzer for Python).

    pip install atheris
    python tools/fuzz_atheris.py --make-corpus fuzz-corpus     # seed streams, once
    python tools/fuzz_atheris.py fuzz-corpus -max_total_time=600 -rss_limit_mb=4096

Any other argument is libFuzzer's (``-jobs=2``, ``-max_len=65536``, ``-runs=N``, a crash file
to replay it). The first byte of each input is a mode, the rest is the stream:

* bit 0 set: every unit CRC is recomputed first, so that coverage grows inside the tensor
  parser, the range decoder and the reconstruction instead of stopping at the checksum;
* bit 2 set: the stream is resealed first (``fuzzing.reseal``: the CRCs, and a 4.0 stream's
  STREAM_END unit count and digests), so that edits of a 4.0 stream get past its end checks
  to the content digests and the decoded output;
* bit 1 set: ``describe`` (what ``nncodec info`` runs) instead of ``decode_tensors``.

A crash is any exception other than ``BitstreamError`` (numpy warnings count), or libFuzzer's
timeout/out-of-memory. Copy the crash file into ``tests/fuzz_regressions/``:
``tests/test_fuzz.py`` replays every file there (same mode byte) and requires a
``BitstreamError`` or a clean decode.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def replay(data: bytes) -> None:
    """Run one fuzzer input; raises whatever escapes other than BitstreamError."""
    import numpy as np
    from fuzzing import FUZZ_LIMITS, fix_crcs, reseal

    import nncodec_unify as nu
    from nncodec_unify.codec.decoder import describe

    if not data:
        return
    mode, stream = data[0], data[1:]
    if mode & 4:
        stream = reseal(stream)
    elif mode & 1:
        stream = fix_crcs(stream)
    function = describe if mode & 2 else nu.decode_tensors
    try:
        with warnings.catch_warnings(), np.errstate(all="raise"):
            warnings.simplefilter("error")
            function(stream, limits=FUZZ_LIMITS)
    except nu.BitstreamError:
        pass


def make_corpus(folder: Path) -> None:
    from fuzzing import make_corpus as corpus_of

    folder.mkdir(parents=True, exist_ok=True)
    samples = corpus_of(7, 12, large_every=6)
    for index, sample in enumerate(samples):
        for mode in (5, 1, 0):
            (folder / f"seed-{index:02d}-mode{mode}").write_bytes(bytes([mode]) + sample.data)
    print(f"wrote {3 * len(samples)} seeds to {folder}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make-corpus":
        make_corpus(Path(sys.argv[2]))
        return
    import atheris

    with atheris.instrument_imports(include=["nncodec_unify", "fuzzing"]):
        import fuzzing  # noqa: F401

        import nncodec_unify  # noqa: F401
        import nncodec_unify.codec.decoder  # noqa: F401
    atheris.Setup(sys.argv, replay)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
