"""Every script in examples/ runs offline: its ``main`` on tiny settings, in a temporary folder.

Each test checks what the script promises: files written, the model smaller, the saved folder
reloading to identical outputs, ONNX runs in onnxruntime, and so on.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import neuroprune as npr

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def saved_folder(out: Path) -> None:
    for name in ("model.safetensors", "plan.json", "report.json"):
        assert (out / name).is_file(), name
    plan = json.loads((out / "plan.json").read_text())
    assert plan["format"] == "neuroprune-plan" and plan["version"] == 1


def test_every_example_has_a_test():
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    scripts = {path.stem for path in EXAMPLES.glob("*.py")}
    assert scripts <= tested, f"examples without a test: {sorted(scripts - tested)}"


def test_write_up_scenario(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    example = load_example("write_up_scenario")
    summary = example.main(["--make-demo-npz", "mnist.npz", "--epochs", "2", "--samples", "400", "--steps", "2",
                            "--finetune-epochs", "1", "--dense-weights", "dense.safetensors", "--quiet"])
    with np.load(tmp_path / "mnist.npz") as arrays:
        assert sorted(arrays.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert arrays["x_train"].shape[1:] == (28, 28) and arrays["x_train"].dtype == np.uint8
        assert len(arrays["x_train"]) + len(arrays["x_test"]) == 1797
    saved_folder(tmp_path / "write-up-out")
    result = summary["result"]
    assert summary["reloaded_equal"]
    assert result.report["config"]["criterion"] == "seed"
    assert [layer["name"] for layer in result.report["layers"]] == ["fc1", "fc2"]
    assert result.report["after"]["params"] < result.report["before"]["params"] == 784 * 128 + 128 + 128 * 64 + 64 + 650
    assert summary["dense_accuracy"] > 0.5  # 2 epochs on 400 samples already learn the digits
    out = capsys.readouterr().out
    assert "neuroprune report" in out and "outputs identical: True" in out
    # the dense weights fit the CLI's model file: `--model examples/write_up_scenario.py:build`
    npr.load_weights(example.build(), tmp_path / "dense.safetensors")


def test_write_up_keras(tmp_path, monkeypatch):
    """The scenario in Keras 3 (keras is optional: the check lives in tests/keras_models.py and skips without it)."""
    from keras_models import check_write_up_keras

    monkeypatch.chdir(tmp_path)
    check_write_up_keras(tmp_path, load_example)


def test_write_up_scenario_needs_data(capsys):
    with pytest.raises(SystemExit):
        load_example("write_up_scenario").main([])
    assert "--make-demo-npz" in capsys.readouterr().err


def test_prune_your_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = load_example("prune_your_model").main(["--samples", "600", "--epochs", "3"])
    saved_folder(tmp_path / "my-pruned-net")
    assert summary["reloaded_equal"]
    assert summary["pruned_params"] < summary["dense_params"]
    assert isinstance(summary["reloaded"].body[1], torch.nn.BatchNorm1d)
    assert summary["reloaded"].body[1].num_features < 96  # the BatchNorm shrank with its Linear


def test_cnn_residual(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = load_example("cnn_residual").main(["--epochs", "1", "--image-size", "8", "--finetune-epochs", "0",
                                                 "--tolerance", "1"])
    saved_folder(tmp_path / "residual-out")
    assert summary["reloaded_equal"]
    assert summary["groups"][0] == "stem.0"  # the stem conv's channels, tied by the residual adds of stage 1
    report = summary["result"].report
    assert report["config"]["scope"] == "global" and report["after"]["flops"] < report["before"]["flops"]
    assert all(layer["width_after"] % 4 == 0 for layer in report["layers"])


def test_budget_search(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    summary = load_example("budget_search").main(["--epochs", "1", "--image-size", "32", "--finetune-epochs", "0"])
    assert abs(summary["searched_flops"] - 0.5) < 0.05
    assert abs(summary["uniform_flops"] - summary["searched_flops"]) < 0.05
    assert set(summary["ratios"]) == set(summary["sensitivity"]["layers"])
    assert "searched per-layer ratios" in capsys.readouterr().out


def test_gradual_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = load_example("gradual_training").main(["--epochs", "4", "--ratio", "0.5"])
    saved_folder(tmp_path / "gradual-out")
    assert summary["fraction"] == 0.5 and summary["widths"] == {"fc1": 64, "fc2": 32}
    assert summary["reloaded_equal"]
    assert summary["accuracy"] == pytest.approx(summary["masked_accuracy"], abs=1e-6)  # masked == removed


def test_export_onnx(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    summary = load_example("export_onnx").main(["--epochs", "2"])
    saved_folder(tmp_path / "onnx-out")
    assert summary["onnx"].is_file() and summary["check"].dynamic_batch and summary["check"].checked
    assert summary["max_diff"] < 1e-4
    assert summary["onnx_accuracy"] == pytest.approx(summary["torch_accuracy"], abs=0.01)


def test_explain_neurons(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = load_example("explain_neurons").main(["--epochs", "3"])
    saved_folder(tmp_path / "explained")
    with open(summary["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 128 + 64
    assert set(rows[0]) == {"layer", "neuron", "magnitude", "taylor", "activation_frequency", "rank", "seed",
                            "decision"}
    assert sum(row["decision"] == "removed" for row in rows if row["layer"] == "fc1") == len(summary["removed"]["fc1"])
    assert summary["html"].read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "explained" / "figures" / "scores.png").is_file()


def test_transformers_minilm(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    summary = load_example("transformers_minilm").main(["--tiny", "--sentences", "60", "--distill-seconds", "1",
                                                        "--batch-size", "8"])
    out = tmp_path / "minilm-out"
    saved_folder(out)
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert summary["reloaded_equal"] and 0 < summary["fidelity"] <= 1.0 + 1e-6
    layers = summary["result"].report["layers"]
    assert [layer["width_after"] for layer in layers] == [32, 32]  # FFN 64 -> 32, heads kept (ignored)
