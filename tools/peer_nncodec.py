"""Run the peer (NNCodec, the NNR reference software) on a safetensors file; print one JSON line.

Runs in the peer's own virtual environment (../shared/peer/setup.sh), not in ours:

    PYTHONPATH=../shared/peer/shim $TMPDIR/peer-nncodec/bin/python tools/peer_nncodec.py \\
        MODEL.safetensors QP dq|nodq [DECODED.safetensors]

Prints bytes, in-process encode and decode seconds, and the RMSE and largest error over the
>= 2-D float tensors; with a fourth argument it also writes the decoded tensors there, so our
side can measure what the decoded model does. NNR's qp is ours: step 2**(qp/4).
"""

import json
import os
import sys
import tempfile
import time

import numpy as np
import safetensors.numpy as stn
from nncodec.nn import decode, encode


def main() -> int:
    path, qp, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode not in ("dq", "nodq"):
        sys.exit("mode must be dq or nodq")
    original = stn.load_file(path)
    tensors = {}
    for name, value in original.items():
        array = value.astype(np.int32) if value.dtype.kind in "iu" else value.astype(np.float32)
        tensors[name] = array.reshape(1) if array.ndim == 0 else array
    started = time.perf_counter()
    stream = encode(tensors, args={"qp": qp, "use_dq": mode == "dq", "results": tempfile.mkdtemp()})
    encoded = time.perf_counter()
    decoded = decode(bytearray(stream))
    finished = time.perf_counter()
    squared, count, largest = 0.0, 0, 0.0
    for name, array in tensors.items():
        if array.ndim >= 2 and array.dtype == np.float32:
            difference = decoded[name].astype(np.float64).reshape(array.shape) - array
            squared += float((difference ** 2).sum())
            count += difference.size
            largest = max(largest, float(np.abs(difference).max()))
    if len(sys.argv) > 4:
        out = {name: np.ascontiguousarray(decoded[name].reshape(value.shape).astype(value.dtype))
               for name, value in original.items()}
        stn.save_file(out, sys.argv[4] + ".part")
        os.replace(sys.argv[4] + ".part", sys.argv[4])
    print(json.dumps({"bytes": len(stream), "encode_s": encoded - started, "decode_s": finished - encoded,
                      "rmse": (squared / count) ** 0.5, "max_error": largest}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
