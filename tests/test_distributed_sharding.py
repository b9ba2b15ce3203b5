"""Sharded validation, Gram matrices solved on owner ranks, rank-0-only CLI output, the debug state check.

Each test launches torchrun (gloo on CPU) on tests/dist/sharding_run.py or on ``-m neuroprune`` and
compares with one process; they carry the ``dist`` marker (``make test-dist``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from test_distributed import DIST, ROOT, TIMEOUT_S, _check, torchrun

pytestmark = pytest.mark.dist

sys.path.insert(0, str(DIST))
import sharding_run  # noqa: E402


@pytest.mark.parametrize("ranks", [2, 3])
def test_sharded_validation_gives_the_metric_of_one_process(tmp_path, ranks):
    _check(torchrun("sharding_run.py", "metrics", str(tmp_path / "out.pt"), ranks=ranks))
    results = torch.load(tmp_path / "out.pt", weights_only=False)
    one = sharding_run.metrics()
    # 3 + 3 accuracy batches and 4 perplexity batches: every batch evaluated once, on one rank
    assert sum(r["batches_seen"] for r in results["ranks"]) == one["batches_seen"] == 10
    assert max(r["batches_seen"] for r in results["ranks"]) < one["batches_seen"]
    for result in results["ranks"]:  # every rank gets the metric of all batches
        assert result["accuracy_val"] == one["accuracy_val"]  # exact: counts
        assert result["accuracy_test"] == one["accuracy_test"]
        assert result["perplexity_val"] == pytest.approx(one["perplexity_val"], rel=1e-12)


@pytest.mark.parametrize("ranks", [2, 3])
def test_gram_matrices_are_solved_on_owner_ranks_with_the_results_of_one_process(tmp_path, ranks):
    _check(torchrun("sharding_run.py", "owners", str(tmp_path / "out.pt"), ranks=ranks))
    results = torch.load(tmp_path / "out.pt", weights_only=False)["ranks"]
    one = sharding_run.owners()
    owners = results[0]["owners"]
    assert sorted(owners) == one["held"] and set(owners.values()) == set(range(min(ranks, len(owners))))
    for rank, result in enumerate(results):
        assert result["held"] == sorted(key for key, owner in owners.items() if owner == rank)  # only its own
        for group, value in one["scores"].items():
            np.testing.assert_allclose(result["scores"][group], value, rtol=1e-9, atol=1e-12)
        assert result["refitted"] == one["refitted"]
        for name, tensor in one["student"].items():
            torch.testing.assert_close(result["student"][name], tensor, rtol=1e-5, atol=1e-6)
        assert result["plan"] == one["plan"]
        assert [{k: v for k, v in s.items() if k != "accuracy"} for s in result["steps"]] == \
               [{k: v for k, v in s.items() if k != "accuracy"} for s in one["steps"]]
        assert [s["accuracy"] for s in result["steps"]] == pytest.approx([s["accuracy"] for s in one["steps"]])


def test_debug_state_check_passes_on_a_normal_run_and_names_the_first_differing_tensor(tmp_path):
    _check(torchrun("sharding_run.py", "debug", str(tmp_path), env={"NEUROPRUNE_DEBUG_DIST": "1"}))
    outcomes = [json.loads((tmp_path / f"debug-{rank}.json").read_text()) for rank in range(2)]
    assert outcomes[0] == outcomes[1]  # the same error on every rank
    assert outcomes[0]["type"] == "NeuropruneError"
    assert "ranks 0 and 1 diverged after a surgery: tensor '0.bias' differs" in outcomes[0]["message"]


def _lines(text: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").splitlines() if line.strip()]


def test_cli_sensitivity_and_export_under_torchrun_write_once_and_print_each_line_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    pruned = subprocess.run([sys.executable, "-m", "neuroprune", "prune", "--model", "zoo:mlp", "--data", "digits",
                             "--train-epochs", "1", "--criterion", "magnitude", "--ratio", "0.5", "--latency-runs",
                             "1", "--no-html", "--quiet", "--out", "pruned"],
                            capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path, env=env)
    assert pruned.returncode == 0, pruned.stderr[-3000:]
    sensitivity = torchrun("-m neuroprune", "sensitivity", "--model", "zoo:mlp", "--data", "digits",
                           "--train-epochs", "1", "--ratios", "0.5", "--json", "sens.json", "--plot", "sens.png",
                           cwd=tmp_path)
    _check(sensitivity)
    curves = json.loads((tmp_path / "sens.json").read_text())
    assert sorted(curves["layers"]) == ["fc1", "fc2"] and (tmp_path / "sens.png").stat().st_size > 0
    assert sensitivity.stdout.count("sensitivity:") == 1  # the table, printed by rank 0 only
    export = torchrun("-m neuroprune", "export", "exported", "--from", "pruned", "--model", "zoo:mlp",
                      "--format", "torchscript", cwd=tmp_path)
    _check(export)
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["model.pt"]  # no leftovers of a race
    assert sensitivity.stderr.count("training zoo:mlp for 1 epochs on digits") == 1, sensitivity.stderr[-3000:]
    for run in (sensitivity, export):  # progress bars (rank 0's only) redraw; torchrun's own notes start with W
        lines = [line for line in _lines(run.stderr) if not re.search(r"\d+%\|", line) and not line.startswith("W")]
        assert len(lines) == len(set(lines)), run.stderr[-3000:]
    assert export.stdout.count("model.pt") == 1, export.stdout
