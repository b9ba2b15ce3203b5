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


def test_cli_under_torchrun_writes_once_and_matches_one_process(tmp_path):
    import os
    import subprocess

    from test_distributed import ROOT, TIMEOUT_S

    options = ["prune", "--model", "zoo:mlp", "--data", "digits", "--train-epochs", "1", "--criterion", "taylor",
               "--ratio", "0.5", "--steps", "2", "--finetune-epochs", "1", "--latency-runs", "1", "--no-html",
               "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "neuroprune", *options, "--out", "one", "--json", "one.json"],
                            capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    many = torchrun("-m neuroprune", *options, "--out", "two", "--json", "two.json", cwd=tmp_path)
    _check(many)
    assert many.stdout.count("saved to two/") == 1  # rank 0 prints
    one, two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert _decisions(one) == _decisions(two)
    plans = [json.loads((tmp_path / name / "plan.json").read_text())["modules"] for name in ("one", "two")]
    assert plans[0] == plans[1]
    assert not (tmp_path / "two.checkpoint").exists()  # the default checkpoint, removed once by rank 0


def test_a_stalled_rank_makes_the_others_fail_after_the_timeout_not_hang(tmp_path):
    _check(torchrun("stall.py", str(tmp_path)))
    outcome = json.loads((tmp_path / "rank0.json").read_text())
    assert outcome["type"] is not None and outcome["seconds"] < 11, outcome
