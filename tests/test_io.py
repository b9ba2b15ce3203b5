"""Save / load: exact replay, no pickle, clear errors, nothing half-written."""

from __future__ import annotations

import json

import pytest
import torch
from models import mlp, toy_data

from neuroprune import ClassificationTask, PruneConfig, load, load_weights, prune, save
from neuroprune.core.errors import CheckpointError, OutputExistsError, PlanError
from neuroprune.torch.io import MODEL_FILE, PLAN_FILE, REPORT_FILE

BUILD = lambda: mlp((6, 16, 12, 3), norm="bn")  # noqa: E731


@pytest.fixture(scope="module")
def result():
    return prune(BUILD(), ClassificationTask(toy_data(), batch_size=16),
                 PruneConfig(criterion="magnitude", ratio=0.5, steps=2, tolerance=1.0, progress=False, latency_runs=1))


def test_saved_and_reloaded_equals_pruned(result, tmp_path):
    result.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([MODEL_FILE, PLAN_FILE, REPORT_FILE,
                                                                         "report.html", "figures"])
    assert sorted(p.name for p in (tmp_path / "out" / "figures").iterdir()) == ["steps.png", "widths.png"]
    reloaded = load(tmp_path / "out", BUILD).eval()
    x = torch.randn(11, 6)
    with torch.no_grad():
        assert torch.equal(reloaded(x), result.model.eval()(x))
    assert json.loads((tmp_path / "out" / REPORT_FILE).read_text())["after"]["params"] == result.report["after"]["params"]
    original = BUILD()
    load(tmp_path / "out", original)  # a module is copied, not modified
    assert original[0].out_features == 16


def test_existing_folder_is_refused_then_replaced_atomically(result, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="already exists"):
        result.save(target)
    assert (target / "mine.txt").read_text() == "keep me"
    result.save(target, overwrite=True)
    assert not (target / "mine.txt").exists() and (target / MODEL_FILE).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or backup left behind


def test_interrupted_save_leaves_nothing(result, tmp_path, monkeypatch):
    import neuroprune.torch.io as io

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io, "write_files", fail)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path / "out", result.model, result.plan, result.report)
    assert list(tmp_path.iterdir()) == []


def test_load_errors(result, tmp_path):
    folder = tmp_path / "out"
    result.save(folder)
    with pytest.raises(CheckpointError, match="not a neuroprune folder: model.safetensors is missing"):
        load(tmp_path, BUILD)
    with pytest.raises(PlanError, match="is a Linear, the plan expects|has .* positions, the plan expects"):
        load(folder, lambda: mlp((6, 20, 12, 3), norm="bn"))
    with pytest.raises(PlanError, match="the model has no module '1'"):
        load(folder, lambda: torch.nn.Sequential(torch.nn.Linear(6, 16)))
    plan = json.loads((folder / PLAN_FILE).read_text())
    (folder / PLAN_FILE).write_text(json.dumps({**plan, "version": 99}))
    with pytest.raises(PlanError, match="plan version 99 is not supported"):
        load(folder, BUILD)
    (folder / PLAN_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(folder, BUILD)
    (folder / PLAN_FILE).write_text(json.dumps(plan))
    (folder / MODEL_FILE).write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="cannot read"):
        load(folder, BUILD)


def test_weights_that_do_not_fit(result, tmp_path):
    folder = tmp_path / "out"
    result.save(folder)
    other = prune(BUILD(), ClassificationTask(toy_data(), batch_size=16),
                  PruneConfig(criterion="magnitude", ratio=0.25, tolerance=1.0, progress=False, latency_runs=1))
    other.save(tmp_path / "other")
    (folder / MODEL_FILE).write_bytes((tmp_path / "other" / MODEL_FILE).read_bytes())
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load(folder, BUILD)


def test_user_weights_safetensors_state_dict_and_pickle(tmp_path):
    import safetensors.torch

    model = BUILD()
    safetensors.torch.save_file(model.state_dict(), tmp_path / "w.safetensors")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.save(model, tmp_path / "whole.pt")
    for name in ("w.safetensors", "w.pt"):
        fresh = BUILD()
        load_weights(fresh, tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    with pytest.raises(CheckpointError, match="contains pickled objects.*allow_pickle=True"):
        load_weights(BUILD(), tmp_path / "whole.pt")
    load_weights(BUILD(), tmp_path / "whole.pt", allow_pickle=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(BUILD(), tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_weights(mlp((6, 8, 3)), tmp_path / "w.safetensors")
