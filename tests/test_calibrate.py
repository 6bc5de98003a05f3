"""Layer-wise calibrated unification and pruning (nncodec_unify.method.calibrate) and distillation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nncodec_unify import EncoderConfig, decode, encode
from nncodec_unify.method.admm import same_bits, snap_to_grid
from nncodec_unify.codec.blocks import expand_blocks
from nncodec_unify.method.calibrate import (CalibrationConfig, _layer_rows, calibrate, collect_layers, input_energies,
                                           solve_layer)
from nncodec_unify.method.distill import distill
from nncodec_unify.codec.format import BlockKind
from nncodec_unify.codec.quant import step_size
from nncodec_unify.method.unify import Target

torch.set_num_threads(1)

QP = -24
STEP = float(step_size(QP))


def correlated_inputs(rows: int, cols: int, seed: int) -> np.ndarray:
    """Inputs with strongly correlated, unequally scaled features (like real activations)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(cols, cols)) * rng.lognormal(sigma=1.0, size=(1, cols))
    return rng.normal(size=(rows, cols)) @ mixing / np.sqrt(cols)


def assert_in_structure(matrix: np.ndarray, kinds: np.ndarray, block: tuple[int, int], step: float) -> None:
    rows, cols = matrix.shape
    element = expand_blocks(kinds, *block, rows, cols)
    levels = matrix / step
    np.testing.assert_array_equal(levels, np.rint(levels))  # on the grid
    assert (matrix[element == BlockKind.PRUNED] == 0).all()
    magnitude = np.abs(matrix)
    for r, c in zip(*np.nonzero(kinds == BlockKind.UNIFIED), strict=True):
        part = magnitude[r * block[0]:(r + 1) * block[0], c * block[1]:(c + 1) * block[1]]
        assert (part == part.flat[0]).all()


class TestSolveLayer:
    @pytest.mark.parametrize("seed", range(4))
    def test_structure_exact_and_better_than_plain_projection(self, seed):
        rng = np.random.default_rng(seed)
        w0 = rng.normal(scale=0.1, size=(24, 32))
        x = correlated_inputs(2000, 32, seed)
        gram = x.T @ x / len(x)
        counts = (10, 18)  # of 6 x 8 = 48 blocks
        w, kinds, info = solve_layer(w0, gram, block=(4, 4), counts=counts, step=STEP, iterations=30)
        assert ((kinds == BlockKind.PRUNED).sum(), (kinds == BlockKind.UNIFIED).sum()) == counts
        assert_in_structure(w, kinds, (4, 4), STEP)
        # measured on the data: the output error of the solution beats the plain projection's
        plain, plain_kinds, _ = solve_layer(w0, gram, block=(4, 4), counts=counts, step=STEP, iterations=0)
        error = np.linalg.norm(x @ (w - w0).T)
        plain_error = np.linalg.norm(x @ (plain - w0).T)
        assert error < 0.8 * plain_error
        assert info["error"] < info["plain_error"] and info["best_iteration"] > 0

    def test_grid_only_and_no_grid(self):
        rng = np.random.default_rng(5)
        w0 = rng.normal(scale=0.1, size=(8, 16))
        x = correlated_inputs(500, 16, 5)
        w, kinds, info = solve_layer(w0, x.T @ x / 500, counts=None, step=STEP, iterations=20)
        assert (kinds == BlockKind.DENSE).all()
        assert_in_structure(w, kinds, (4, 4), STEP)
        assert info["error"] <= info["plain_error"]
        free, _, free_info = solve_layer(w0, x.T @ x / 500, counts=None, step=None, iterations=5)
        np.testing.assert_allclose(free, w0)  # nothing to satisfy: W0 itself
        assert free_info["error"] == 0.0

    def test_deterministic(self):
        rng = np.random.default_rng(7)
        w0 = rng.normal(size=(12, 20))
        gram = np.cov(correlated_inputs(300, 20, 7).T)
        first = solve_layer(w0, gram, block=(2, 4), counts=(5, 10), step=STEP)
        second = solve_layer(w0, gram, block=(2, 4), counts=(5, 10), step=STEP)
        assert first[0].tobytes() == second[0].tobytes()
        assert np.array_equal(first[1], second[1])


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # registered in another order than called: calibration must follow the calls
        self.second = nn.Linear(48, 16)
        self.first = nn.Linear(24, 48)

    def forward(self, x):
        return self.second(torch.tanh(self.first(x)))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.conv1d = nn.Conv1d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))  # (n, 8, 4, 4)
        x = torch.relu(self.conv1d(x.flatten(2)))  # (n, 8, 16)
        return self.fc(x.flatten(1))


class Block(nn.Module):
    """One pre-norm transformer block."""

    def __init__(self, width: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.out = nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        n, t, w = x.shape
        h = self.norm1(x)
        q, k, v = (f(h).view(n, t, self.heads, -1).transpose(1, 2) for f in (self.query, self.key, self.value))
        attention = torch.softmax(q @ k.transpose(-1, -2) / (w // self.heads) ** 0.5, -1) @ v
        x = x + self.out(attention.transpose(1, 2).reshape(n, t, w))
        return x + self.down(torch.relu(self.up(self.norm2(x))))


def make(model_class, seed=0):
    torch.manual_seed(seed)
    return model_class()


def inputs_for(model_class, count=8, seed=1):
    generator = torch.Generator().manual_seed(seed)
    if model_class is CNN:  # smooth images: neighbouring pixels are correlated, as in real ones
        return [nn.functional.interpolate(torch.randn(16, 3, 3, 3, generator=generator), size=8, mode="bilinear")
                for _ in range(count)]
    shape = {MLP: (32, 24), Block: (8, 6, 32)}[model_class]
    return [torch.randn(*shape, generator=generator) for _ in range(count)]


TARGET = Target(prune_ratio=0.25, unify_ratio=0.4, block=(4, 4))


def output_error(model, reference, batches) -> float:
    with torch.no_grad():
        return sum(float(((model(x) - reference(x)) ** 2).sum()) for x in batches)


class TestCalibrate:
    @pytest.mark.parametrize("model_class", [MLP, CNN, Block])
    def test_structure_grid_and_better_outputs_than_plain_projection(self, model_class):
        original = make(model_class)
        batches = inputs_for(model_class)
        config = CalibrationConfig(target=TARGET, coding=EncoderConfig(qp=QP), iterations=25)
        calibrated = make(model_class)
        report = calibrate(calibrated, batches, config)
        plain = make(model_class)
        calibrate(plain, batches, CalibrationConfig(target=TARGET, coding=EncoderConfig(qp=QP), iterations=0))
        layer_names = [n for n, m in original.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
        assert sorted(layer.name for layer in report.layers) == sorted(n + ".weight" for n in layer_names)
        named = dict(calibrated.named_parameters())
        for layer in report.layers:
            matrix = named[layer.name].detach().double().reshape(layer.shape[0], -1).numpy()
            assert_in_structure(matrix, report.kinds[layer.name], layer.block, STEP)
            assert layer.error <= layer.plain_error
        assert report.structure(calibrated).holds()
        assert output_error(calibrated, original, batches) < 0.8 * output_error(plain, original, batches)
        # the decoded stream is the calibrated model, bit for bit
        state = snap_to_grid(calibrated, EncoderConfig(qp=QP))
        decoded = decode(encode(state, config=EncoderConfig(qp=QP)))
        assert same_bits(state, decoded)
        for name, param in named.items():
            if name.endswith("weight") and param.dim() >= 2:
                assert decoded[name].tobytes() == param.detach().numpy().tobytes()

    def test_layers_follow_the_call_order_and_qkv_form_one_group(self):
        assert collect_layers(make(MLP), inputs_for(MLP)[0]) == [["first"], ["second"]]
        assert collect_layers(make(Block), inputs_for(Block)[0]) == [["query", "key", "value"], ["out"], ["up"],
                                                                     ["down"]]

    def test_sequential_uses_the_already_compressed_earlier_layers(self):
        batches = inputs_for(MLP)
        model = make(MLP)
        config = CalibrationConfig(target=TARGET, coding=EncoderConfig(qp=QP), iterations=10, asymmetric=False)
        calibrate(model, batches, config)
        # redo the second layer by hand from the calibrated first layer's outputs
        reference = make(MLP)
        with torch.no_grad():
            reference.first.load_state_dict(model.first.state_dict())
            x = torch.cat([torch.tanh(reference.first(b)) for b in batches]).double().numpy()
        gram = x.T @ x / len(x) - np.outer(x.mean(0), x.mean(0))
        w0 = reference.second.weight.detach().double().numpy()
        expected, _, _ = solve_layer(w0, gram, block=(4, 4), counts=TARGET.counts(4 * 12), step=STEP,
                                     iterations=10, rho=config.rho, rho_growth=config.rho_growth,
                                     damping=config.damping)
        np.testing.assert_allclose(model.second.weight.detach().double().numpy(), expected, atol=STEP / 1000)
        # not sequential: the Gram comes from the original first layer, another solution
        other = make(MLP)
        calibrate(other, batches, CalibrationConfig(target=TARGET, coding=EncoderConfig(qp=QP), iterations=10,
                                                    sequential=False))
        assert not torch.equal(other.second.weight, model.second.weight)
        assert torch.equal(other.first.weight, model.first.weight)

    def test_asymmetric_target_is_the_original_models_outputs(self):
        batches = inputs_for(MLP)
        model = make(MLP)
        config = CalibrationConfig(target=TARGET, coding=EncoderConfig(qp=QP), iterations=10)
        assert config.asymmetric
        calibrate(model, batches, config)
        original = make(MLP)
        with torch.no_grad():
            x = torch.cat([torch.tanh(model.first(b)) for b in batches]).double().numpy()
            x0 = torch.cat([torch.tanh(original.first(b)) for b in batches]).double().numpy()
        mean, mean0 = x.mean(0), x0.mean(0)
        w0 = original.second.weight.detach().double().numpy()
        expected, _, _ = solve_layer(
            w0, x.T @ x / len(x) - np.outer(mean, mean), block=(4, 4), counts=TARGET.counts(48), step=STEP,
            iterations=10, cross=x.T @ x0 / len(x) - np.outer(mean, mean0),
            target_gram=x0.T @ x0 / len(x) - np.outer(mean0, mean0))
        np.testing.assert_allclose(model.second.weight.detach().double().numpy(), expected, atol=STEP / 1000)
        # the bias keeps the original mean output: b = b0 + W0 E[x0] - W E[x]
        bias = original.second.bias.detach().double().numpy() + w0 @ mean0 - expected @ mean
        np.testing.assert_allclose(model.second.bias.detach().double().numpy(), bias, atol=1e-5)

    def test_bias_absorbs_the_mean_shift(self):
        batches = [b + 3.0 for b in inputs_for(MLP)]  # inputs with a large mean
        model = make(MLP)
        calibrate(model, batches, CalibrationConfig(target=TARGET, coding=EncoderConfig(qp=QP), iterations=10))
        original = make(MLP)
        with torch.no_grad():
            x = torch.cat(batches)
            shift = (model.first(x) - original.first(x)).mean(0)
        assert float(shift.abs().max()) < 1e-4

    def test_deterministic(self):
        batches = inputs_for(CNN)
        first, second = make(CNN), make(CNN)
        config = CalibrationConfig(target=TARGET, coding=EncoderConfig(qp=QP), iterations=8)
        calibrate(first, batches, config)
        calibrate(second, batches, config)
        for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
            assert a.numpy().tobytes() == b.numpy().tobytes(), name

    def test_global_budget_and_rules(self):
        batches = inputs_for(Block)
        model = make(Block)
        budget = Target(prune_ratio=0.3, unify_ratio=0.3, block=(4, 4))
        report = calibrate(model, batches, CalibrationConfig(
            budget=budget, coding=EncoderConfig(qp=QP), iterations=5,
            rules=(("down.weight", None), ("up.weight", Target()))))
        assert ("down", "excluded by a rule") in report.skipped
        assert (report.kinds.pop("up.weight") == BlockKind.DENSE).all()  # a zero target: dense, out of the budget
        total = sum(k.size for k in report.kinds.values())
        pruned = sum(int((k == BlockKind.PRUNED).sum()) for k in report.kinds.values())
        unified = sum(int((k == BlockKind.UNIFIED).sum()) for k in report.kinds.values())
        # a unified block whose magnitude rounds to 0 counts as pruned: the sum is the budget's
        assert pruned + unified == sum(budget.counts(total))
        assert pruned >= budget.counts(total)[0]
        assert len({int((k == BlockKind.PRUNED).sum()) / k.size for k in report.kinds.values()}) > 1  # spread unevenly
        assert torch.equal(model.down.weight, make(Block).down.weight)

    def test_conv_rows_reproduce_the_convolution(self):
        torch.manual_seed(3)
        conv = nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2))
        x = torch.randn(2, 3, 9, 7)
        delta = torch.randn_like(conv.weight) * 0.1
        rows = _layer_rows(conv, x).double()
        expected = nn.functional.conv2d(x, delta, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
        got = rows @ delta.reshape(5, -1).double().T
        expected = expected.detach()
        np.testing.assert_allclose(got.numpy(), expected.flatten(2).transpose(1, 2).reshape(-1, 5).double().numpy(),
                                   atol=1e-5)
        conv1d = nn.Conv1d(4, 3, 3, padding=2, dilation=2)
        x1 = torch.randn(2, 4, 10)
        rows1 = _layer_rows(conv1d, x1).double()
        out1 = nn.functional.conv1d(x1, conv1d.weight, dilation=2, padding=2).transpose(1, 2).reshape(-1, 3)
        got1 = rows1 @ conv1d.weight.detach().reshape(3, -1).double().T
        np.testing.assert_allclose(got1.numpy(), out1.detach().double().numpy(), atol=1e-5)

    def test_unsupported_layers_are_reported_and_untouched(self):
        class Grouped(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(4, 4, 3, groups=2)
                self.unused = nn.Linear(3, 3)
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                return self.fc(self.conv(x).mean((2, 3)))

        torch.manual_seed(0)
        model = Grouped()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        report = calibrate(model, [torch.randn(4, 4, 5, 5)], CalibrationConfig(coding=EncoderConfig(qp=QP)))
        assert dict(report.skipped) == {"conv": "grouped convolution (groups=2)",
                                        "unused": "never called by the model on the calibration inputs"}
        assert torch.equal(model.conv.weight, before["conv.weight"])
        assert not torch.equal(model.fc.weight, before["fc.weight"])
        assert [layer.name for layer in report.layers] == ["fc.weight"]

    def test_layer_without_bias_under_a_wrapper(self):
        torch.manual_seed(2)
        model = nn.Sequential(nn.Linear(16, 8, bias=False), nn.ReLU(), nn.Linear(8, 4))
        batches = [torch.randn(32, 16) for _ in range(3)]
        report = calibrate(nn.DataParallel(model), batches, CalibrationConfig(target=TARGET, coding=EncoderConfig(qp=QP)))
        assert [layer.name for layer in report.layers] == ["0.weight", "2.weight"]  # the bare module's names
        assert report.structure(model).holds()
        state = snap_to_grid(model, EncoderConfig(qp=QP))
        assert same_bits(state, decode(encode(state, config=EncoderConfig(qp=QP))))

    def test_bad_options(self):
        with pytest.raises(ValueError, match="iterations"):
            CalibrationConfig(iterations=-1)
        with pytest.raises(ValueError, match="damping"):
            CalibrationConfig(damping=0)
        with pytest.raises(ValueError, match="at least one batch"):
            calibrate(make(MLP), [], CalibrationConfig())


class TestDistill:
    def test_keeps_structure_and_grid_and_lowers_the_loss(self):
        batches = inputs_for(Block, count=6)
        teacher = make(Block)
        student = make(Block)
        coding = EncoderConfig(qp=QP)
        report = calibrate(student, batches, CalibrationConfig(target=TARGET, coding=coding, iterations=5))
        structure = report.structure(student)
        history = distill(student, teacher, batches, structure=structure, coding=coding, epochs=4, lr=2e-3)
        assert history[-1] < history[0]
        assert structure.holds()
        state = snap_to_grid(student, coding)
        for name, param in student.named_parameters():
            assert state[name].tobytes() == param.detach().numpy().tobytes(), name  # already on the grid
        assert same_bits(state, decode(encode(state, config=coding)))


# --- models users bring: ties, a bare layer, keyword calls, bad weights, bad arguments ---------------

CONFIG = CalibrationConfig(target=Target(0.25, 0.25, block=(2, 4)), iterations=4, coding=EncoderConfig(qp=QP))


class TiedHead(nn.Module):
    """An embedding and an output layer sharing one weight (as language models tie them)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(32, 16)
        self.mix = nn.Linear(16, 16)
        self.out = nn.Linear(16, 32, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        return self.out(torch.relu(self.mix(self.emb(ids))))


class SharedLayers(nn.Module):
    """Two layers sharing one weight matrix (ALBERT-style)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_a_tied_weight_is_reported_under_its_state_dict_name_and_its_structure_holds():
    model = TiedHead()
    report = calibrate(model, [torch.randint(0, 32, (4, 6)) for _ in range(3)], CONFIG)
    assert sorted(report.kinds) == ["emb.weight", "mix.weight"]
    structure = report.structure(model)
    assert structure.holds()
    assert model.out.weight is model.emb.weight
    state = snap_to_grid(model, CONFIG.coding)
    assert state["out.weight"] is state["emb.weight"]  # one array: coded once
    assert len(encode(state, config=CONFIG.coding)) == len(encode(model.state_dict(), config=CONFIG.coding))


def test_a_weight_shared_by_two_layers_is_calibrated_once():
    model = SharedLayers()
    report = calibrate(model, [torch.randn(32, 16) for _ in range(2)], CONFIG)
    assert [layer.name for layer in report.layers] == ["a.weight"]
    assert report.skipped == (("b", "shares its weight a.weight with 'a', calibrated there"),)
    assert report.structure(model).holds()


def test_a_model_that_is_one_layer_uses_the_state_dict_names():
    model = nn.Linear(8, 8)
    report = calibrate(model, [torch.randn(32, 8)], CONFIG)
    assert list(report.kinds) == ["weight"] and report.layers[0].name == "weight"
    assert report.structure(model).holds()
    excluded = calibrate(nn.Linear(8, 8), [torch.randn(32, 8)],
                         CalibrationConfig(target=Target(0.25, 0.25), rules=(("weight", None),)))
    assert excluded.layers == () and excluded.skipped == (("", "excluded by a rule"),)


def test_a_layer_called_with_a_keyword_input_is_calibrated():
    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8)

        def forward(self, x):
            return self.a(input=x)

    report = calibrate(Keyword(), [torch.randn(32, 8)], CONFIG)
    assert [layer.name for layer in report.layers] == ["a.weight"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused_with_the_layers_name(bad):
    model = nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 8))
    with torch.no_grad():
        model[1].weight[0, 0] = bad
    with pytest.raises(ValueError, match=r"^1\.weight: the weight holds NaN or infinite values"):
        calibrate(model, [torch.randn(16, 8)], CONFIG)


def test_a_layer_the_encoder_would_code_raw_is_left_alone():
    model = nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 8))
    with torch.no_grad():
        model[0].weight[0, 0] = 1e5
    before = model[0].weight.detach().clone()
    report = calibrate(model, [torch.randn(16, 8)], CalibrationConfig(target=None, iterations=2,
                                                                          coding=EncoderConfig(qp=-64)))
    assert report.skipped[0][0] == "0" and report.skipped[0][1].startswith("coded RAW: its largest weight is beyond")
    assert torch.equal(model[0].weight.detach(), before)


@pytest.mark.parametrize("call, error, message", [
    (lambda m, b: calibrate(m, b, Target(0.1, 0.1)), TypeError, "config must be a CalibrationConfig"),
    (lambda m, b: calibrate(m, None), TypeError, "batches must be an iterable"),
    (lambda m, b: CalibrationConfig(target=(0.1, 0.1)), TypeError, "target must be a Target"),
    (lambda m, b: CalibrationConfig(rules=[("*", 0.5)]), TypeError, "rules must be"),
    (lambda m, b: CalibrationConfig(damping=float("inf")), ValueError, "damping must be positive and finite"),
])
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call(nn.Linear(8, 8), [torch.randn(4, 8)])


def test_distill_refuses_float16_and_empty_input_and_restores_the_teachers_mode():
    student = nn.Sequential(nn.Linear(8, 8))
    teacher = nn.Sequential(nn.Linear(8, 8))
    teacher.train()
    distill(student, teacher, [torch.randn(4, 8)], structure=None)
    assert teacher.training
    with pytest.raises(ValueError, match="at least one batch"):
        distill(student, teacher, [], structure=None)
    with pytest.raises(ValueError, match=r"^0\.weight: float16 parameters"):
        distill(nn.Sequential(nn.Linear(8, 8)).half(), teacher.half(), [torch.randn(4, 8).half()], structure=None)


def test_parametrized_weights_are_left_alone_and_not_taken_for_shared_ones():
    from torch.nn.utils import parametrize

    class Scale(nn.Module):
        def forward(self, x):
            return x * 1.0

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8))
    parametrize.register_parametrization(model[0], "weight", Scale())
    parametrize.register_parametrization(model[2], "weight", Scale())
    before = {name: t.clone() for name, t in model.state_dict().items()}
    report = calibrate(model, [torch.randn(64, 16)], CONFIG)
    assert [layer.name for layer in report.layers] == ["4.weight"]
    assert [name for name, _ in report.skipped] == ["0", "2"]
    assert all("computed from other tensors" in why for _, why in report.skipped)
    for name in ("0.bias", "2.bias", "0.parametrizations.weight.original", "2.parametrizations.weight.original"):
        assert torch.equal(model.state_dict()[name], before[name])


# --- input energies (the metric for ADMM(importance=)) ------------------------------------------------

class _ConvThenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 3, 3, padding=1, stride=2)
        self.norm = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * 3 * 3, 4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.norm(self.conv(x))).flatten(1)))


def test_input_energies_are_the_mean_square_of_each_input_column():
    model = _ConvThenLinear()
    batches = [torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    model.train()
    before = {name: value.clone() for name, value in model.norm.state_dict().items()}
    energies = input_energies(model, batches, ["conv.weight", "fc.weight"])
    # eval mode while measuring (no dropout, batch-norm statistics untouched), then the mode is back
    assert model.training and all(torch.equal(before[n], v) for n, v in model.norm.state_dict().items())
    assert all(np.array_equal(energies[n], again) for n, again in input_energies(model, batches, list(energies)).items())
    model.eval()
    x = torch.cat(batches)
    patches = nn.functional.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 2 * 9).double()
    with torch.no_grad():
        # the columns are in the order of the weight's matrix view: the patches reproduce the convolution
        out = patches @ model.conv.weight.double().reshape(3, -1).T + model.conv.bias.double()  # (n * 9, 3)
        assert torch.allclose(out.reshape(15, 9, 3).transpose(1, 2), model.conv(x).double().reshape(15, 3, 9),
                              atol=1e-5)
        hidden = torch.relu(model.norm(model.conv(x))).flatten(1).double()
    assert energies["conv.weight"].shape == (1, 18)
    assert np.allclose(energies["conv.weight"], (patches ** 2).mean(0).numpy()[None, :])
    assert np.allclose(energies["fc.weight"], (hidden ** 2).mean(0).numpy()[None, :])
    # without names: every layer the batches call; named explicitly, one they never call is an error
    assert list(input_energies(model, batches)) == ["conv.weight", "fc.weight"]
    with pytest.raises(ValueError, match="^the batches never called unused.weight$"):
        input_energies(model, batches, ["fc.weight", "unused.weight"])
    with pytest.raises(ValueError, match="^fc.bias: not the weight of an nn.Linear"):
        input_energies(model, batches, ["fc.bias"])


def test_input_energies_of_a_tied_weight_go_under_its_first_name_for_admm():
    class TiedHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(16, 8)
            self.mid = nn.Linear(8, 8)
            self.head = nn.Linear(8, 16, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(torch.relu(self.mid(self.emb(ids))))

    from nncodec_unify.method.admm import ADMM

    model = TiedHead()
    batches = [torch.randint(0, 16, (4, 5), generator=torch.Generator().manual_seed(s)) for s in range(2)]
    energies = input_energies(model, batches)
    assert list(energies) == ["mid.weight", "emb.weight"] and energies["emb.weight"].shape == (1, 8)
    admm = ADMM(model, Target(prune_ratio=0.5, block=(2, 2)), importance=energies)
    assert set(admm.importance) == {"emb.weight", "mid.weight"}


def test_one_calibration_row_or_constant_inputs_do_not_break_the_metric():
    """With one row every input is constant: float32 sums left its variance at a rounding
    error of either sign, and a negative one crashed ('weights must be non-negative')."""
    for seed in range(6):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
        report = calibrate(model, [torch.randn(1, 16)], CalibrationConfig(
            target=Target(prune_ratio=0.3), coding=EncoderConfig(qp=-24)))
        assert all(layer.blocks[0] > 0 for layer in report.layers)
        assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("where", ["target", "budget", "rule"])
def test_unify_threshold_is_refused_rather_than_ignored(where):
    threshold = Target(prune_ratio=0.1, unify_threshold=0.5)
    options = {"target": {"target": threshold}, "budget": {"budget": threshold},
               "rule": {"rules": (("*", threshold),)}}[where]
    with pytest.raises(ValueError, match="^calibration takes unify_ratio, not unify_threshold"):
        CalibrationConfig(coding=EncoderConfig(), **options)


def test_calibration_inputs_that_are_not_finite_are_named():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    batches = [torch.randn(3, 4), torch.tensor([[float("nan"), 0.0, 0.0, 0.0]])]
    with pytest.raises(ValueError, match=r"^0: its inputs hold NaN or infinite values \(calibration batch 1\)$"):
        calibrate(model, batches, CalibrationConfig(target=Target(prune_ratio=0.5, block=(2, 2)),
                                                    coding=EncoderConfig(qp=-24)))


def test_distill_compares_the_first_value_of_a_mapping_and_names_what_it_cannot_compare():
    """A transformers model returns a ModelOutput (a mapping): the README's distill call failed
    with an AttributeError about .detach."""
    class Returns(nn.Module):
        def __init__(self, wrap) -> None:
            super().__init__()
            self.layer, self.wrap = nn.Linear(4, 4), wrap

        def forward(self, x):
            return self.wrap(self.layer(x))

    torch.manual_seed(0)
    as_dict = lambda y: {"y": y, "other": None}  # noqa: E731
    assert len(distill(Returns(as_dict), Returns(as_dict), [torch.randn(2, 4)], epochs=1, structure=None)) == 1
    as_text = lambda y: "text"  # noqa: E731
    with pytest.raises(TypeError, match="^the model returns str, not a tensor: pass output="):
        distill(Returns(as_text), Returns(as_text), [torch.randn(2, 4)], epochs=1, structure=None)
