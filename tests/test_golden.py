"""A golden stream: the exact bytes of a tiny model (integer-exact path only).

If this test fails, the format or constriction's output changed: that needs a format version
bump and a change-log entry, never a silent update of these bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np

import nncodec_unify as nu
from nncodec_unify import CodingMode, EncoderConfig, TensorRule

TINY = {
    "w": np.array([[0.5, -0.5, 0.25, 0.0], [0.5, 0.5, -0.75, 0.0]], dtype=np.float32),
    "n": np.array([1, 2], dtype=np.int8),
}
# format 2.0 with dense_offsets (spec §6.10, change log 2.0.0 item 3): the offset_mode byte 00
# before the dense_levels plane of "w" (payload_length 0x65 -> 0x66, and that unit's CRC)
TINY_STREAM = bytes.fromhex(
    "894e4e550d0a1a0a020000000100040000000200000039c50b220200660000000100770102020000000400000002f8ff02"
    "02020200000001010101020001c00100000000000080000000000100000001010101020001400100000000010000000000"
    "000100000040000400000002020101040001d001000000a2d94b680000000001000000405a98708c02000c00000001006e"
    "0501020000000001023f0bd177"
)


def test_tiny_model_encodes_to_the_golden_bytes():
    # the mode asked for: left to itself the encoder stores a tensor this small RAW
    config = EncoderConfig(qp=-8, block=(2, 2), rules=(TensorRule("w", mode=CodingMode.UNIFIED),), dependent=False)
    assert nu.encode(TINY, config=config) == TINY_STREAM


def test_golden_bytes_decode_to_the_model():
    decoded = nu.decode(TINY_STREAM)
    assert list(decoded) == ["w", "n"]
    assert decoded["w"].tobytes() == TINY["w"].tobytes()  # all values lie on the 2**-2 grid
    assert decoded["n"].tobytes() == TINY["n"].tobytes()
    assert hashlib.sha256(decoded["w"].tobytes()).hexdigest() == hashlib.sha256(TINY["w"].tobytes()).hexdigest()
