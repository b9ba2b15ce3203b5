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
    assert report["layers"] == [{"name": "fc1", "width_before": 128, "width_after": 32, "fixed_units": 0, "kept_because": []},
                                {"name": "fc2", "width_before": 64, "width_after": 16, "fixed_units": 0, "kept_because": []}]
    assert {"target_ratio", "removed", "accuracy", "accepted"} <= set(report["steps"][0])
    assert report["config"]["criterion"] == "rank" and report["after"]["accuracy"] > 0.9
    from neuroprune.models.zoo import build_model
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
    assert report["layers"] == [{"name": "0", "width_before": 20, "width_after": 10, "fixed_units": 0, "kept_because": []}]
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
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("neuroprune: warning: ")]  # e.g. latency from --latency-runs 1
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
    described = {line.split()[0]: line.split(maxsplit=1)[1:] for line in printed.splitlines() if line.strip()}
    for name in ("magnitude", "gradient", "taylor", "activation_frequency", "activation_mean", "seed", "rank", "random", "obs"):
        assert described.get(name), f"{name} is not listed with a description"


def test_config_file_budget_and_explain(tmp_path, capsys):
    config = tmp_path / "prune.toml"
    config.write_text('[prune]\ncriterion = "magnitude"\ntolerance = 1.0\nratio = 0.9\n\n[[layer]]\npattern = "fc2"\n'
                      'min_width = 40\n')
    out = tmp_path / "o"
    code = run_cli("prune", "--model", "zoo:mlp", "--train-epochs", "3", "--config", str(config), "--target-flops", "0.5",
                   "--explain", str(tmp_path / "scores.csv"), "--out", str(out), "--quiet", "--latency-runs", "1",
                   "--json", str(tmp_path / "r.json"))
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert abs(report["after"]["flops"] / report["before"]["flops"] - 0.5) <= 0.01
    widths = {layer["name"]: layer["width_after"] for layer in report["layers"]}
    assert widths["fc2"] >= 40  # the file's layer policy holds under the budget
    assert report["config"]["criterion"] == "magnitude" and "budget" in report and "sensitivity" in report
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0].startswith("layer,neuron,") and len(lines) == 1 + 128 + 64
    assert sum(line.endswith(",removed") for line in lines) == (128 - widths["fc1"]) + (64 - widths["fc2"])
    assert (out / "report.html").exists() and (out / "figures" / "sensitivity.png").exists()


def test_command_line_options_override_the_config_file(tmp_path):
    config = tmp_path / "prune.toml"
    config.write_text('[prune]\ncriterion = "magnitude"\nratio = 0.25\nsteps = 3\n')
    code = run_cli("prune", "--model", "zoo:mlp", "--train-epochs", "0", "--config", str(config), "--steps", "1",
                   "--tolerance", "1", "--quiet", "--latency-runs", "1", "--out", str(tmp_path / "o"),
                   "--json", str(tmp_path / "r.json"))
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["config"]["steps"], report["config"]["ratio"], report["config"]["tolerance"]) == (1, 0.25, 1.0)


def test_resume_from_the_command_line(tmp_path, monkeypatch):
    import neuroprune.core.loop as schedule

    real = schedule._run_step
    calls = []

    def crash_on_second_step(work, step, *args, **kwargs):
        calls.append(step)
        if step == 2 and len(calls) == 2:
            raise KeyboardInterrupt
        return real(work, step, *args, **kwargs)

    monkeypatch.setattr(schedule, "_run_step", crash_on_second_step)
    argv = ["prune", "--model", "zoo:mlp", "--train-epochs", "2", "--criterion", "magnitude", "--steps", "3",
            "--tolerance", "1", "--quiet", "--latency-runs", "1", "--out", str(tmp_path / "o")]
    assert run_cli(*argv) == 130
    assert (tmp_path / "o.checkpoint" / "state.json").exists() and not (tmp_path / "o").exists()
    assert run_cli(*argv, "--resume") == 0
    assert calls == [1, 2, 2, 3]  # step 1 was not redone
    assert not (tmp_path / "o.checkpoint").exists() and (tmp_path / "o" / "model.safetensors").exists()
    assert run_cli("prune", "--model", "zoo:mlp", "--resume", "--quiet", "--out", str(tmp_path / "p")) == 2


def test_sensitivity_and_train_prune_commands(tmp_path, capsys):
    assert run_cli("sensitivity", "--model", "zoo:mlp", "--train-epochs", "3", "--ratios", "0.5,0.9", "--quiet",
                   "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png")) == 0
    assert "fc1" in capsys.readouterr().out
    curves = json.loads((tmp_path / "s.json").read_text())
    assert curves["layers"]["fc2"]["ratios"] == [0.5, 0.9]
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli("train-prune", "--model", "zoo:mlp", "--ratio", "0.5", "--epochs", "4", "--quiet",
                   "--out", str(tmp_path / "t"), "--json", str(tmp_path / "t.json")) == 0
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["layers"] == [{"name": "fc1", "width_before": 128, "width_after": 64},
                                {"name": "fc2", "width_before": 64, "width_after": 32}]
    from neuroprune import build_model
    assert load(tmp_path / "t", lambda: build_model("mlp")).fc2.out_features == 32
    assert run_cli("train-prune", "--model", "zoo:mlp", "--epochs", "4", "--start-epoch", "3", "--end-epoch", "2",
                   "--out", str(tmp_path / "u")) == 2
