"""Reaching the asked target: judge after recovery, bit-exact rollback of a trained attempt,
continuation with smaller steps, asked vs delivered in the report, ``--require-target``."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from models import mlp, toy_data

from neuroprune import ClassificationTask, PruneConfig, prune
from neuroprune.analysis.budget import Budget, search_budget
from neuroprune.cli.main import main
from neuroprune.core.errors import ConfigError, PruningTargetError
from neuroprune.torch.recover.finetune import finetune
from neuroprune.torch.recover.rollback import Snapshot
from neuroprune.report.table import format_report

FAST = dict(progress=False, latency_runs=1)


def _live_width(model: nn.Module) -> int:
    """Neurons of the first hidden layer that are not masked away: the layer reading them (a mask
    zeroes what reads a removed neuron) has a non-zero column for each."""
    reader = next(m for m in list(model)[1:] if isinstance(m, nn.Linear))
    return int((reader.weight.abs().sum(dim=0) > 0).sum())


class GatedTask(ClassificationTask):
    """Validation fails (accuracy 0) whenever the first hidden layer is narrower than ``gate``;
    the pruning loop's logic can then be checked without depending on training noise."""

    def __init__(self, data, gate: int, **kwargs):
        super().__init__(data, **kwargs)
        self.gate = gate

    def evaluate(self, model, split):
        if split == "val" and _live_width(model) < self.gate:
            return 0.0
        return super().evaluate(model, split)


class HalfAtATimeTask(ClassificationTask):
    """Validation fails when one step masks more than half of the first layer's neurons that were
    there after the last recovery (the task's own ``finetune`` is the loop's recovery)."""

    capabilities = ClassificationTask.capabilities | {"own_recovery"}

    def __init__(self, data, width: int, **kwargs):
        super().__init__(data, **kwargs)
        self.recovered = width

    def finetune(self, model, *, epochs, learning_rate=1e-3, progress=True, desc=""):
        self.recovered = _live_width(model)
        return finetune(model, self, epochs=epochs, learning_rate=learning_rate, progress=False)

    def evaluate(self, model, split):
        width = _live_width(model)
        if split == "val" and width < self.recovered / 2:
            return 0.0
        return super().evaluate(model, split)


def test_one_shot_removal_failing_before_recovery_is_accepted_after_it(trained):
    model, task = trained
    settings = dict(criterion="magnitude", ratio=0.9, tolerance=0.05, max_retries=0, finetune_epochs=10,
                    learning_rate=1e-2, **FAST)
    before = prune(model, task, PruneConfig(judge="before", **settings))
    after = prune(model, task, PruneConfig(judge="after", **settings))
    assert before.report["steps"][0]["drop"] > 0.3 and not before.report["steps"][0]["accepted"]
    assert not before.report["target"]["reached"]
    first = after.report["steps"][0]
    assert first["accepted"] and first["judged"] == "after recovery" and "after 10 epochs of fine-tuning" in first["reason"]
    assert after.report["target"]["reached"] and after.report["target"]["delivered"] == pytest.approx(35 / 40)
    assert after.model[0].out_features == 3 and after.report["after"]["accuracy"] >= after.report["before"]["accuracy"] - 0.05
    assert after.report["finetune"] == {"judge": "after", "epochs_per_attempt": 10, "epochs_total": 10,
                                        "epochs_rolled_back": 0, "attempts_trained": 1}


def _gated(gate: int):
    torch.manual_seed(0)
    task = GatedTask(toy_data(n=240), gate, batch_size=16)
    model = mlp((6, 24, 16, 3), dropout=True)  # dropout draws from torch's random state while fine-tuning
    finetune(model, task, epochs=5, progress=False)
    return model, task


def test_rolled_back_attempt_after_finetuning_restores_weights_and_random_state(monkeypatch):
    model, task = _gated(gate=24)  # every removal fails validation
    config = PruneConfig(criterion="magnitude", ratio=0.5, finetune_epochs=2, max_retries=0, **FAST)
    torch.manual_seed(7)
    rng_before = torch.get_rng_state()
    result = prune(model, task, config)
    assert not result.report["steps"][0]["accepted"] and result.report["finetune"]["epochs_rolled_back"] == 2
    assert torch.equal(torch.get_rng_state(), rng_before)  # the fine-tuning's dropout draws were given back
    state, original = result.model.state_dict(), model.state_dict()
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in state)
    # the same run without restoring the random state would have left it changed: the check can fail
    monkeypatch.setattr(Snapshot, "restore", lambda self: None)
    torch.manual_seed(7)
    prune(model, task, config)
    assert not torch.equal(torch.get_rng_state(), rng_before)


def test_attempt_after_a_rollback_is_bit_identical_to_a_run_without_it():
    model, task = _gated(gate=10)  # 80% of 24 (keep 5) fails; 40% (keep 15) passes
    captured = {}

    def first_step(step, pruned):
        if step == 1:
            captured.update({k: v.clone() for k, v in pruned.state_dict().items()})

    torch.manual_seed(3)
    with_rollback = prune(model, task, PruneConfig(criterion="magnitude", ratio=0.8, finetune_epochs=2, **FAST),
                          on_step=first_step)
    assert [(s["attempt"], s["accepted"]) for s in with_rollback.report["steps"][:2]] == [(1, False), (2, True)]
    torch.manual_seed(3)
    direct = prune(model, task, PruneConfig(criterion="magnitude", ratio=0.4, finetune_epochs=2, **FAST))
    state = direct.model.state_dict()
    assert state.keys() == captured.keys() and all(torch.equal(state[k], captured[k]) for k in state)


def test_snapshot_restores_weights_optimizer_state_and_random_state_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def train(steps):
        for _ in range(steps):
            loss = model(torch.randn(16, 4)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    train(3)
    snapshot = Snapshot.take(model, optimizer)
    tensors = [t.clone() for t in list(model.parameters()) + list(model.buffers())]
    moments = {k: {n: v.clone() for n, v in s.items()} for k, s in optimizer.state_dict()["state"].items()}
    rng = torch.get_rng_state()
    train(5)
    snapshot.restore()
    assert all(torch.equal(a, b) for a, b in zip(tensors, list(model.parameters()) + list(model.buffers())))
    restored = optimizer.state_dict()["state"]
    assert all(torch.equal(restored[k][n], v) for k, s in moments.items() for n, v in s.items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_continuation_reaches_the_target_with_smaller_steps():
    torch.manual_seed(0)
    task = HalfAtATimeTask(toy_data(n=240), 16, batch_size=16)
    model = mlp((6, 16, 12, 3))
    finetune(model, task, epochs=20, progress=False)
    # a trained model is >= 95 % right, no masking does worse than chance: only the gate fails a step
    config = PruneConfig(criterion="magnitude", ratio=0.875, judge="before", finetune_epochs=1, tolerance=0.9, **FAST)
    result = prune(model, task, config)
    assert result.report["reference_val"] >= 0.95
    rows = [(s["step"], s["attempt"], s["target_ratio"], s["accepted"]) for s in result.report["steps"]]
    # 16 -> 2 at once fails; 16 -> 9 passes; 9 -> 2 fails, 9 -> 5 passes; 5 -> 2 fails, 5 -> 3 passes; 3 -> 2 passes
    assert rows == [(1, 1, 0.875, False), (1, 2, 0.4375, True), (2, 1, 0.875, False), (2, 2, 0.65625, True),
                    (3, 1, 0.875, False), (3, 2, 0.765625, True), (4, 1, 0.875, True)]
    assert result.model[0].out_features == 2 and result.report["layers"][0]["width_after"] == 2
    target = result.report["target"]
    assert target["reached"] and target["why"] == []
    assert target["asked_units"] == target["delivered_units"] == 14 + 10


def test_attempt_limit_stops_the_continuation_and_says_why():
    torch.manual_seed(0)
    task = HalfAtATimeTask(toy_data(n=240), 16, batch_size=16)
    model = mlp((6, 16, 12, 3))
    finetune(model, task, epochs=20, progress=False)
    config = PruneConfig(criterion="magnitude", ratio=0.875, judge="before", finetune_epochs=1, tolerance=0.9,
                         max_attempts=3, **FAST)
    result = prune(model, task, config)
    target = result.report["target"]
    assert len(result.report["steps"]) == 3 and not target["reached"]
    assert target["delivered"] < target["asked"] == 0.875
    assert target["why"][0].startswith("step 1 attempt 1 (target 87.5%, 24 units) rolled back: validation drop")
    assert target["why"][-1] == "stopped: attempt limit reached (3 attempts; max_attempts=3)"
    text = format_report(result.report)
    assert "asked 87.5% of the prunable neurons (24 of 28)" in text and "NOT reached" in text


def test_min_width_shortfall_is_named_in_why(trained):
    model, task = trained
    result = prune(model, task, PruneConfig(criterion="magnitude", ratio=0.9, min_width=8, tolerance=1.0, **FAST))
    target = result.report["target"]
    assert not target["reached"] and target["delivered_units"] == (24 - 8) + (16 - 8)
    assert "0: min_width 8 keeps 8 of 24 (the ratio asks to keep 3)" in target["why"]


def test_impossible_flops_budget_is_an_error_naming_the_reachable_floor(trained):
    model, task = trained
    with pytest.raises(PruningTargetError, match=r"cannot reach FLOPs at 0\.01% of the original: .* still leaves "
                                                 r"\d+\.\d% of the FLOPs; ask for --target-flops 0\.\d+ or more"):
        search_budget(model, task, PruneConfig(**FAST), Budget(flops=0.0001), progress=False)


def test_steps_and_judge_are_validated():
    assert PruneConfig().steps == "auto" and PruneConfig().judge == "after"
    with pytest.raises(ConfigError, match=r"steps must be an integer >= 1, got '3' \(a string\) \(or 'auto'.*judge must be one of after, "
                                          r"before, got 'later'.*max_attempts must be None or an integer >= 1, got 0"):
        PruneConfig(steps="3", judge="later", max_attempts=0)


def _cli(tmp_path, *extra):
    return main(["prune", "--model", "zoo:mlp", "--train-epochs", "3", "--criterion", "random", "--ratio", "0.9",
                 "--tolerance", "0", "--max-attempts", "1", "--latency-runs", "1", "--quiet", "--no-html",
                 "--out", str(tmp_path / "out"), *extra])


def test_require_target_exits_3_and_keeps_the_result(tmp_path, capsys):
    code = _cli(tmp_path, "--require-target")
    err = capsys.readouterr().err
    assert code == 3
    warning = [line for line in err.splitlines() if line.startswith("neuroprune: warning: target not reached")]
    assert len(warning) == 1 and "asked 90.0% of the prunable neurons" in warning[0] and "rolled back" in warning[0]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["target"]["reached"] is False and report["target"]["asked"] == 0.9
    assert report["target"]["why"][-1] == "stopped: attempt limit reached (1 attempts; max_attempts=1)"


def test_missed_target_without_require_target_warns_and_exits_0(tmp_path, capsys):
    assert _cli(tmp_path) == 0
    assert "neuroprune: warning: target not reached" in capsys.readouterr().err


def test_reached_target_exits_0_without_warning(tmp_path, capsys):
    code = main(["prune", "--model", "zoo:mlp", "--train-epochs", "3", "--ratio", "0.5", "--tolerance", "1",
                 "--latency-runs", "1", "--quiet", "--no-html", "--require-target", "--out", str(tmp_path / "out")])
    assert code == 0 and "target not reached" not in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["target"]["reached"] is True


def test_impossible_budget_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    code = main(["prune", "--model", "zoo:mlp", "--train-epochs", "2", "--target-flops", "0.0001", "--quiet",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("neuroprune: error: cannot reach FLOPs at 0.01% of the original")
    assert not (tmp_path / "out").exists()


class Crash(Exception):
    pass


def test_resume_in_the_middle_of_a_continuation_ends_like_an_uninterrupted_run(trained, tmp_path):
    model, task = trained
    config = PruneConfig(criterion="random", ratio=0.9, tolerance=0.0, max_retries=3, **FAST)
    uninterrupted = prune(model, task, config)
    assert len({s["step"] for s in uninterrupted.report["steps"]}) >= 3  # rollbacks made extra steps

    def crash_after_two(step, _):
        if step == 2:
            raise Crash()

    with pytest.raises(Crash):
        prune(model, task, config, checkpoint=tmp_path / "ckpt", on_step=crash_after_two)
    resumed = prune(model, task, config, checkpoint=tmp_path / "ckpt", resume=True)
    assert resumed.report["steps"] == uninterrupted.report["steps"]
    assert resumed.report["target"] == uninterrupted.report["target"]
    a, b = uninterrupted.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_html_report_states_asked_vs_delivered_and_why():
    from neuroprune.report.html import render_html

    side = {"params": 400, "flops": 0, "size_bytes": 1600, "accuracy": 0.9, "latency_ms": {"batch_1": 2.0}}
    target = {"quantity": "ratio", "asked": 0.8, "delivered": 0.4, "asked_units": 8, "delivered_units": 4,
              "total_units": 10, "reached": False, "why": ["stopped: attempt limit reached (2 attempts; max_attempts=2)"]}
    page = render_html({"before": side, "after": side, "target": target})
    assert "Target: asked 80.0% of the prunable neurons (8 of 10), delivered 40.0% (4): NOT reached" in page
    assert "<li>stopped: attempt limit reached (2 attempts; max_attempts=2)</li>" in page


def test_budget_target_measures_the_result_against_the_asked_fraction():
    from neuroprune.core.target import budget_target

    loop = {"quantity": "ratio", "asked": 0.6, "delivered": 0.6, "asked_units": 6, "delivered_units": 6,
            "total_units": 10, "reached": True, "why": []}
    report = {"before": {"flops": 1000, "params": 100}, "after": {"flops": 560, "params": 60}}
    missed = budget_target(loop, Budget(flops=0.5), report, {"flops": 0.5})
    assert (missed["quantity"], missed["asked"], missed["delivered"], missed["reached"]) == ("flops", 0.5, 0.56, False)
    assert missed["why"] == ["flops at 56.0% of the original, asked 50.0%"]
    met = budget_target(loop, Budget(params=0.6), report, {"params": 0.6})
    assert met["reached"] and met["why"] == [] and met["delivered"] == 0.6
