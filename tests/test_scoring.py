"""Criteria: the write-up's worked example, exact statistics, and no side effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from models import mlp

from neuroprune import collect_statistics, criterion_names, discover
from neuroprune.core.errors import ConfigError, DataError, NonFiniteError, UnknownNameError
from neuroprune.core.criteria import ScoringInput, get_criterion, score
from neuroprune.core.criteria.combine import rank_average
from neuroprune.core.criteria.obs import removal_costs
from neuroprune.core.criteria.weights import seed_formula


def close(got, expected, rtol: float = 1.3e-6, atol: float = 1e-5) -> None:
    """Scores (numpy float64) equal ``expected`` (a tensor or array) within float32's default tolerance."""
    assert isinstance(got, np.ndarray) and got.dtype == np.float64, type(got)
    expected = expected.detach().double().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def test_seed_formula_reproduces_the_worked_example():
    """Section 4.3 of the write-up.

    Neuron i is reproduced exactly: (3.2 + 0.15 + 0.7) / 1.6 = 2.53125. For neuron j the
    write-up prints (0.1 + 1.8 + 0.08) / 0.9 = 2.98 / 0.9, but its own inputs give
    0.2 * 0.05 * 5 = 0.05 (not 0.1) and the printed terms sum to 1.98 (not 2.98): the formula on
    the printed inputs gives 1.93 / 0.9 = 2.1444..., so neuron j, not i, scores lower.
    """
    weights = torch.tensor([[0.8, 0.3, 0.5], [0.2, 0.6, 0.1]], dtype=torch.float64)
    grads = torch.tensor([[0.4, 0.1, 0.2], [0.05, 0.3, 0.1]], dtype=torch.float64)
    freqs = torch.tensor([[10, 5, 7], [5, 10, 8]], dtype=torch.float64)
    s = seed_formula(weights, grads, freqs)
    assert s[0].item() == pytest.approx(4.05 / 1.6) and s[0].item() == pytest.approx(2.53125)
    terms_j = (weights[1] * grads[1] * freqs[1]).tolist()
    assert terms_j == pytest.approx([0.05, 1.8, 0.08])
    assert s[1].item() == pytest.approx(1.93 / 0.9) and s[1].item() != pytest.approx(2.98 / 0.9)


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


@pytest.fixture
def setting():
    torch.manual_seed(0)
    model = mlp((5, 6, 4, 3)).eval()
    batches = [(torch.randn(9, 5), torch.randint(0, 3, (9,))) for _ in range(3)]
    graph = discover(model, batches[0][0])
    return model, graph, batches


def test_activation_statistics_are_exact(setting):
    model, graph, batches = setting
    stats = collect_statistics(model, graph, batches, loss_fn, progress=False)
    hidden = torch.cat([F.relu(model[0](x)) for x, _ in batches])  # what layer "2" reads
    freq = score(ScoringInput(model, graph, stats), "activation_frequency")["0"]
    mean = score(ScoringInput(model, graph, stats), "activation_mean")["0"]
    close(freq, (hidden > 0).float().mean(0))
    close(mean, hidden.abs().mean(0))


def test_taylor_equals_sum_of_activation_times_gradient(setting):
    model, graph, batches = setting
    stats = collect_statistics(model, graph, batches, loss_fn, gradients=True, progress=False)
    taylor = score(ScoringInput(model, graph, stats), "taylor")["0"]
    expected = torch.zeros(6)
    for x, y in batches:  # explicit a * dL/da at the input of layer "2"
        a = F.relu(model[0](x)).detach().requires_grad_(True)
        out = model[4](F.relu(model[2](a)))
        (grad,) = torch.autograd.grad(F.cross_entropy(out, y), a)
        expected += (a * grad).sum(0).detach()
    close(taylor, expected.abs(), rtol=1e-4, atol=1e-6)


def test_gradient_and_magnitude(setting):
    model, graph, batches = setting
    stats = collect_statistics(model, graph, batches, loss_fn, gradients=True, progress=False)
    data = ScoringInput(model, graph, stats)
    expected = torch.zeros(6)
    for batch in batches:
        model.zero_grad()
        loss_fn(model, batch).backward()
        expected += model[0].weight.grad.abs().mean(1)
    model.zero_grad(set_to_none=True)
    close(score(data, "gradient")["0"], expected / len(batches), rtol=1e-5, atol=1e-7)
    close(score(data, "magnitude", {"p": 1})["0"], model[0].weight.detach().abs().sum(1))
    close(score(data, "magnitude")["0"], model[0].weight.detach().norm(dim=1))
    with_out = score(data, "magnitude", {"p": 1, "outgoing": True})["0"]
    close(with_out, model[0].weight.detach().abs().sum(1) + model[2].weight.detach().abs().sum(0))


def test_seed_criterion_matches_formula_on_a_layer(setting):
    model, graph, batches = setting
    stats = collect_statistics(model, graph, batches, loss_fn, gradients=True, per_weight=True, progress=False)
    got = score(ScoringInput(model, graph, stats), "seed")["2"]  # layer 2: inputs are layer 0's ReLU outputs
    grads = torch.zeros_like(model[2].weight)
    for batch in batches:
        model.zero_grad()
        loss_fn(model, batch).backward()
        grads += model[2].weight.grad.abs()
    model.zero_grad(set_to_none=True)
    hidden = torch.cat([F.relu(model[0](x)) for x, _ in batches])
    freq = (hidden > 0).float().mean(0).expand_as(grads)
    close(got, seed_formula(model[2].weight.detach(), grads / len(batches), freq), rtol=1e-5, atol=1e-7)


def test_rank_combines_member_ranks():
    assert rank_average([torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])], [1.0, 1.0]).tolist() == [0.5, 0.25, 0.75]
    assert rank_average([torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])], [1.0, 0.0]).tolist() == [1.0, 0.0, 0.5]


def test_every_criterion_scores_every_group(setting):
    model, graph, batches = setting
    stats = collect_statistics(model, graph, batches, loss_fn, gradients=True, per_weight=True, gram=True,
                               progress=False)
    for name in criterion_names():
        scores = score(ScoringInput(model, graph, stats), name)
        assert set(scores) == {"0", "2"} and scores["0"].shape == (6,) and bool((scores["0"] >= 0).all()), name


def test_statistics_leave_the_model_as_found(setting):
    model, graph, batches = setting
    model.train()
    model[0].weight.requires_grad_(False)
    model[2].weight.grad = torch.ones_like(model[2].weight)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    collect_statistics(model, graph, batches, loss_fn, gradients=True, per_weight=True, progress=False)
    assert model.training and all(m.training for m in model.modules())
    assert not model[0].weight.requires_grad and model[2].weight.requires_grad
    assert torch.equal(model[2].weight.grad, torch.ones_like(model[2].weight)) and model[4].weight.grad is None
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_empty_calibration_data(setting):
    model, graph, _ = setting
    with pytest.raises(DataError, match="calibration data is empty"):
        collect_statistics(model, graph, [], loss_fn, progress=False)


def test_non_finite_gradients_are_refused(setting):
    model, graph, batches = setting
    bad = [(torch.full((4, 5), float("nan")), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(NonFiniteError, match="loss is nan on calibration batch 0"):
        collect_statistics(model, graph, bad, loss_fn, gradients=True, progress=False)

    def finite_loss_infinite_gradient(m, batch):
        out = m(batch[0])
        out.register_hook(lambda g: g * float("inf"))
        return out.sum()

    with pytest.raises(NonFiniteError, match="non-finite gradient in .* on calibration batch 0"):
        collect_statistics(model, graph, batches[:1], finite_loss_infinite_gradient, gradients=True, progress=False)


def test_unknown_criterion_and_bad_options():
    with pytest.raises(UnknownNameError, match="unknown criterion 'fisher'; known: activation_frequency"):
        get_criterion("fisher")
    model = mlp((3, 4, 2))
    data = ScoringInput(model, discover(model, torch.randn(1, 3)), None)
    with pytest.raises(ConfigError, match="criterion 'magnitude' has no option q; options: p, outgoing"):
        score(data, "magnitude", {"q": 1})
    with pytest.raises(ConfigError, match="rank has 2 members but 1 weights"):
        score(data, "rank", {"members": ["magnitude", "random"], "weights": [1]})


def test_activation_criteria_need_observations(setting):
    model, graph, _ = setting
    from neuroprune.torch.stats import Statistics

    with pytest.raises(DataError, match="never read by an observed layer"):
        score(ScoringInput(model, graph, Statistics()), "activation_frequency")


def test_token_mask_leaves_padding_out_of_activation_statistics():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    graph = discover(model, x)
    stats = collect_statistics(model, graph, [(x, None)], lambda m, b: m(b[0]).sum(), progress=False,
                               token_mask=lambda batch: mask)
    hidden = F.relu(model[0](x))[mask.bool()]  # only real tokens
    freq = score(ScoringInput(model, graph, stats), "activation_frequency")["0"]
    mean = score(ScoringInput(model, graph, stats), "activation_mean")["0"]
    close(freq, (hidden > 0).float().mean(0))
    close(mean, hidden.abs().mean(0))


def _refit_error(x: torch.Tensor, y: torch.Tensor, drop: list[int]) -> float:
    """Squared error of the best affine fit of ``y`` from the columns of ``x`` not in ``drop``."""
    kept = [i for i in range(x.shape[1]) if i not in drop]
    x1 = torch.cat([x[:, kept], torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(x1, y).solution
    return float(((x1 @ solution - y) ** 2).sum())


def test_obs_is_the_error_left_after_least_squares_compensation(setting):
    model, graph, batches = setting
    stats = collect_statistics(model, graph, batches, loss_fn, activations=False, gram=True, progress=False)
    got = score(ScoringInput(model, graph, stats), "obs", {"damping": 0.0})["0"]
    hidden = torch.cat([F.relu(model[0](x)) for x, _ in batches]).detach().double()  # what layer "2" reads
    y = hidden @ model[2].weight.detach().double().T
    expected = torch.tensor([_refit_error(hidden, y, [j]) for j in range(6)], dtype=torch.float64)
    close(got, expected, rtol=2e-3, atol=1e-5)


def test_obs_of_multi_column_units_uses_the_block_formula():
    torch.manual_seed(0)
    x = torch.randn(64, 6, dtype=torch.float64)
    x1 = torch.cat([x, torch.ones(64, 1, dtype=torch.float64)], dim=1)
    w = torch.randn(3, 6, dtype=torch.float64)
    unit_of = torch.tensor([0, 0, 1, 1, 2, -1])  # three units of two, two and one column; one column fixed
    got = removal_costs(w, x1.T @ x1, unit_of, 3, damping=0.0)
    expected = [_refit_error(x, x @ w.T, [i for i in range(6) if unit_of[i] == u]) for u in range(3)]
    close(got, expected, rtol=1e-6, atol=1e-8)


def test_obs_refuses_groups_read_by_other_layers_and_bad_damping():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    graph = discover(model, torch.randn(1, 1, 8, 8))
    batches = [(torch.randn(4, 1, 8, 8), None)]
    stats = collect_statistics(model, graph, batches, lambda m, b: m(b[0]).sum(), gram=True, progress=False)
    with pytest.raises(ConfigError, match=r"criterion 'obs' scores units read by nn.Linear layers only; group '0' "
                                          r"is read by 2 \(Conv2d\)"):
        score(ScoringInput(model, graph, stats), "obs")
    with pytest.raises(ConfigError, match="damping must be >= 0, got -1.0"):
        score(ScoringInput(model, graph, stats), "obs", {"damping": -1})


def test_obs_needs_the_gram_statistics(setting):
    model, graph, batches = setting
    stats = collect_statistics(model, graph, batches, loss_fn, progress=False)  # without gram=True
    with pytest.raises(DataError, match="criterion 'obs': no input statistics for 2"):
        score(ScoringInput(model, graph, stats), "obs")


def test_explain_leaves_out_criteria_that_cannot_score_the_model_unless_asked_for():
    from neuroprune import ClassificationTask, PruneConfig, prune
    from neuroprune.data import load_digits
    from neuroprune.analysis.explain import explain
    from neuroprune.models.zoo import build_model

    task = ClassificationTask(load_digits(layout="image", image_size=32), calibration_samples=64)
    model = build_model("lenet5")
    plan = prune(model, task, PruneConfig(criterion="magnitude", ratio=0.5, tolerance=1.0, progress=False,
                                          latency_runs=1)).plan
    with pytest.warns(UserWarning, match="criterion 'obs' left out: .*read by nn.Linear layers only"):
        scores, _ = explain(model, task, plan, progress=False)
    assert "obs" not in scores and {"magnitude", "taylor", "rank"} <= set(scores)
    with pytest.raises(ConfigError, match="read by nn.Linear layers only"):
        explain(model, task, plan, criteria=["obs"], progress=False)
