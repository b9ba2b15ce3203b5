"""The pruning loop: rollback is bit-identical, every attempt is reported, recovery helps."""

from __future__ import annotations

import pytest
import torch
from models import mlp, toy_data

from neuroprune import ClassificationTask, PruneConfig, prune
from neuroprune.core.errors import ConfigError, NoPrunableLayerError
from neuroprune.torch.recover.finetune import finetune

FAST = dict(progress=False, latency_runs=1)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    task = ClassificationTask(toy_data(), batch_size=16)
    model = mlp((6, 16, 12, 3))
    finetune(model, task, epochs=40, progress=False)
    return model, task


def test_rolled_back_step_restores_bit_identical_weights(trained, monkeypatch):
    model, task = trained
    seen = {}
    from neuroprune.torch.backend import TorchBackend

    real_mask = TorchBackend.mask

    def spy(self, work, keep):
        seen["before"] = {k: v.clone() for k, v in work.state_dict().items()}
        seen["work"] = work
        return real_mask(self, work, keep)

    monkeypatch.setattr(TorchBackend, "mask", spy)
    config = PruneConfig(criterion="random", ratio=0.9, tolerance=0.0, max_retries=0, **FAST)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune(model, task, config)
    step = result.report["steps"][0]
    assert not step["accepted"] and "> tolerance 0.0" in step["reason"]
    after = seen["work"].state_dict()
    assert all(torch.equal(seen["before"][k], after[k]) for k in after)  # bit-identical rollback
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # caller untouched
    assert result.report["after"]["params"] == result.report["before"]["params"]


def test_halving_retries_are_all_reported(trained):
    model, task = trained
    result = prune(model, task, PruneConfig(criterion="random", ratio=0.9, tolerance=0.0, max_retries=3, **FAST))
    attempts = result.report["steps"]
    # 90% of 16 and 12 neurons is 14 + 10; each retry halves every layer's count: 7 + 5, 3 + 2, 1 + 1
    # (up to the first accepted retry; after it, further steps continue towards the target)
    first = next((i for i, s in enumerate(attempts) if s["accepted"]), len(attempts) - 1) + 1
    assert [s["removed"] for s in attempts[:first]] == [24, 12, 5, 2][:first]
    assert [s["attempt"] for s in attempts[:first]] == list(range(1, first + 1))
    assert all(not s["accepted"] for s in attempts[:first - 1])
    assert all(set(s) >= {"target_ratio", "removed", "accuracy", "accepted"} for s in result.report["steps"])


def test_steps_reach_the_target_and_report_widths(trained):
    model, task = trained
    result = prune(model, task, PruneConfig(criterion="magnitude", ratio=0.5, steps=2, tolerance=1.0, **FAST))
    assert [s["target_ratio"] for s in result.report["steps"]] == [0.25, 0.5]
    assert result.report["layers"] == [
        {"name": "0", "width_before": 16, "width_after": 8, "fixed_units": 0, "kept_because": []},
        {"name": "2", "width_before": 12, "width_after": 6, "fixed_units": 0, "kept_because": []}]
    assert result.model[0].out_features == 8 and model[0].out_features == 16
    assert result.plan.modules["0"]["axes"]["out"]["size"] == 16 and len(result.plan.modules["0"]["axes"]["out"]["keep"]) == 8


def test_reconstruction_recovers_without_training(trained):
    model, task = trained
    plain = prune(model, task, PruneConfig(criterion="magnitude", ratio=0.75, tolerance=1.0, **FAST))
    rebuilt = prune(model, task, PruneConfig(criterion="magnitude", ratio=0.75, tolerance=1.0, reconstruct=True, **FAST))
    assert rebuilt.report["steps"][0]["accuracy"] >= plain.report["steps"][0]["accuracy"]
    with torch.no_grad():
        teacher_out = model(task.data.x_val)
        assert (rebuilt.model(task.data.x_val) - teacher_out).pow(2).mean() < (plain.model(task.data.x_val) - teacher_out).pow(2).mean()


def test_finetuning_runs_after_accepted_steps(trained):
    model, task = trained
    result = prune(model, task, PruneConfig(criterion="taylor", ratio=0.5, tolerance=1.0, finetune_epochs=2, **FAST))
    assert result.report["after"]["accuracy"] >= 0.8


def test_no_prunable_layer():
    task = ClassificationTask(toy_data(), batch_size=16)
    with pytest.raises(NoPrunableLayerError, match="no prunable layer.*model output"):
        prune(torch.nn.Sequential(torch.nn.Linear(6, 3)), task, PruneConfig(**FAST))


def test_config_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as info:
        PruneConfig(ratio=1.0, steps=0, tolerance=float("nan"), criterion="nope", scope="everywhere")
    message = str(info.value)
    for fragment in ("ratio must lie in [0, 1), got 1.0", "steps must be >= 1, got 0", "tolerance must be a finite",
                     "unknown criterion 'nope'; known: activation_frequency", "scope must be one of local, global"):
        assert fragment in message
    with pytest.raises(ConfigError, match="threshold must be a finite number >= 0, got nan"):
        PruneConfig(ratio=None, threshold=float("nan"))
    with pytest.raises(ConfigError, match="ratio must lie in \\[0, 1\\), got -0.1"):
        PruneConfig(ratio=-0.1)
    with pytest.raises(ConfigError, match="give exactly one of ratio and threshold"):
        PruneConfig(ratio=0.5, threshold=0.1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_model_is_pruned_recovered_and_kept_in_its_dtype(trained, dtype):
    model, task = trained
    low = mlp((6, 16, 12, 3))
    low.load_state_dict(model.state_dict())
    low = low.to(dtype)
    config = PruneConfig(criterion="seed", ratio=0.5, steps=2, tolerance=1.0, reconstruct=True, finetune_epochs=2,
                         **FAST)
    result = prune(low, ClassificationTask(toy_data(), batch_size=16), config)
    assert all(p.dtype == dtype for p in result.model.parameters())
    assert all(torch.isfinite(p.float()).all() for p in result.model.parameters())
    assert result.report["after"]["params"] < result.report["before"]["params"]
    assert result.report["after"]["accuracy"] > 0.6  # 3 classes; NaN weights would give chance or worse
    assert all(p.dtype == dtype for p in low.parameters())  # the caller's model untouched
