"""The command line end to end: demo, prune on an .npz and a user file, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from neuroprune import load
from neuroprune.cli.main import main


def run_cli(*args: str) -> int:
    return main(list(args))


def test_demo_writes_folder_and_report(tmp_path, capsys):
    assert run_cli("demo", "--out", str(tmp_path / "demo"), "--json", str(tmp_path / "r.json"), "--quiet") == 0
    printed = capsys.readouterr().out
    assert "Layer widths" in printed and "fc1    128 -> 32" in printed
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["before"]) >= {"params", "flops", "size_bytes", "accuracy", "latency_ms"}
    assert report["layers"] == [{"name": "fc1", "width_before": 128, "width_after": 32},
                                {"name": "fc2", "width_before": 64, "width_after": 16}]
    assert {"target_ratio", "removed", "accuracy", "accepted"} <= set(report["steps"][0])
    assert report["config"]["criterion"] == "rank" and report["after"]["accuracy"] > 0.9
    from neuroprune.zoo import build_model
    assert load(tmp_path / "demo", lambda: build_model("mlp")).fc1.out_features == 32


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 6)) * 2
    y = rng.integers(0, 3, 150)
    x = centers[y] + rng.normal(size=(150, 6)) * 0.5
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x[:120].astype("float32"), y_train=y[:120], x_test=x[120:].astype("float32"), y_test=y[120:])
    return path


def test_prune_user_model_file_weights_and_npz(tmp_path, npz, capsys):
    source = tmp_path / "net.py"
    source.write_text("import torch.nn as nn\n\ndef build():\n    return nn.Sequential(nn.Linear(6, 20), nn.ReLU(), "
                      "nn.Linear(20, 3))\n")
    import safetensors.torch
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_file(torch.nn.Sequential(torch.nn.Linear(6, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3)).state_dict(), weights)
    out = tmp_path / "pruned"
    code = run_cli("prune", "--model", f"{source}:build", "--weights", str(weights), "--data", f"npz:{npz}",
                   "--criterion", "taylor", "--ratio", "0.5", "--tolerance", "1", "--finetune-epochs", "1",
                   "--out", str(out), "--json", str(tmp_path / "r.json"), "--quiet", "--latency-runs", "2")
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["layers"] == [{"name": "0", "width_before": 20, "width_after": 10}]
    assert "training" not in capsys.readouterr().err  # weights given: no training


@pytest.mark.parametrize("args, message", [
    (["--ratio", "1.5"], "ratio must lie in [0, 1), got 1.5"),
    (["--threshold", "nan"], "threshold must be a finite number >= 0, got nan"),
    (["--criterion", "fisher"], "unknown criterion 'fisher'; known: activation_frequency, activation_mean"),
    (["--data", "mnist"], "unknown data spec 'mnist'"),
    (["--model", "zoo:vgg"], "unknown zoo model 'vgg'"),
    (["--model", "nofile.py:build"], "model file 'nofile.py' does not exist"),
    (["--weights", "missing.pt"], "weights file 'missing.pt' does not exist"),
    (["--threshold", "2"], "threshold 2.0 would remove every neuron of layer"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, args, message):
    base = ["prune", "--model", "zoo:mlp", "--train-epochs", "0", "--quiet", "--out", str(tmp_path / "o"), "--latency-runs", "1"]
    argv = base + args
    if "--model" in args:
        argv = [a for a in base if a not in ("--model", "zoo:mlp")] + args
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neuroprune: error: ") and message in err[0]
    assert not (tmp_path / "o").exists()


def test_existing_output_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    assert run_cli("prune", "--model", "zoo:mlp", "--out", str(tmp_path / "o"), "--quiet") == 2
    assert "already exists" in capsys.readouterr().err
    assert list((tmp_path / "o").iterdir()) == []


def test_help_shows_examples():
    out = subprocess.run([sys.executable, "-m", "neuroprune.cli.main", "prune", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "examples:" in out.stdout and "npz:mnist.npz" in out.stdout


def test_criteria_lists_every_criterion(capsys):
    assert run_cli("criteria") == 0
    printed = capsys.readouterr().out
    for name in ("magnitude", "gradient", "taylor", "activation_frequency", "activation_mean", "seed", "rank", "random"):
        assert name in printed
