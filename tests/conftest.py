"""Shared test set-up: one torch thread (two processes with two threads each run 20x slower
on a 2-core machine), and a hypothesis profile without deadlines (the machine is noisy)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=2000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the decoder's tests run without torch
    pass
