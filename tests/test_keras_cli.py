"""``neuroprune prune --model keras:PATH.keras``: the command line prunes a Keras model file."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import json  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("keras")

import numpy as np  # noqa: E402
from keras_models import keras, mlp, outputs  # noqa: E402

from neuroprune.cli.main import main  # noqa: E402


def test_prune_a_keras_file_from_the_command_line(tmp_path, capsys):
    model = mlp((64, 16, 8, 10))
    model.save(tmp_path / "net.keras")
    code = main(["prune", "--model", f"keras:{tmp_path / 'net.keras'}", "--data", "digits", "--train-epochs", "2",
                 "--criterion", "magnitude", "--ratio", "0.5", "--tolerance", "1", "--latency-runs", "1", "--quiet",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["adapter"] == "keras" and plan["modules"]["fc1"]["axes"]["out"]["size"] == 16
    pruned = keras().saving.load_model(tmp_path / "out" / "model.keras")
    assert [layer.units for layer in pruned.layers] == [8, 4, 10]
    x = np.zeros((2, 64), dtype="float32")
    assert outputs(pruned, x).shape == (2, 10)
    printed = capsys.readouterr().out
    assert "fc1" in printed and "model.keras, model.safetensors, plan.json" in printed.split("saved to")[1]


def test_weights_do_not_apply_to_keras_files(tmp_path, capsys):
    mlp((64, 8, 10)).save(tmp_path / "net.keras")
    code = main(["prune", "--model", f"keras:{tmp_path / 'net.keras'}", "--data", "digits", "--weights", "w.safetensors",
                 "--out", str(tmp_path / "out"), "--quiet"])
    assert code != 0 and "--weights does not apply" in capsys.readouterr().err
