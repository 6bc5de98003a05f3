"""Smoke test of ``run_demo`` (the ``nncodec demo`` command) with a few epochs."""

from __future__ import annotations

import json

import pytest
import torch

from nncodec_unify.method.demo import run_demo

torch.set_num_threads(1)


def test_demo_runs_end_to_end_and_reports_the_decoded_model():
    lines: list[str] = []
    ticks = []
    result = run_demo(epochs=3, admm_epochs=2, finetune_epochs=1, progress=lines.append,
                      epoch_progress=lambda *tick: ticks.append(tick))
    assert ticks == [("dense", 1, 3), ("dense", 2, 3), ("dense", 3, 3), ("ADMM", 1, 2), ("ADMM", 2, 2),
                     ("fine-tune", 1, 1)]  # every epoch, for a progress bar
    json.dumps(result)  # the CLI's --json prints it as one object
    for key in ("dense_accuracy", "compressed_accuracy", "bitstream_bytes", "compression_ratio", "bit_exact"):
        assert key in result
    assert result["bit_exact"] is True
    assert 0.5 < result["dense_accuracy"] <= 1.0  # 3 epochs on digits already learn a lot
    assert 0.1 < result["compressed_accuracy"] <= 1.0
    assert result["compression_ratio"] == pytest.approx(result["fp32_bytes"] / result["bitstream_bytes"])
    assert result["compression_ratio"] > 20  # 80% of the blocks pruned, 17% unified
    blocks = result["blocks"]
    assert blocks["pruned"] >= 0.79 * sum(blocks.values())
    assert len(lines) >= 5 and all(isinstance(line, str) and line for line in lines)
    assert any("bit-exact: True" in line for line in lines)


def test_demo_is_deterministic():
    first = run_demo(epochs=1, admm_epochs=1, finetune_epochs=1, seed=3)
    second = run_demo(epochs=1, admm_epochs=1, finetune_epochs=1, seed=3)
    for key in ("dense_accuracy", "compressed_accuracy", "bitstream_bytes", "blocks"):
        assert first[key] == second[key]
