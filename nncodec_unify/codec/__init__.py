"""The codec: everything a device needs to decode a stream, and the encoder beside it.

numpy and constriction only: nothing here imports torch at module level (``checkpoint``
imports it lazily, for ``.pt`` files alone) or any training code. ``tests/test_torch_free.py``
proves the decode path never loads torch or ``nncodec_unify.method``.
"""
