"""Sensitivity analysis, budget search, gradual pruning schedules and distillation."""

from __future__ import annotations

import pytest
import torch
from models import mlp

from neuroprune import ClassificationTask, PruneConfig, prune
from neuroprune.analysis.budget import Budget, search_budget
from neuroprune.core.errors import ConfigError, UnknownNameError
from neuroprune.analysis.gradual import GradualPruner, agp_fraction, linear_fraction
from neuroprune.analysis.sensitivity import analyse_sensitivity, format_sensitivity
from neuroprune.models.zoo import build_model

FAST = dict(progress=False, latency_runs=1, tolerance=1.0)


def test_sensitivity_curves(trained):
    model, task = trained
    result = analyse_sensitivity(model, task, PruneConfig(criterion="magnitude", **FAST), ratios=(0.25, 0.5, 0.9),
                                 progress=False)
    assert result["reference"] == task.evaluate(model, "val")
    assert set(result["layers"]) == {"0", "2"}
    assert result["layers"]["0"]["ratios"] == [0.25, 0.5, 0.9] and len(result["layers"]["0"]["metric"]) == 3
    assert "sensitivity: accuracy drop" in format_sensitivity(result)
    with pytest.raises(ConfigError, match="sensitivity ratios must lie in \\(0, 1\\)"):
        analyse_sensitivity(model, task, ratios=(0.5, 1.0), progress=False)


@pytest.mark.parametrize("name, target", [("lenet5", 0.5), ("mlp", 0.4), ("resnet56", 0.5)])
def test_budget_search_hits_flops_within_two_percent(name, target):
    torch.manual_seed(0)
    from neuroprune.data import load_digits
    from neuroprune.models.zoo import ZOO

    entry = ZOO[name]
    data = load_digits(layout=entry.layout, image_size=16 if name == "resnet56" else entry.image_size)
    task = ClassificationTask(data, calibration_samples=64)
    model = build_model(name, **({"num_classes": 10} if name != "mlp" else {}))
    config = PruneConfig(criterion="magnitude", **FAST)
    sensitivity = analyse_sensitivity(model, task, config, ratios=(0.3, 0.6, 0.9), progress=False)
    result = search_budget(model, task, config, Budget(flops=target), sensitivity=sensitivity, progress=False)
    assert abs(result.achieved["flops"] - target) <= 0.02 * target
    candidates = {p["candidate"]: p for p in result.probes if "candidate" in p}
    assert set(candidates) == {"searched", "average", "uniform"}
    chosen = next(p for p in candidates.values() if p["flops"] == result.achieved["flops"])
    assert chosen["metric"] == max(p["metric"] for p in candidates.values()
                                   if abs(p["flops"] - target) <= 0.02 * target)  # never worse than uniform
    pruned = prune(model, task, result.config(config))
    ratio = pruned.report["after"]["flops"] / pruned.report["before"]["flops"]
    assert abs(ratio - target) <= 0.02 * target


def test_max_drop_budget(trained):
    model, task = trained
    config = PruneConfig(criterion="magnitude", **FAST)
    result = search_budget(model, task, config, Budget(max_drop=0.02), progress=False)
    assert result.achieved["drop"] <= 0.02 and result.achieved["flops"] < 1.0


def test_budget_errors():
    assert Budget(flops=0.5, params=0.5).problems() == ["give exactly one budget target, got flops, params"]
    assert Budget(flops=1.5).problems() == ["target flops must lie in (0, 1), got 1.5"]
    assert Budget().problems() == ["give exactly one budget target, got none"]


def test_schedules_are_exact():
    assert [agp_fraction(t, start=2, end=6, final=0.5) for t in (0, 2, 3, 4, 6, 9)] == \
        [0.0, 0.0, 0.5 - 0.5 * 0.75**3, 0.5 - 0.5 * 0.5**3, 0.5, 0.5]
    assert agp_fraction(5, start=2, end=6, final=0.5, frequency=2) == agp_fraction(4, start=2, end=6, final=0.5)
    assert [linear_fraction(t, start=0, end=4, final=0.8) for t in (0, 1, 2, 4)] == [0.0, 0.2, 0.4, 0.8]


def test_gradual_pruner_masks_grow_and_finalize(trained):
    model, task = trained
    model = torch.nn.Sequential(*[m for m in mlp((6, 24, 16, 3))])
    pruner = GradualPruner(model, task.example_input(), ratio=0.5, start=0, end=20, frequency=5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    fractions = []
    for step in range(25):
        batch = next(iter(task.train_batches(step)))
        loss = task.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        fractions.append(pruner.step(step))
        removed = pruner.masked["0"]
        assert bool((model[2].weight[:, torch.from_numpy(removed)] == 0).all())  # masked stay zero after steps
    assert fractions == sorted(fractions) and fractions[-1] == 0.5
    x = task.data.x_val
    with torch.no_grad():
        before = model(x)
    small, plan = pruner.finalize()
    assert small[0].out_features == 12 and small[2].out_features == 8
    with torch.no_grad():
        torch.testing.assert_close(small(x), before, rtol=1e-5, atol=1e-5)
    assert plan.modules["0"]["axes"]["out"]["size"] == 24
    with pytest.raises(ConfigError, match="need 0 <= start < end"):
        GradualPruner(model, task.example_input(), ratio=0.5, start=5, end=5)
    with pytest.raises(UnknownNameError, match="unknown schedule 'cosine'; known: agp, linear"):
        GradualPruner(model, task.example_input(), ratio=0.5, start=0, end=5, schedule="cosine")


def test_distillation_fine_tuning_moves_towards_the_teacher(trained):
    model, task = trained
    import torch.nn.functional as F

    def divergence(student):
        with torch.no_grad():
            x = task.data.x_val
            return float(F.kl_div(F.log_softmax(student(x), -1), F.softmax(model(x), -1), reduction="batchmean"))

    plain = prune(model, task, PruneConfig(criterion="magnitude", ratio=0.75, **FAST))
    distilled = prune(model, task, PruneConfig(criterion="magnitude", ratio=0.75, finetune_epochs=3, distill_weight=1.0,
                                               learning_rate=3e-3, **FAST))
    assert divergence(distilled.model) < divergence(plain.model)
    with pytest.raises(ConfigError, match="distill_weight must lie in \\[0, 1\\], got 2"):
        PruneConfig(distill_weight=2)
