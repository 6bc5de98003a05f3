"""ADMM state and updates, masked fine-tuning that keeps the structure, and snap to grid."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from nncodec_unify import CodingMode, EncoderConfig, TensorRule, decode, encode, encode_with_report
from nncodec_unify.method.admm import ADMM, GridTraining, Structure, same_bits, snap_to_grid, structure_from_weights
from nncodec_unify.codec.format import BlockKind
from nncodec_unify.codec.quant import step_size
from nncodec_unify.method.unify import Target, project, select_kinds

torch.set_num_threads(1)

PRUNED, UNIFIED, DENSE = BlockKind.PRUNED, BlockKind.UNIFIED, BlockKind.DENSE


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.hidden = nn.Linear(8 * 4 * 4, 24)
        self.out = nn.Linear(24, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.out(torch.relu(self.hidden(x.flatten(1))))


def data(seed: int = 0, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 4, 4, generator=g), torch.randint(0, 5, (n,), generator=g)


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def loss_of(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


TARGET = Target(prune_ratio=0.5, unify_ratio=0.3, block=(2, 4))


# --- what is constrained ------------------------------------------------------------------------

def test_defaults_constrain_weight_matrices_only():
    admm = ADMM(make_net(), TARGET)
    assert list(admm.params) == ["conv.weight", "hidden.weight", "out.weight"]
    assert list(ADMM(make_net(), TARGET, exclude_first_last=True).params) == ["hidden.weight"]
    light = Target(prune_ratio=0.1, block=(1, 4))
    admm = ADMM(make_net(), TARGET, rules=[("out.*", None), ("conv.weight", light)])
    assert admm.targets == {"conv.weight": light, "hidden.weight": TARGET}


def test_global_budget_counts_blocks_over_all_constrained_weights():
    budget = Target(prune_ratio=0.6, unify_ratio=0.3, block=(2, 4))
    admm = ADMM(make_net(), budget, budget=budget)
    total = np.bincount(np.concatenate([k.ravel() for k in admm.kinds.values()]), minlength=3)
    blocks = int(total.sum())
    assert blocks == sum(k.size for k in admm.kinds.values())
    assert total[PRUNED] == round(0.6 * blocks) and total[UNIFIED] == round(0.3 * blocks)
    per_layer = {n: np.count_nonzero(k == PRUNED) / k.size for n, k in admm.kinds.items()}
    assert len(set(per_layer.values())) > 1  # spread by cost, not the same share everywhere


def test_initial_state_is_projection_and_zero_dual():
    model = make_net()
    admm = ADMM(model, TARGET)
    for name, param in admm.params.items():
        w = param.detach().numpy()
        expected = project(w, select_kinds(w, TARGET), TARGET.block)
        assert np.array_equal(admm.Z[name].numpy(), expected)
        assert not admm.U[name].any()


# --- the penalty and the optimizer hook -----------------------------------------------------------

def _train(model, admm, optimizer, use_penalty: bool, steps: int = 12):
    x, y = data()
    for step in range(steps):
        optimizer.zero_grad()
        loss = loss_of(model, x, y)
        if use_penalty:
            loss = loss + admm.penalty()
        loss.backward()
        optimizer.step()
        if step % 4 == 3:
            admm.update()


@pytest.mark.parametrize("optimizer_class, tolerance", [(torch.optim.SGD, 1e-6), (torch.optim.Adam, 1e-5)])
def test_penalty_and_hook_give_the_same_training(optimizer_class, tolerance):
    trained = []
    for use_penalty in (True, False):
        model = make_net()
        admm = ADMM(model, TARGET, rho=0.5, rho_growth=1.5)
        optimizer = optimizer_class(model.parameters(), lr=0.05 if optimizer_class is torch.optim.SGD else 1e-2)
        if not use_penalty:
            admm.attach(optimizer)
        _train(model, admm, optimizer, use_penalty)
        trained.append((model, admm))
    (a, admm_a), (b, admm_b) = trained
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=tolerance, rtol=0), name
    assert admm_a.rho == admm_b.rho
    assert all(torch.allclose(admm_a.U[n], admm_b.U[n], atol=tolerance * 10) for n in admm_a.U)


def test_penalty_value_and_gradient():
    model = make_net()
    admm = ADMM(model, TARGET, rho=0.3)
    with torch.no_grad():
        for u in admm.U.values():
            u.normal_()
    expected = sum(0.15 * float(((p.detach() - admm.Z[n] + admm.U[n]) ** 2).sum()) for n, p in admm.params.items())
    penalty = admm.penalty()
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-6)
    penalty.backward()
    for name, param in admm.params.items():
        assert torch.allclose(param.grad, 0.3 * (param - admm.Z[name] + admm.U[name]).detach(), atol=1e-6)
    assert model.conv.bias.grad is None


def test_update_rule_and_rho_schedule():
    model = make_net()
    admm = ADMM(model, TARGET, rho=0.01, rho_growth=2.0, rho_max=0.03)
    with torch.no_grad():
        for p in admm.params.values():
            p.add_(0.1 * torch.randn_like(p))
    for expected_rho in (0.02, 0.03, 0.03):
        before_u = {n: u.clone() for n, u in admm.U.items()}
        old_rho = admm.rho
        stats = admm.update()
        assert admm.rho == pytest.approx(expected_rho) and stats["rho"] == admm.rho
        for name, param in admm.params.items():
            w_plus_u = (param + before_u[name]).detach().numpy()
            expected_z = project(w_plus_u, admm.kinds[name], TARGET.block)
            assert np.array_equal(admm.Z[name].numpy(), expected_z)
            # the scaled dual is rescaled so that rho * U is what the unscaled update gives
            unscaled = before_u[name] + param.detach() - admm.Z[name]
            assert torch.allclose(admm.U[name] * admm.rho, unscaled * old_rho, atol=1e-7)
        assert stats["primal"] == pytest.approx(admm.distance())


def test_state_dict_round_trip():
    model = make_net()
    admm = ADMM(model, TARGET)
    admm.update()
    copy_ = ADMM(copy.deepcopy(model), TARGET)
    copy_.load_state_dict(admm.state_dict())
    assert copy_.rho == admm.rho
    assert all(torch.equal(copy_.Z[n], admm.Z[n]) and torch.equal(copy_.U[n], admm.U[n]) for n in admm.Z)


# --- ADMM drives a tiny problem into the set ------------------------------------------------------

@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_admm_drives_regression_into_the_set(optimizer_name):
    # y = x W*^T with a W* that is itself unified/pruned; start from a dense perturbation of it
    g = torch.Generator().manual_seed(1)
    target = Target(prune_ratio=0.5, unify_ratio=0.5, block=(2, 2))
    truth = torch.randn(8, 8, generator=g)
    truth_np = truth.numpy()
    truth = torch.from_numpy(project(truth_np, select_kinds(truth_np, target), target.block))
    x = torch.randn(256, 8, generator=g)
    y = x @ truth.T + 0.01 * torch.randn(256, 8, generator=g)
    model = nn.Linear(8, 8, bias=False)
    with torch.no_grad():
        model.weight.copy_(truth + 0.3 * torch.randn(8, 8, generator=g))
    admm = ADMM(model, target, rho=0.05, rho_growth=1.3, rho_max=5.0)
    initial = admm.distance()
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    admm.attach(optimizer)
    for step in range(600):
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
        if step % 20 == 19:
            admm.update()
    assert initial > 0.1
    assert admm.distance() < 0.01 * initial
    structure = admm.hard_project()
    assert structure.holds()
    assert np.array_equal(structure.kinds["weight"],
                          select_kinds(truth_np, target))  # it found the true structure
    assert float(((model.weight.detach() - truth) ** 2).mean()) < 1e-3


# --- masked fine-tuning -------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd-momentum-wd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_masked_fine_tuning_keeps_the_structure_exactly(name):
    model = make_net()
    admm = ADMM(model, TARGET)
    structure = admm.hard_project()
    signs = {n: torch.where(p.detach() < 0, -1.0, 1.0) for n, p in admm.params.items()}
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = OPTIMIZERS[name](model.parameters())
    structure.attach(optimizer)
    x, y = data()
    for _ in range(15):
        optimizer.zero_grad()
        loss_of(model, x, y).backward()
        optimizer.step()
        assert structure.holds()
    for pname, masks in structure.masks.items():
        w = masks.param.detach()
        unified = masks.sign != 0
        pruned = (masks.sign == 0) & (masks.keep == 0)
        dense = masks.keep == 1
        assert not w[pruned].any()
        # each unified block keeps its sign pattern (a magnitude may cross zero, flipping the whole
        # block, which is still unified: holds() compares w * sign within each block)
        flips = torch.sign(w[unified]) * signs[pname][unified]
        assert torch.all(flips.abs() == 1)
        assert not torch.equal(w[unified], start[pname][unified])  # magnitudes did train
        assert not torch.equal(w[dense], start[pname][dense])
        assert torch.all((w * masks.sign)[unified] != 0)


def test_unified_gradient_is_the_shared_magnitude_gradient():
    model = make_net()
    structure = ADMM(model, Target(unify_ratio=1.0, block=(2, 4))).hard_project()
    x, y = data()
    loss_of(model, x, y).backward()
    raw = model.hidden.weight.grad.clone()
    structure.project_gradients_()
    masks = structure.masks["hidden.weight"]
    sign = masks.sign
    # every element of block (0, 0) (rows 0-1, columns 0-3) gets sign_j * sum_k sign_k g_k
    shared = float((sign[:2, :4] * raw[:2, :4]).sum())
    assert torch.allclose(model.hidden.weight.grad[:2, :4], sign[:2, :4] * shared, atol=1e-6)
    assert model.conv.bias.grad is not None  # unconstrained parameters are untouched


def test_structure_from_weights_for_magnitude_pruning_baselines():
    model = make_net()
    w = model.hidden.weight.detach().numpy()
    kinds = select_kinds(w, Target(prune_ratio=0.75, block=(1, 1)))
    structure = structure_from_weights(model, {"hidden.weight": kinds}, {"hidden.weight": (1, 1)})
    assert structure.holds()
    assert int((model.hidden.weight == 0).sum()) == int(np.count_nonzero(kinds == PRUNED))
    structure.masks["hidden.weight"].param.data[0, 0] += 1.0  # break it on purpose
    if kinds[0, 0] == PRUNED:
        assert not structure.holds()
    structure.enforce_()
    assert structure.holds()


# --- snap to grid ------------------------------------------------------------------------------

def _fine_tuned(seed: int = 0) -> tuple[Net, Structure]:
    model = make_net(seed)
    structure = ADMM(model, TARGET).hard_project()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    structure.attach(optimizer)
    x, y = data(seed)
    for _ in range(5):
        optimizer.zero_grad()
        loss_of(model, x, y).backward()
        optimizer.step()
    return model, structure


@pytest.mark.parametrize("config", [
    EncoderConfig(block=(2, 4)),
    EncoderConfig(qp=-20, vector_qp=-40, block=(2, 4)),
    EncoderConfig(block=(4, 4), rules=(TensorRule("out.*", mode=CodingMode.RAW), TensorRule("conv.*", qp=-36))),
])
def test_snap_to_grid_gives_a_bit_exact_round_trip(config):
    model, structure = _fine_tuned()
    model.train()
    model(data()[0])  # update the BatchNorm running statistics (float buffers are coded too)
    unsnapped = {n: t.numpy().copy() for n, t in model.state_dict().items()}
    assert not same_bits(unsnapped, decode(encode(unsnapped, config=config)))
    state = snap_to_grid(model, config)
    assert list(state) == list(model.state_dict())
    assert structure.holds()  # rounding is symmetric: unified blocks stay unified (or become pruned)
    decoded = decode(encode(model.state_dict(), config=config))
    assert same_bits(state, decoded)
    rebuilt = make_net(1)
    rebuilt.load_state_dict({n: torch.from_numpy(a.copy()) for n, a in decoded.items()})
    model.eval()
    rebuilt.eval()
    x = data(2)[0]
    assert torch.equal(model(x), rebuilt(x))
    # snapping twice changes nothing
    assert same_bits(snap_to_grid(model, config), state)


def test_snapped_structure_is_what_the_encoder_codes():
    model, structure = _fine_tuned()
    config = EncoderConfig(block=TARGET.block)
    snap_to_grid(model, config)
    result = encode_with_report(model.state_dict(), config=config)
    reports = {r.name: r for r in result.reports}
    for name, kinds in structure.kinds.items():
        pruned, unified, dense = reports[name].block_counts
        intended = np.bincount(kinds.ravel(), minlength=3)
        # rounding may turn unified blocks into pruned ones, or dense blocks into unified/pruned ones
        assert dense <= intended[DENSE]
        assert pruned >= intended[PRUNED]
        assert pruned + unified == intended[PRUNED] + intended[UNIFIED] + (intended[DENSE] - dense)
    unified_levels = model.hidden.weight.detach().numpy() / step_size(config.qp)
    assert np.array_equal(unified_levels, np.rint(unified_levels))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_snap_to_grid_other_float_types(dtype):
    model, _ = _fine_tuned()
    model = model.to(dtype)
    config = EncoderConfig(qp=-36, block=(2, 4))
    state = snap_to_grid(model, config)
    decoded = decode(encode(model.state_dict(), config=config))
    assert same_bits(state, decoded)


def test_grid_training_trains_on_the_grid_with_float_shadows():
    model = make_net()
    structure = ADMM(model, TARGET).hard_project()
    config = EncoderConfig(qp=-20, vector_qp=-32, block=TARGET.block)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # steps well below the grid step 2**-5
    structure.attach(optimizer)
    grid = GridTraining(model, config)
    grid.attach(optimizer)
    start = grid.shadows["hidden.weight"].clone()
    x, y = data()
    for _ in range(6):
        optimizer.zero_grad()
        loss_of(model, x, y).backward()
        optimizer.step()
        assert structure.holds()
        snapped = {n: p.detach().clone() for n, p in model.named_parameters()}
        snap_to_grid(model, config)  # the parameters are already on the grid
        assert all(torch.equal(snapped[n], p) for n, p in model.named_parameters())
    # the shadows moved by less than one grid step, yet they moved; the weights follow them
    shadow = grid.shadows["hidden.weight"]
    assert 0 < float((shadow - start).abs().max()) < 2.0 ** -6  # Adam: about lr = 1e-3 per step
    assert float((model.hidden.weight.detach() - shadow).abs().max()) <= 2.0 ** -6
    model.train()
    model(data()[0])
    state = snap_to_grid(model, config)
    assert same_bits(state, decode(encode(model.state_dict(), config=config)))


# --- bad input, bfloat16 and ties through snap_to_grid ----------------------------------------------

def test_admm_names_bad_arguments_and_weights():
    with pytest.raises(TypeError, match="target must be a Target"):
        ADMM(make_net(), 0.5)
    model = make_net()
    with torch.no_grad():
        model.hidden.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="^hidden.weight: holds NaN or infinite values"):
        ADMM(model, TARGET)


def test_structure_checks_its_kinds_grids():
    model = make_net()
    with pytest.raises(ValueError, match=r"hidden.weight: kinds grid \(3, 3\) does not match a 24x128 matrix"):
        Structure(model, {"hidden.weight": np.zeros((3, 3), np.uint8)}, {"hidden.weight": (2, 4)})
    with pytest.raises(ValueError, match="values other than the block kinds"):
        Structure(model, {"hidden.weight": np.full((12, 32), 7, np.uint8)}, {"hidden.weight": (2, 4)})
    with pytest.raises(KeyError, match="not a parameter"):
        Structure(model, {"nothing.weight": np.zeros((1, 1), np.uint8)}, {"nothing.weight": (2, 4)})


def test_snap_to_grid_keeps_bfloat16_and_ties_for_the_encoder():
    from nncodec_unify.codec.tensors import BFloat16Array

    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16)).bfloat16()
    model[1].weight = model[0].weight
    config = EncoderConfig(qp=-56)
    state = snap_to_grid(model, config)
    assert isinstance(state["0.weight"], BFloat16Array) and state["1.weight"] is state["0.weight"]
    stream = encode(state, config=config)
    assert len(stream) == len(encode(model.state_dict(), config=config))  # coded as bfloat16, once
    decoded = decode(stream)  # the tie's second name comes right after its first
    assert same_bits(state, {name: decoded[name] for name in state})


def test_targets_take_numpy_integers_for_block_sides():
    assert Target(block=(np.int64(2), 4)).block == (2, 4)
    with pytest.raises(ValueError, match="block must be two integers"):
        Target(block=(2.0, 4))


def test_same_bits_compares_by_name_not_by_order():
    a, b = np.arange(3, dtype=np.float32), np.ones(2, dtype=np.float32)
    assert same_bits({"x": a, "y": b}, {"y": b.copy(), "x": a.copy()})
    assert not same_bits({"x": a, "y": b}, {"x": a, "z": b})
    assert not same_bits({"x": a}, {"x": a.astype(np.float64)})


# --- ADMM in a weighted metric (importance) ----------------------------------------------------------

def test_importance_weights_the_penalty_its_gradient_and_the_projection():
    model = make_net()
    rng = np.random.default_rng(4)
    columns = rng.uniform(0.5, 4.0, size=(1, 128))
    admm = ADMM(model, TARGET, rho=0.3, importance={"hidden.weight": columns})
    weights = columns / columns.mean()  # scaled to mean 1
    with torch.no_grad():
        for u in admm.U.values():
            u.normal_()
    expected = 0.0
    for name, param in admm.params.items():
        difference = (param.detach() - admm.Z[name] + admm.U[name]).double().numpy()
        scale = weights.reshape(1, -1) if name == "hidden.weight" else 1.0
        expected += 0.15 * float((scale * difference.reshape(difference.shape[0], -1) ** 2).sum())
    penalty = admm.penalty()
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-6)
    penalty.backward()
    hidden = admm.params["hidden.weight"]
    gradient = 0.3 * (hidden - admm.Z["hidden.weight"] + admm.U["hidden.weight"]).detach() * torch.from_numpy(weights).float()
    assert torch.allclose(hidden.grad, gradient, atol=1e-6)
    # the projection is the weighted one: kinds by weighted cost, magnitudes weighted means
    array = hidden.detach().double().numpy()
    kinds = select_kinds(array, TARGET, weights)
    assert np.array_equal(admm.kinds["hidden.weight"], kinds)
    assert np.allclose(admm.Z["hidden.weight"].numpy(), project(array, kinds, TARGET.block, weights), atol=1e-6)


def test_uniform_importance_is_plain_admm():
    plain, weighted = make_net(), make_net()
    admm_plain = ADMM(plain, TARGET, budget=TARGET, rho=0.2)
    admm_weighted = ADMM(weighted, TARGET, budget=TARGET, rho=0.2,
                         importance={"hidden.weight": np.full((1, 128), 7.0), "out.weight": 3.0})
    for admm, model in ((admm_plain, plain), (admm_weighted, weighted)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        admm.attach(optimizer)
        _train(model, admm, optimizer, use_penalty=False)
    for name in admm_plain.params:
        assert np.array_equal(admm_plain.kinds[name], admm_weighted.kinds[name])
        assert torch.allclose(admm_plain.Z[name], admm_weighted.Z[name], atol=1e-6)
        assert torch.allclose(admm_plain.params[name], admm_weighted.params[name], atol=1e-6)


@pytest.mark.parametrize("importance, message", [
    ({"conv.bias": np.ones(8)}, "importance names 'conv.bias', which is not a constrained parameter"),
    ({"hidden.weight": np.ones((1, 7))}, r"importance of hidden.weight: shape \(1, 7\) does not broadcast to its matrix view \(24, 128\)"),
    ({"hidden.weight": -np.ones((1, 128))}, "importance of hidden.weight: weights must be finite, non-negative and not all 0"),
    ({"hidden.weight": np.zeros((24, 1))}, "not all 0"),
    ({"hidden.weight": np.full((1, 128), np.nan)}, "finite"),
])
def test_importance_is_checked(importance, message):
    with pytest.raises(ValueError, match=message):
        ADMM(make_net(), TARGET, importance=importance)


def test_importance_in_half_precision_and_the_weighted_distance():
    model = make_net().to(torch.bfloat16)
    columns = np.ones((1, 128))
    columns[0, 0] = 1e6  # scaled to mean 1 it is ~1e5: beyond float16, and rounded in bfloat16
    admm = ADMM(model, TARGET, rho=0.3, importance={"hidden.weight": columns})
    assert admm._penalty_weights["hidden.weight"].dtype == torch.float32
    x, y = data()
    loss_of(model, x.to(torch.bfloat16), y).backward()
    admm.add_penalty_grad_()
    assert all(p.grad.dtype == torch.bfloat16 and torch.isfinite(p.grad).all() for p in admm.params.values())
    # the primal residual is measured in the same metric: W = Z but in column 0, which dominates it
    with torch.no_grad():
        admm.Z = {name: torch.ones_like(p) for name, p in admm.params.items()}
        for p in admm.params.values():
            p.fill_(1.0)
        model.hidden.weight[:, 0] = 0.0
    weights = columns / columns.mean()
    apart = 24 * weights[0, 0]
    together = sum(p.numel() for n, p in admm.params.items() if n != "hidden.weight") + 24 * (weights.sum() - weights[0, 0])
    assert admm.distance() == pytest.approx(np.sqrt(apart / together), rel=1e-3)
    assert admm.distance() > 1  # unweighted it would be sqrt(24 / 2000-odd)


def test_a_frozen_parameter_gets_no_penalty_gradient_and_stays_put():
    """The hook set .grad on a parameter with requires_grad False, and the optimizer stepped it."""
    model = make_net()
    model.hidden.weight.requires_grad_(False)
    frozen = model.hidden.weight.detach().clone()
    admm = ADMM(model, TARGET, rho=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    admm.attach(optimizer)
    _train(model, admm, optimizer, use_penalty=False, steps=3)
    assert model.hidden.weight.grad is None and torch.equal(model.hidden.weight, frozen)
    assert model.out.weight.grad is not None


def test_loading_a_state_copies_it():
    model = make_net()
    admm = ADMM(model, TARGET, rho=0.3)
    saved = admm.state_dict()
    kept = {name: u.clone() for name, u in saved["U"].items()}
    again = ADMM(make_net(), TARGET, rho=0.3)
    again.load_state_dict(saved)
    again.update()
    assert all(torch.equal(saved["U"][name], kept[name]) for name in kept)  # the checkpoint is untouched


def test_a_rule_that_matches_no_parameter_warns():
    with pytest.warns(UserWarning, match="^rule 'hiden.weight' matches no tensor name$"):
        admm = ADMM(make_net(), TARGET, rules=[("hiden.weight", None)])  # a typo: hidden stays constrained
    assert "hidden.weight" in admm.params


def test_a_keep_dense_rule_is_outside_a_global_budget():
    """ADMM counted a rule's Target() in the global budget and pruned its tensor; calibration
    (in_budget) leaves it out."""
    admm = ADMM(make_net(), TARGET, budget=TARGET, rules=[("hidden.weight", Target())])
    assert "hidden.weight" in admm.params
    assert (admm.kinds["hidden.weight"] == DENSE).all()
    others = np.concatenate([admm.kinds[name].ravel() for name in admm.params if name != "hidden.weight"])
    assert np.count_nonzero(others == PRUNED) == round(TARGET.prune_ratio * others.size)
