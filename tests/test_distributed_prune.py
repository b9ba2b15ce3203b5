"""A full prune() over 2 ranks (torchrun, gloo on CPU) equals one process; failures reach every rank."""

from __future__ import annotations

import json

import pytest

from neuroprune import load, prune
from test_distributed import DIST, torchrun, _check  # noqa: F401

pytestmark = pytest.mark.dist

import sys  # noqa: E402

sys.path.insert(0, str(DIST))
from cases import PRUNE_CONFIGS, prune_config, trained_mlp  # noqa: E402


@pytest.fixture(scope="module")
def one_process():
    model, task = trained_mlp()
    return {name: prune(model, task, prune_config(**changes)) for name, changes in PRUNE_CONFIGS.items()}


def _decisions(report):
    return [{k: step.get(k) for k in ("step", "attempt", "removed", "accepted", "accuracy")} for step in report["steps"]]


def test_prune_over_two_ranks_gives_the_same_plan_and_decisions(tmp_path, one_process):
    _check(torchrun("prune_run.py", "plan", str(tmp_path / "out")))
    assert not list(tmp_path.glob("error-*.json"))
    assert any(not s["accepted"] for s in one_process["rollback"].report["steps"]), "no rollback exercised"
    for name, single in one_process.items():
        report = json.loads((tmp_path / "out" / name / "report.json").read_text())
        plan = json.loads((tmp_path / "out" / name / "plan.json").read_text())
        assert report["world_size"] == 2 and report["rank"] == 0 and single.report["world_size"] == 1
        assert _decisions(report) == _decisions(single.report)
        assert plan["modules"] == single.plan.to_dict()["modules"]
        model, _ = trained_mlp()
        loaded = load(tmp_path / "out" / name, model)  # saved once, by rank 0, and loadable
        assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in single.model.parameters())


@pytest.mark.parametrize("mode, kind, source", [("nan", "NonFiniteError", 1), ("raise", "ValueError", 1)])
def test_a_failing_rank_raises_the_same_error_on_every_rank_without_a_hang(tmp_path, mode, kind, source):
    _check(torchrun("prune_run.py", mode, str(tmp_path / "out")))  # returns (well within the timeout)
    errors = [json.loads((tmp_path / f"error-{r}.json").read_text()) for r in range(2)]
    assert errors[0] == errors[1]
    assert errors[0]["type"] == kind and errors[0]["failed_rank"] == source
    assert not (tmp_path / "out").exists()


def test_resume_with_one_process_from_a_two_rank_checkpoint(tmp_path, one_process):
    _check(torchrun("prune_run.py", "crash", str(tmp_path / "ckpt")))
    errors = [json.loads((tmp_path / f"error-{r}.json").read_text()) for r in range(2)]
    assert {e["type"] for e in errors} == {"Crash"}
    model, task = trained_mlp()
    resumed = prune(model, task, prune_config(), checkpoint=tmp_path / "ckpt", resume=True)
    assert resumed.plan.to_dict()["modules"] == one_process["taylor"].plan.to_dict()["modules"]
    assert _decisions(resumed.report) == _decisions(one_process["taylor"].report)
