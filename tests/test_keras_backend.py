"""Keras frontend: statistics against the torch frontend's, the backend seam, prune end to end, files."""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import pytest  # noqa: E402

pytest.importorskip("keras")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from keras_models import keras, mlp, outputs, residual_cnn  # noqa: E402

import neuroprune  # noqa: E402
from neuroprune.core.backend import Backend, backend_for  # noqa: E402
from neuroprune.core.config import PruneConfig  # noqa: E402
from neuroprune.core.errors import CheckpointError  # noqa: E402
from neuroprune.data import load_digits  # noqa: E402
from neuroprune.keras.graph import discover  # noqa: E402
from neuroprune.keras.io import load, load_keras_model  # noqa: E402
from neuroprune.keras.stats import collect_statistics  # noqa: E402
from neuroprune.keras.task import KerasClassificationTask  # noqa: E402
from neuroprune.torch.graph.discover import discover as torch_discover  # noqa: E402
from neuroprune.torch.stats import collect_statistics as torch_statistics  # noqa: E402


def _twin_models():
    """A Keras MLP and the torch MLP with the same weights (torch weight = Keras kernel transposed)."""
    model = mlp((5, 7, 6, 3))
    model.layers[-1].activation = keras().activations.linear  # logits, like the torch twin
    twin = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        for linear, layer in zip(twin[::2], model.layers):
            kernel, bias = layer.get_weights()
            linear.weight.copy_(torch.from_numpy(kernel.T))
            linear.bias.copy_(torch.from_numpy(bias))
    return model, twin


def test_statistics_equal_the_torch_frontends():
    model, twin = _twin_models()
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(16, 5)).astype("float32"), rng.integers(0, 3, 16)) for _ in range(3)]
    loss = lambda y, p: keras().ops.mean(keras().losses.sparse_categorical_crossentropy(y, p, from_logits=True))  # noqa: E731
    ours = collect_statistics(model, discover(model), batches, loss, gradients=True, per_weight=True, gram=True,
                              threshold=0.1, progress=False)
    reference = torch_statistics(twin, torch_discover(twin, torch.zeros(1, 5)),
                                 [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches],
                                 lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), gradients=True,
                                 per_weight=True, gram=True, threshold=0.1, progress=False)
    names = {"fc1": "0", "fc2": "2", "out": "4"}
    for (path, axis), entry in ours.axes.items():
        theirs = reference.axes[(names[path], axis)]
        for field in ("act_count", "act_abs", "act_sum", "act_sq", "grad_abs", "grad_numel", "taylor", "gram"):
            mine = getattr(entry, field)
            if mine is None:
                assert getattr(theirs, field) is None, (path, axis, field)
                continue
            np.testing.assert_allclose(mine, getattr(theirs, field).numpy(), rtol=1e-4, atol=1e-6, err_msg=f"{path}.{axis}.{field}")
        assert entry.act_n == theirs.act_n
    for (path, weight), grads in ours.weight_grad_abs.items():
        np.testing.assert_allclose(grads, reference.weight_grad_abs[(names[path], "weight")].numpy(), rtol=1e-4, atol=1e-7)
    assert ours.batches == 3


def test_statistics_leave_the_model_as_found_and_reach_nested_layers():
    model = residual_cnn()
    before = [w.copy() for w in model.get_weights()]
    batches = [(np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32), np.array([0, 1, 2, 0]))]
    loss = lambda y, p: keras().ops.mean(keras().losses.sparse_categorical_crossentropy(y, p, from_logits=True))  # noqa: E731
    stats = collect_statistics(model, discover(model), batches, loss, gradients=True, progress=False)
    assert stats.axes[("d1", "in")].act_count.shape == (176,) and stats.axes[("c1", "out")].grad_abs.shape == (6,)
    assert all((a == b).all() for a, b in zip(before, model.get_weights()))
    if keras().backend.backend() == "torch":
        assert all(v.value.grad is None for v in model.trainable_variables)


@pytest.fixture(scope="module")
def digits_task():
    return KerasClassificationTask(load_digits(), batch_size=64, calibration_samples=256)


@pytest.fixture(scope="module")
def trained(digits_task):
    model = mlp((64, 24, 12, 10))
    digits_task.bind(model).finetune(model, epochs=8, learning_rate=3e-3)
    return model


def test_the_backend_implements_the_seam(trained):
    backend = backend_for(trained)
    assert backend.name == "keras" and isinstance(backend, Backend)
    rows = backend.weight_rows(trained, "fc2", "out", outgoing=False)
    assert rows[0].rows.shape == (12, 24) and rows[0].input_axis == "in" and rows[0].input_columns.tolist() == list(range(24))
    reading = backend.weight_rows(trained, "fc2", "in", outgoing=True)
    assert [r.rows.shape for r in reading] == [(24, 12)]
    (Path("not-a-checkpoint")).mkdir()
    (Path("not-a-checkpoint") / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="is not a neuroprune checkpoint"):
        backend.check_checkpoint("not-a-checkpoint")


def test_a_checkpointed_run_resumes_to_the_same_model(trained, digits_task, tmp_path):
    config = PruneConfig(criterion="magnitude", ratio=0.5, steps=2, tolerance=1.0, progress=False, latency_runs=1)
    first = neuroprune.prune(trained, digits_task, config, checkpoint=tmp_path / "ck")
    resumed = neuroprune.prune(trained, digits_task, config, checkpoint=tmp_path / "ck", resume=True)
    x = digits_task.make_input(8)
    np.testing.assert_array_equal(outputs(resumed.model, x), outputs(first.model, x))
    assert resumed.plan.to_dict() == first.plan.to_dict()


@pytest.mark.parametrize("criterion", ["magnitude", "seed", "taylor", "activation_frequency"])
def test_prune_end_to_end(trained, digits_task, criterion, tmp_path):
    weights = [w.copy() for w in trained.get_weights()]
    config = PruneConfig(criterion=criterion, ratio=0.5, tolerance=1.0, progress=False, latency_runs=1)
    result = neuroprune.prune(trained, digits_task, config)
    assert [(layer["name"], layer["width_after"]) for layer in result.report["layers"]] == [("fc1", 12), ("fc2", 6)]
    assert result.plan.adapter == "keras" and result.report["after"]["params"] < result.report["before"]["params"]
    assert all((a == b).all() for a, b in zip(weights, trained.get_weights()))  # the user's model untouched
    result.save(tmp_path / "out", html=False)
    x = digits_task.make_input(8)
    np.testing.assert_array_equal(outputs(keras().saving.load_model(tmp_path / "out" / "model.keras"), x),
                                  outputs(result.model, x))
    np.testing.assert_array_equal(outputs(load(tmp_path / "out", original=trained), x), outputs(result.model, x))
    assert load_keras_model(tmp_path / "out").count_params() == result.report["after"]["params"]


def test_fine_tuning_and_rollback_in_the_loop(trained, digits_task):
    config = PruneConfig(criterion="magnitude", ratio=0.9, tolerance=0.0, max_retries=1, finetune_epochs=1,
                         progress=False, latency_runs=1)
    result = neuroprune.prune(trained, digits_task, config)
    assert any(not step["accepted"] for step in result.report["steps"])


def test_a_parameter_budget_is_reached_by_measuring_the_keras_model(trained, digits_task):
    from neuroprune.analysis.budget import Budget
    from neuroprune.workflows.prune_and_report import prune_and_report

    weights = [w.copy() for w in trained.get_weights()]
    config = PruneConfig(criterion="magnitude", tolerance=1.0, progress=False, latency_runs=1)
    result = prune_and_report(trained, digits_task, config, budget=Budget(params=0.5))
    target = result.report["target"]
    assert target["quantity"] == "params" and target["reached"], target
    assert result.model.count_params() <= 0.5 * trained.count_params() * 1.02
    assert all((a == b).all() for a, b in zip(weights, trained.get_weights()))
