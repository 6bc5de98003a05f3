"""A golden stream: the exact bytes of a tiny model (integer-exact path only).

If this test fails, the format or constriction's output changed: that needs a format version
bump and a change-log entry, never a silent update of these bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

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


# The same model in format 4.0 (change log 4.0.0): each tensor_header ends with the SHA-256 of
# the tensor's canonical bytes (w: 4960 4d62..., n: 2b68 0646...), one quant_flags byte 00 after
# qp_density, and a STREAM_END unit (type 04, 68 bytes: unit_count 3, model digest, stream digest).
TINY_STREAM_V4 = bytes.fromhex(
    "894e4e550d0a1a0a040000000100040000000200000039c50b2202008700000001007701020200000004000000024960"
    "4d62700610d10ea04175b4edced1f06c62fea9be9cc33d263b94cbfcbf6cf8ff020002020200000001010101020001c0"
    "010000000000008000000000010000000101010102000140010000000001000000000000010000004000040000000202"
    "0101040001d001000000a2d94b680000000001000000402b68064602002c00000001006e05010200000000a12871fee2"
    "10fb8619291eaea194581cbd2531e4b23759d225f6806923f632220102eaa37155040044000000030000004b2fa086d2"
    "3cfdccd6ec25b6ac33b13e22694a3014ffbf04650714fa22d729790a43fe62094fcea024a2d3e605236372fc1df22563"
    "a3296579bd24cc4fd803b7dab5bb63"
)
# the mode asked for: left to itself the encoder stores a tensor this small RAW
CONFIG = EncoderConfig(qp=-8, block=(2, 2), rules=(TensorRule("w", mode=CodingMode.UNIFIED),), dependent=False)


def test_tiny_model_encodes_to_the_golden_bytes():
    assert nu.encode(TINY, config=CONFIG) == TINY_STREAM_V4
    assert nu.encode(TINY, config=dataclasses.replace(CONFIG, digests=False)) == TINY_STREAM


def test_golden_v4_digests_are_the_sha256_of_the_canonical_bytes():
    w_digest = TINY_STREAM_V4[46:78]  # after the file header, the model header unit, a unit header and w's header
    assert w_digest == hashlib.sha256(TINY["w"].astype("<f4").tobytes()).digest()
    assert TINY_STREAM_V4.count(hashlib.sha256(TINY["n"].tobytes()).digest()) == 1
    assert nu.decode_tensors(TINY_STREAM_V4).tensors[0].content_digest == w_digest


@pytest.mark.parametrize("stream", [TINY_STREAM, TINY_STREAM_V4], ids=["2.0", "4.0"])
def test_golden_bytes_decode_to_the_model(stream):
    decoded = nu.decode(stream)
    assert list(decoded) == ["w", "n"]
    assert decoded["w"].tobytes() == TINY["w"].tobytes()  # all values lie on the 2**-2 grid
    assert decoded["n"].tobytes() == TINY["n"].tobytes()
    assert hashlib.sha256(decoded["w"].tobytes()).hexdigest() == hashlib.sha256(TINY["w"].tobytes()).hexdigest()
