"""ADMM and masked fine-tuning under DistributedDataParallel: 2 CPU processes, gloo backend.

Every rank trains on its own shard of the data; DDP averages the gradients, so the parameters
stay identical, and the projection is deterministic, so Z and U stay identical too without any
communication of their own (but for the importance weights, which ADMM takes from rank 0). Each rank saves what it ends with; the test compares them bit for bit.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nncodec_unify import EncoderConfig
from nncodec_unify.method.admm import ADMM, snap_to_grid
from nncodec_unify.method.calibrate import input_energies
from nncodec_unify.method.unify import Target

torch.set_num_threads(1)

WORLD_SIZE = 2
TIMEOUT_S = 120


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _worker(rank: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(0)  # the same initial model on every rank
        model = nn.parallel.DistributedDataParallel(SmallNet())
        data = torch.Generator().manual_seed(100 + rank)  # a different shard on every rank
        x = torch.randn(256, 1, 8, 8, generator=data)
        y = torch.randint(0, 4, (256,), generator=data)
        target = Target(prune_ratio=0.5, unify_ratio=0.3, block=(2, 4))
        # each rank measures the importance on its own shard; ADMM takes rank 0's on every rank
        importance = input_energies(model, [x[:64]])
        admm = ADMM(model, target, rho=0.05, rho_growth=1.3, rho_max=2.0, importance=importance)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        local_losses = []
        for step in range(40):
            index = torch.arange(step % 8 * 32, step % 8 * 32 + 32)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            local_losses.append(float(loss.detach()))
            if step < 20:
                loss = loss + admm.penalty()  # the explicit penalty term ...
            elif step == 20:
                admm.attach(optimizer)  # ... then the optimizer hook
            loss.backward()
            optimizer.step()
            if step % 5 == 4:
                admm.update()
        structure = admm.hard_project()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
        structure.attach(optimizer)
        for step in range(10):
            index = torch.arange(step * 16, step * 16 + 16)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
        state = snap_to_grid(model, EncoderConfig(block=(2, 4)))
        torch.save({"Z": admm.Z, "U": admm.U, "rho": admm.rho, "kinds": admm.kinds, "state": state,
                    "measured": importance, "importance": admm.importance,
                    "holds": structure.holds(), "losses": local_losses},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # see _exit_now
    finally:
        dist.destroy_process_group()
    _exit_now()


def _exit_now() -> None:
    """End a rank that succeeded. Every rank has passed the barrier, so no collective was in
    flight when the group went (a rank that tore gloo down while its peer still talked to it
    aborted now and then: "terminate called without an active exception", SIGABRT); leave
    without the interpreter's exit-time destructors, which can race gloo's threads too."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(worker, tmp_path) -> None:
    """Run ``worker(rank, store, out_dir)`` in WORLD_SIZE spawned processes, within TIMEOUT_S."""
    context = mp.start_processes(worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD_SIZE,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=1):
            assert time.monotonic() < deadline, "the DDP workers did not finish in time"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()


def test_ranks_end_with_identical_z_u_and_weights(tmp_path):
    run_ranks(_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
    first, second = ranks
    assert first["losses"] != second["losses"]  # the shards differ, so agreement is DDP's doing
    assert list(first["Z"]) == ["conv.weight", "fc1.weight", "fc2.weight"]  # names of the bare module
    for name in first["Z"]:
        assert torch.equal(first["Z"][name], second["Z"][name]), name
        assert torch.equal(first["U"][name], second["U"][name]), name
        assert first["U"][name].abs().sum() > 0
        assert np.array_equal(first["kinds"][name], second["kinds"][name])
    assert first["rho"] == second["rho"] == pytest.approx(0.05 * 1.3 ** 8)  # 8 updates
    assert list(first["importance"]) == ["conv.weight", "fc1.weight", "fc2.weight"]
    for name, weights in first["importance"].items():
        assert not np.array_equal(first["measured"][name], second["measured"][name])  # the shards' differ ...
        assert np.array_equal(weights, second["importance"][name])  # ... rank 0's rules
    assert list(first["state"]) == list(second["state"])
    for name, array in first["state"].items():
        assert array.tobytes() == second["state"][name].tobytes(), name
    assert first["holds"] and second["holds"]


# --- distillation after calibration --------------------------------------------------------------

def _distill_run(rank: int | None, out_path: str) -> None:
    """Calibrate on the whole data, then distill on this rank's half of every batch (``rank``
    None: one process on the whole batches)."""
    from nncodec_unify.method.calibrate import CalibrationConfig, calibrate
    from nncodec_unify.method.distill import distill

    torch.manual_seed(0)
    teacher = SmallNet()
    student = SmallNet()
    student.load_state_dict(teacher.state_dict())
    data = torch.Generator().manual_seed(7)
    batches = [torch.randn(32, 1, 8, 8, generator=data) for _ in range(4)]
    coding = EncoderConfig(qp=-24, block=(2, 4))
    report = calibrate(student, batches, CalibrationConfig(
        target=Target(prune_ratio=0.3, unify_ratio=0.3, block=(2, 4)), coding=coding, iterations=6))
    structure = report.structure(student)
    shards = batches if rank is None else [b[rank * 16:(rank + 1) * 16] for b in batches]
    model = student if rank is None else nn.parallel.DistributedDataParallel(student)
    history = distill(model, teacher, shards, structure=structure, coding=coding, epochs=3, lr=1e-3)
    torch.save({"state": snap_to_grid(student, coding), "holds": structure.holds(), "history": history}, out_path)


def _distill_worker(rank: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        _distill_run(rank, os.path.join(out_dir, f"distill{rank}.pt"))
        dist.barrier()  # see _exit_now
    finally:
        dist.destroy_process_group()
    _exit_now()


def test_distillation_under_ddp_matches_one_process(tmp_path):
    run_ranks(_distill_worker, tmp_path)
    _distill_run(None, str(tmp_path / "single.pt"))
    first, second = (torch.load(tmp_path / f"distill{r}.pt", weights_only=False) for r in range(WORLD_SIZE))
    single = torch.load(tmp_path / "single.pt", weights_only=False)
    assert first["history"] != second["history"]  # the shards differ: agreement is DDP's doing
    assert first["holds"] and second["holds"] and single["holds"]
    step = 2.0 ** -6  # qp -24
    equal = total = 0
    for name, array in first["state"].items():
        assert array.tobytes() == second["state"][name].tobytes(), name  # the ranks agree bit for bit
        # one process on the whole batches: the same up to float rounding, which can move a weight
        # that sits on a rounding boundary by one step of the grid
        difference = np.abs(array.astype(np.float64) - single["state"][name].astype(np.float64))
        assert difference.max() <= step * 1.001, name
        equal += int((difference == 0).sum())
        total += difference.size
    assert equal >= 0.98 * total
