"""Projection onto the unified/pruned set, exact block selection, and post-training projection."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nncodec_unify import EncoderConfig, decode, encode_with_report
from nncodec_unify.codec.blocks import block_kinds, grid_shape, matrix_shape
from nncodec_unify.codec.format import BlockKind
from nncodec_unify.method.posttrain import project_tensors
from nncodec_unify.method.unify import (
    Target,
    block_costs,
    plan_kinds,
    project,
    project_arrays,
    projection_cost,
    select_blocks,
    select_kinds,
    select_threshold,
    selected_targets,
)

PRUNED, UNIFIED, DENSE = BlockKind.PRUNED, BlockKind.UNIFIED, BlockKind.DENSE


# --- strategies -------------------------------------------------------------------------------

@st.composite
def block_problems(draw, max_blocks: int = 7):
    """Per-block costs ``u <= p`` (as from real blocks) and counts ``P + U <= N``."""
    n = draw(st.integers(1, max_blocks))
    # small integer grids make ties (and so tie-breaking bugs) likely
    unify = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)), dtype=np.float64)
    extra = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)), dtype=np.float64)
    n_prune = draw(st.integers(0, n))
    n_unify = draw(st.integers(0, n - n_prune))
    return unify + extra, unify, n_prune, n_unify


@st.composite
def weight_matrices(draw):
    rows, cols = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    block = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(rows, cols)).astype(np.float32)
    matrix[rng.random((rows, cols)) < 0.1] = 0.0  # exact zeros: a unified block must still get a sign
    return matrix, block


def brute_force(prune_cost, unify_cost, n_prune, n_unify) -> float:
    n = len(prune_cost)
    best = np.inf
    for pruned in itertools.combinations(range(n), n_prune):
        rest = [i for i in range(n) if i not in pruned]
        for unified in itertools.combinations(rest, n_unify):
            best = min(best, prune_cost[list(pruned)].sum() + unify_cost[list(unified)].sum())
    return float(best)


def kinds_cost(kinds, prune_cost, unify_cost) -> float:
    return float(prune_cost[kinds == PRUNED].sum() + unify_cost[kinds == UNIFIED].sum())


def float_kinds(matrix: np.ndarray, block) -> np.ndarray:
    """Block kinds of a float matrix by exact magnitude equality (float32 bits as integers)."""
    bits = np.abs(matrix.astype(np.float32)).view(np.int32)
    return block_kinds(bits, *block)


# --- exact selection ---------------------------------------------------------------------------

class TestSelectBlocks:
    @settings(max_examples=400, deadline=None)
    @given(block_problems())
    def test_optimal_against_brute_force(self, problem):
        prune_cost, unify_cost, n_prune, n_unify = problem
        kinds = select_blocks(prune_cost, unify_cost, n_prune, n_unify)
        assert np.count_nonzero(kinds == PRUNED) == n_prune
        assert np.count_nonzero(kinds == UNIFIED) == n_unify
        assert kinds_cost(kinds, prune_cost, unify_cost) == brute_force(prune_cost, unify_cost, n_prune, n_unify)

    @settings(max_examples=150, deadline=None)
    @given(st.integers(0, 2**32 - 1), st.integers(2, 8))
    def test_optimal_on_real_block_costs(self, seed, n):
        rng = np.random.default_rng(seed)
        costs = block_costs(rng.laplace(size=(4, 4 * n)) * rng.random((1, 4 * n)), (4, 4))
        n_prune = int(rng.integers(0, n + 1))
        n_unify = int(rng.integers(0, n - n_prune + 1))
        kinds = select_blocks(costs.prune, costs.unify, n_prune, n_unify)
        best = brute_force(costs.prune.ravel(), costs.unify.ravel(), n_prune, n_unify)
        assert kinds_cost(kinds, costs.prune.ravel(), costs.unify.ravel()) == pytest.approx(best, rel=1e-12)

    def test_beats_the_greedy_order(self):
        # greedy prunes the smallest norm (block 0) and then unifies block 1: cost 1 + 1.0 = 2;
        # the optimum prunes block 1 and unifies block 0, which unifies at no cost: 1.05
        prune_cost, unify_cost = np.array([1.0, 1.05]), np.array([0.0, 1.0])
        kinds = select_blocks(prune_cost, unify_cost, 1, 1)
        assert kinds.tolist() == [UNIFIED, PRUNED]
        assert kinds_cost(kinds, prune_cost, unify_cost) == 1.05

    def test_rejects_impossible_counts(self):
        with pytest.raises(ValueError, match="cannot choose"):
            select_blocks(np.ones(3), np.zeros(3), 2, 2)

    def test_large_input_is_fast_and_counts_hold(self):
        rng = np.random.default_rng(1)
        prune_cost = rng.random(200_000)
        unify_cost = prune_cost * rng.random(200_000)
        kinds = select_blocks(prune_cost, unify_cost, 100_000, 50_000)
        assert np.bincount(kinds, minlength=3)[[PRUNED, UNIFIED, DENSE]].tolist() == [100_000, 50_000, 50_000]


class TestThreshold:
    @settings(max_examples=200, deadline=None)
    @given(block_problems(), st.sampled_from([0.0, 0.2, 0.5, 1.0]))
    def test_optimal_for_its_rule(self, problem, threshold):
        prune_cost, unify_cost, n_prune, _ = problem
        kinds = select_threshold(prune_cost, unify_cost, n_prune, threshold)
        qualifies = unify_cost <= threshold * prune_cost
        assert np.count_nonzero(kinds == PRUNED) == n_prune
        assert np.array_equal(kinds == UNIFIED, qualifies & (kinds != PRUNED))
        kept_cost = np.where(qualifies, unify_cost, 0.0)
        best = min(prune_cost[list(p)].sum() + np.delete(kept_cost, list(p)).sum()
                   for p in itertools.combinations(range(len(prune_cost)), n_prune))
        assert kinds_cost(kinds, prune_cost, unify_cost) == best

    def test_relative_loss(self):
        # one block with equal magnitudes (relative loss 0), one of |v| = 1, 0, 1, 0 (loss 1 / 2)
        w = np.array([[1.0, -1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]], dtype=np.float32)
        costs = block_costs(w, (2, 2))
        assert (costs.unify / costs.prune).ravel().tolist() == [0.0, 0.5]
        assert select_kinds(w, Target(unify_threshold=0.4, block=(2, 2))).ravel().tolist() == [UNIFIED, DENSE]
        assert select_kinds(w, Target(unify_threshold=0.5, block=(2, 2))).ravel().tolist() == [UNIFIED, UNIFIED]


# --- projection --------------------------------------------------------------------------------

class TestProjection:
    @settings(max_examples=150, deadline=None)
    @given(weight_matrices(), st.floats(0, 1), st.floats(0, 1))
    def test_lands_in_the_set_and_is_idempotent(self, case, prune_share, unify_share):
        matrix, block = case
        target = Target(prune_ratio=prune_share * 0.5, unify_ratio=unify_share * 0.5, block=block)
        kinds = select_kinds(matrix, target)
        assert kinds.shape == grid_shape(*matrix.shape, *block)
        projected = project(matrix, kinds, block)
        assert projected.dtype == matrix.dtype and projected.shape == matrix.shape
        got = float_kinds(projected, block)
        assert np.all(got[kinds == PRUNED] == PRUNED)
        assert np.all(np.isin(got[kinds == UNIFIED], [UNIFIED, PRUNED]))  # PRUNED only for an all-zero block
        assert np.array_equal(project(projected, kinds, block), projected)
        dense = np.repeat(np.repeat(kinds == DENSE, block[0], 0), block[1], 1)[:matrix.shape[0], :matrix.shape[1]]
        assert np.array_equal(projected[dense], matrix[dense])

    @settings(max_examples=100, deadline=None)
    @given(weight_matrices())
    def test_distance_is_the_block_cost(self, case):
        matrix, block = case
        kinds = select_kinds(matrix, Target(prune_ratio=0.3, unify_ratio=0.4, block=block))
        distance = float(np.sum((project(matrix, kinds, block).astype(np.float64) - matrix) ** 2))
        assert distance == pytest.approx(projection_cost(matrix, kinds, block), rel=1e-5, abs=1e-9)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.floats(-4, 4, width=32), min_size=1, max_size=16), st.floats(-3, 3))
    def test_unified_block_is_the_nearest_point(self, values, other_magnitude):
        # no other vector with all magnitudes equal is nearer (sign pattern and magnitude)
        v = np.array(values, dtype=np.float64)[None, :]
        kinds = np.full((1, 1), UNIFIED, dtype=np.uint8)
        projected = project(v, kinds, (1, v.size))
        best = np.sum((projected - v) ** 2)
        candidate = np.where(v < 0, -1.0, 1.0) * abs(other_magnitude)
        assert best <= np.sum((candidate - v) ** 2) + 1e-12
        flipped = candidate.copy()
        flipped[0, 0] = -flipped[0, 0]
        assert best <= np.sum((flipped - v) ** 2) + 1e-12

    def test_zero_weight_in_a_unified_block_gets_a_sign(self):
        w = np.array([[0.0, -2.0], [1.0, 0.0]], dtype=np.float32)
        projected = project(w, np.full((1, 1), UNIFIED, dtype=np.uint8), (2, 2))
        assert projected.tolist() == [[0.75, -0.75], [0.75, 0.75]]

    def test_partial_edge_blocks_use_their_own_size(self):
        w = np.arange(1, 16, dtype=np.float32).reshape(3, 5)
        kinds = np.full(grid_shape(3, 5, 2, 2), UNIFIED, dtype=np.uint8)
        projected = project(w, kinds, (2, 2))
        assert projected[2, 4] == 15.0  # a 1x1 corner block is its own mean
        assert projected[2, 0] == 11.5  # the 1x2 bottom edge block (11, 12)
        costs = block_costs(w, (2, 2))
        assert costs.count.tolist() == [[4, 4, 2], [2, 2, 1]]

    def test_conv_weight_uses_the_codec_view(self):
        rng = np.random.default_rng(3)
        w = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
        kinds = select_kinds(w, Target(prune_ratio=0.5, unify_ratio=0.25, block=(4, 4)))
        assert kinds.shape == grid_shape(*matrix_shape(w.shape), 4, 4) == (2, 7)
        assert np.bincount(kinds.ravel(), minlength=3)[[PRUNED, UNIFIED]].tolist() == [7, 4]


# --- which tensors, and global budgets -----------------------------------------------------------

def test_selected_targets_defaults_rules_and_first_last():
    names = ["conv1.weight", "conv1.bias", "conv2.weight", "fc.weight", "fc.bias"]
    shapes = {"conv1.weight": (4, 1, 3, 3), "conv1.bias": (4,), "conv2.weight": (8, 4, 3, 3),
              "fc.weight": (10, 32), "fc.bias": (10,)}
    target, light = Target(prune_ratio=0.5), Target(prune_ratio=0.1, block=(1, 4))
    assert list(selected_targets(names, shapes, target)) == ["conv1.weight", "conv2.weight", "fc.weight"]
    assert list(selected_targets(names, shapes, target, exclude_first_last=True)) == ["conv2.weight"]
    chosen = selected_targets(names, shapes, target, rules=[("conv*", None), ("conv2.*", light), ("fc.bias", light)])
    assert chosen == {"conv2.weight": light, "fc.weight": target, "fc.bias": light}


def test_global_budget_is_the_exact_optimum_over_the_union():
    rng = np.random.default_rng(5)
    arrays = {"a": rng.normal(size=(4, 8)), "b": 0.1 * rng.normal(size=(4, 4))}  # 2 + 1 blocks of 4x4
    target = Target(prune_ratio=1 / 3, unify_ratio=1 / 3, block=(4, 4))
    kinds = plan_kinds(arrays, {"a": target, "b": target}, budget=target, normalize="none")
    flat = np.concatenate([kinds["a"].ravel(), kinds["b"].ravel()])
    assert np.count_nonzero(flat == PRUNED) == 1 and np.count_nonzero(flat == UNIFIED) == 1
    prune_cost = np.concatenate([block_costs(arrays[n], (4, 4)).prune.ravel() for n in "ab"])
    unify_cost = np.concatenate([block_costs(arrays[n], (4, 4)).unify.ravel() for n in "ab"])
    assert kinds_cost(flat, prune_cost, unify_cost) == pytest.approx(brute_force(prune_cost, unify_cost, 1, 1))


def test_global_budget_spreads_by_cost():
    rng = np.random.default_rng(6)
    # "wide" has small weights (like a layer with a large fan-in), "narrow" large ones
    wide = 0.05 * rng.normal(size=(16, 64))
    narrow = rng.normal(size=(8, 8))
    target = Target(prune_ratio=0.5, unify_ratio=0.25, block=(4, 4))
    arrays, targets = {"wide": wide, "narrow": narrow}, {"wide": target, "narrow": target}
    by_cost = plan_kinds(arrays, targets, budget=target)
    per_layer = plan_kinds(arrays, targets)
    share = plan_kinds(arrays, targets, budget=target, normalize="rms")
    pruned = {n: int(np.count_nonzero(k == PRUNED)) for n, k in by_cost.items()}
    assert pruned == {"wide": 34, "narrow": 0}  # round(0.5 * (64 + 4)) blocks, all in the cheap layer
    assert np.count_nonzero(per_layer["narrow"] == PRUNED) == 2
    assert sum(np.count_nonzero(k == UNIFIED) for k in by_cost.values()) == 17

    def total(kinds, scale):
        return sum(projection_cost(arrays[n], kinds[n], (4, 4)) * scale(n) for n in arrays)

    assert total(by_cost, lambda n: 1.0) < total(per_layer, lambda n: 1.0)
    rms = {n: 1.0 / np.mean(arrays[n] ** 2) for n in arrays}
    assert total(share, rms.get) <= total(by_cost, rms.get)
    assert 0 < np.count_nonzero(share["narrow"] == PRUNED) <= 3  # close to the same share per layer
    with pytest.raises(ValueError, match="normalize"):
        plan_kinds(arrays, targets, budget=target, normalize="relative")


def test_target_validation():
    with pytest.raises(ValueError, match="at most 1"):
        Target(prune_ratio=0.7, unify_ratio=0.5)
    with pytest.raises(ValueError, match="block"):
        Target(block=(0, 4))
    with pytest.raises(ValueError, match="unify_threshold"):
        Target(unify_threshold=1.5)
    assert Target(prune_ratio=0.25, unify_ratio=0.5).counts(10) == (3, 5)
    assert Target(prune_ratio=0.5, unify_threshold=0.1).counts(10) == (5, 0)


# --- post-training projection --------------------------------------------------------------------

def _checkpoint(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.normal(0, 0.1, size=(8, 4, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(0, 0.1, size=8).astype(np.float32),
        "fc.weight": rng.normal(0, 0.05, size=(16, 72)).astype(np.float32),
        "fc.bias": rng.normal(0, 0.1, size=16).astype(np.float32),
        "position_ids": np.arange(5, dtype=np.int64)[None],
    }


def test_posttrain_projects_weights_and_reports_distortion():
    tensors = _checkpoint()
    projected, report = project_tensors(tensors, prune_ratio=0.5, unify_ratio=0.3, block=(4, 4))
    assert list(projected) == list(tensors)
    for name in ("conv.bias", "fc.bias", "position_ids"):
        assert projected[name] is tensors[name]
    assert [t.name for t in report.tensors] == ["conv.weight", "fc.weight"]
    for t in report.tensors:
        grid = grid_shape(*matrix_shape(t.shape), 4, 4)
        blocks = grid[0] * grid[1]
        pruned, unified = round(0.5 * blocks), round(0.3 * blocks)
        assert t.blocks == (pruned, unified, blocks - pruned - unified)
        difference = projected[t.name].astype(np.float64) - tensors[t.name]
        assert t.squared_error == pytest.approx(np.sum(difference ** 2))
        assert 0 < t.relative_error < 1
    assert report.to_dict()["blocks"]["pruned"] == report.blocks[0]
    assert len(report.lines()) == 4 and report.lines()[-1].startswith("total")


def test_posttrain_options_select_tensors():
    tensors = _checkpoint()
    _, report = project_tensors(tensors, prune_ratio=0.5, exclude=["conv.*"])
    assert [t.name for t in report.tensors] == ["fc.weight"]
    _, report = project_tensors(tensors, prune_ratio=0.5, only=["conv.*"])
    assert [t.name for t in report.tensors] == ["conv.weight"]
    _, report = project_tensors(tensors, prune_ratio=0.5, exclude_first_last=True)
    assert report.tensors == ()
    _, report = project_tensors(tensors, prune_ratio=0.5, unify_threshold=0.05, global_budget=True, block=(2, 8))
    assert sum(report.blocks[:1]) == round(0.5 * sum(sum(t.blocks) for t in report.tensors))
    with pytest.raises(ValueError, match="at most 1"):
        project_tensors(tensors, prune_ratio=0.8, unify_ratio=0.8)
    tensors["fc.weight"][3, 5] = np.nan
    with pytest.raises(ValueError, match="'fc.weight' holds nan"):
        project_tensors(tensors, prune_ratio=0.5)
    _, report = project_tensors(tensors, prune_ratio=0.5, exclude=["fc.*"])
    assert [t.name for t in report.tensors] == ["conv.weight"]


def test_posttrain_result_is_coded_compactly_and_exactly():
    tensors = _checkpoint()
    projected, _ = project_tensors(tensors, prune_ratio=0.6, unify_ratio=0.4, block=(4, 4))
    config = EncoderConfig(block=(4, 4))
    result = encode_with_report(projected, config=config)
    counts = {r.name: r.block_counts for r in result.reports if r.block_counts is not None}
    for name in ("conv.weight", "fc.weight"):
        # every block is pruned or unified (the all-zero count depends on rounding of tiny magnitudes)
        pruned, unified, dense = counts[name]
        assert dense == 0 and pruned >= round(0.6 * (pruned + unified))
    before = {r.name: r.coded_bytes for r in encode_with_report(tensors, config=config).reports}
    weights = ("conv.weight", "fc.weight")
    after = sum(r.coded_bytes for r in result.reports if r.name in weights)
    assert after < sum(before[name] for name in weights) / 3
    decoded = decode(result.data)
    for name in ("conv.weight", "fc.weight"):
        assert np.max(np.abs(decoded[name] - projected[name])) <= 2.0 ** -9


def test_a_lazy_projection_holds_one_projected_tensor_and_matches_the_eager_one():
    """project_lazily projects each tensor when it is read: the same values and report as
    project_tensors, with a traced peak of about one tensor's working set while reading a
    model tensor by tensor (project_tensors holds the projected model); declared ties give
    the very projection of their name, and find_ties sees them."""
    import tracemalloc

    from nncodec_unify.codec.tensors import find_ties
    from nncodec_unify.method.posttrain import project_lazily, project_tensors

    rng = np.random.default_rng(5)
    model = {f"l{i}.weight": rng.laplace(0, 0.02, (256, 512)).astype(np.float32) for i in range(24)}  # 12 MiB
    options = dict(prune_ratio=0.3, unify_ratio=0.2, block=(4, 4))
    eager, report = project_tensors(model, **options)
    lazy = project_lazily(model, **options)
    tracemalloc.start()
    try:
        for name in lazy:
            assert np.array_equal(lazy[name], eager[name]), name
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20, peak  # one 0.5 MiB tensor's float64 working set, not 12 MiB of projections
    assert [(d.name, d.blocks) for d in lazy.report().tensors] == [(d.name, d.blocks) for d in report.tensors]
    assert lazy.report().relative_error == pytest.approx(report.relative_error, rel=1e-12)

    tied = {"a": model["l0.weight"], "b": model["l0.weight"], "c": model["l1.weight"]}
    projected = project_lazily(tied, ties={"b": "a"}, **options)
    assert find_ties(projected) == {"b": "a"} and projected["a"] is projected["b"]
    assert [d.name for d in projected.report().tensors] == ["a"]


@pytest.mark.parametrize("global_budget", [False, True])
def test_weights_steer_the_plan_and_the_magnitudes(global_budget):
    rng = np.random.default_rng(11)
    matrix = rng.normal(size=(4, 16))  # four 4x4 blocks side by side
    matrix[:, 12:] *= 0.1  # the last block is the weakest ...
    weights = np.ones((1, 16))
    weights[0, 12:] = 1e4  # ... but its input columns are strong
    target = Target(prune_ratio=0.25, unify_ratio=0.0, block=(4, 4))
    budget = target if global_budget else None
    plain = plan_kinds({"w": matrix}, {"w": target}, budget=budget)["w"]
    weighted = plan_kinds({"w": matrix}, {"w": target}, budget=budget, weights={"w": weights})["w"]
    assert plain[0, 3] == PRUNED and weighted[0, 3] != PRUNED
    assert np.count_nonzero(weighted == PRUNED) == 1
    # a tensor the weights do not name is planned as before
    other = plan_kinds({"w": matrix}, {"w": target}, budget=budget, weights={"v": weights})["w"]
    assert np.array_equal(other, plain)


def test_project_arrays_weights_the_unified_magnitude():
    values = np.array([[1.0, -3.0, 2.0, 4.0]])
    weights = np.array([[0.0, 0.0, 0.0, 1.0]])
    target = Target(prune_ratio=0.0, unify_ratio=1.0, block=(1, 4))
    projected, kinds = project_arrays({"w": values, "b": np.ones(3)}, {"w": target}, weights={"w": weights})
    assert kinds["w"].tolist() == [[UNIFIED]]
    assert projected["w"].tolist() == [[4.0, -4.0, 4.0, 4.0]]  # the magnitude of the only weighted element
    assert projected["b"].tolist() == [1.0, 1.0, 1.0]


def test_project_tensors_keeps_tied_weights_tied_and_counts_them_once():
    from nncodec_unify.method.posttrain import project_tensors

    rng = np.random.default_rng(12)
    shared = rng.normal(size=(8, 8)).astype(np.float32)
    tensors = {"emb": shared, "mid": rng.normal(size=(8, 8)).astype(np.float32), "head": shared}
    out, report = project_tensors(tensors, prune_ratio=0.25, unify_threshold=0.4, global_budget=True)
    assert out["head"] is out["emb"]
    assert [t.name for t in report.tensors] == ["emb", "mid"]
    assert sum(t.blocks[0] for t in report.tensors) == 2  # a quarter of the 8 blocks of emb and mid, not of 12


def test_project_tensors_takes_bfloat16_and_gives_it_back_as_bfloat16():
    """bfloat16 (torch, or the package's BFloat16Array) failed with a TypeError from np.asarray."""
    torch = pytest.importorskip("torch")
    import nncodec_unify as nu
    from nncodec_unify.codec.tensors import BFloat16Array
    from nncodec_unify.method.posttrain import project_tensors

    torch.manual_seed(0)
    source = torch.randn(8, 8).bfloat16()
    bits = BFloat16Array(source.view(torch.int16).numpy().view(np.uint16))
    for value in (source, bits):
        out, report = project_tensors({"w": value}, prune_ratio=0.5, block=(2, 2))
        assert isinstance(out["w"], BFloat16Array) and report.blocks == (8, 0, 8)
        decoded = nu.decode_tensors(nu.encode(out))
        assert decoded.tensors[0].dtype.name == "BFLOAT16"
