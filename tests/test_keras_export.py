"""``neuroprune export`` on Keras folders: Keras's own exporters, checked against the Keras model."""

import importlib.util
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import pytest  # noqa: E402

pytest.importorskip("keras")

import numpy as np  # noqa: E402
from keras_models import keras, mlp  # noqa: E402

from neuroprune.cli.export import KERAS_FORMATS  # noqa: E402
from neuroprune.cli.main import main  # noqa: E402
from neuroprune.core.errors import ExportError, OutputExistsError  # noqa: E402
from neuroprune.core.plan import PruningPlan  # noqa: E402
from neuroprune.keras.export import FORMATS, export_keras_folder, is_keras_folder  # noqa: E402
from neuroprune.keras.io import save  # noqa: E402

ON_TORCH = keras().backend.backend() == "torch"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "pruned"
    save(path, mlp((8, 6, 3)), PruningPlan(adapter="keras"))
    return path


def test_the_cli_lists_the_keras_formats():
    assert sorted(FORMATS) == sorted(KERAS_FORMATS)


def test_keras_and_safetensors_are_copied_and_checked(folder, tmp_path):
    assert is_keras_folder(folder)
    for fmt in ("keras", "safetensors"):
        check = export_keras_folder(tmp_path, folder, fmt)
        assert check.batch_sizes == (2, 5) and check.max_abs_diff == 0.0 and check.path.is_file()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_keras_folder(tmp_path, folder, "keras")


@pytest.mark.skipif(not ON_TORCH or importlib.util.find_spec("onnxscript") is None,
                    reason="Keras's ONNX export needs the torch backend and onnxscript")
def test_onnx_reproduces_the_model(folder, tmp_path):
    check = export_keras_folder(tmp_path, folder, "onnx")
    assert (tmp_path / "model.onnx").is_file() and not list(tmp_path.glob(".*partial*"))
    if importlib.util.find_spec("onnxruntime") is None:
        assert not check.batch_sizes and "onnxruntime" in check.note
    else:
        assert check.batch_sizes == (2, 5) and check.max_abs_diff < 1e-5


@pytest.mark.skipif(not ON_TORCH, reason="the torch format needs the torch backend")
def test_torch_program_has_a_dynamic_batch(folder, tmp_path):
    import torch

    check = export_keras_folder(tmp_path, folder, "torch")
    assert check.batch_sizes == (2, 5) and check.max_abs_diff < 1e-6
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    assert tuple(program(torch.zeros(7, 8)).shape) == (7, 3)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed")
def test_a_format_that_needs_tensorflow_names_what_to_install(folder, tmp_path):
    with pytest.raises(ExportError, match="pip install tensorflow"):
        export_keras_folder(tmp_path, folder, "tf_saved_model")
    assert not any(tmp_path.iterdir())  # nothing left behind


def test_the_cli_exports_a_keras_folder_without_model(folder, tmp_path, capsys):
    assert main(["export", str(tmp_path / "out"), "--from", str(folder), "--format", "keras"]) == 0
    assert "checked at batch sizes 2, 5" in capsys.readouterr().out
    loaded = keras().saving.load_model(tmp_path / "out" / "model.keras")
    x = np.ones((2, 8), dtype="float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), keras().saving.load_model(folder / "model.keras").predict(x, verbose=0))


def test_the_cli_still_asks_torch_folders_for_model(tmp_path, capsys):
    torch_folder = tmp_path / "torch"
    torch_folder.mkdir()
    assert main(["export", str(tmp_path / "out"), "--from", str(torch_folder)]) != 0
    assert "--model is required" in capsys.readouterr().err
