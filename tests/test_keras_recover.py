"""Keras recovery: least-squares reconstruction (against closed-form lstsq and no reconstruction) and distillation."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import pytest  # noqa: E402

pytest.importorskip("keras")

import numpy as np  # noqa: E402
from keras_models import keras, mlp, outputs  # noqa: E402

import neuroprune  # noqa: E402
from neuroprune.core.config import PruneConfig  # noqa: E402
from neuroprune.core.errors import ConfigError  # noqa: E402
from neuroprune.core.least_squares import NormalEquations  # noqa: E402
from neuroprune.data import load_digits  # noqa: E402
from neuroprune.keras.distill import blended_loss, distill  # noqa: E402
from neuroprune.keras.graph import discover  # noqa: E402
from neuroprune.keras.masks import apply_masks  # noqa: E402
from neuroprune.keras.reconstruct import reconstruct, reconstructable  # noqa: E402
from neuroprune.keras.surgery import apply_keep, clone  # noqa: E402
from neuroprune.keras.task import KerasClassificationTask  # noqa: E402


@pytest.fixture(scope="module")
def digits_task():
    return KerasClassificationTask(load_digits(), batch_size=64, calibration_samples=512)


@pytest.fixture(scope="module")
def trained(digits_task):
    model = mlp((64, 32, 16, 10))
    digits_task.bind(model).finetune(model, epochs=8, learning_rate=3e-3)
    return model


def _keep_lowest(model, path, fraction):
    """Keep the units of ``path`` with the largest kernel column norms (magnitude), as the loop would."""
    graph = discover(model)
    kernel = model.get_layer(path).get_weights()[0]
    order = np.argsort(-np.linalg.norm(kernel, axis=0))
    kept = np.sort(order[: int(round(kernel.shape[1] * (1 - fraction)))])
    return graph.keep_indices({path: np.setdiff1d(np.arange(kernel.shape[1]), kept).tolist()})


def test_normal_equations_equal_closed_form_lstsq():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 5)), rng.normal(size=(300, 2))
    equations = NormalEquations(bias=True)
    for start in range(0, 300, 64):
        equations.add(x[start:start + 64], y[start:start + 64])
    weight, bias = equations.solve(ridge=0.0)
    reference = np.linalg.lstsq(np.concatenate([x, np.ones((300, 1))], axis=1), y, rcond=None)[0]
    np.testing.assert_allclose(weight, reference[:5], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(bias, reference[5], rtol=1e-10, atol=1e-10)


def test_reconstruction_equals_lstsq_on_a_tiny_model():
    """Removing one hidden unit of a 3-6-2 MLP: the consumer's new weights are the lstsq solution."""
    model = mlp((3, 6, 2), seed=3)
    before, x = clone(model), np.random.default_rng(0).normal(size=(128, 3)).astype("float32")
    keep = discover(model).keep_indices({"fc1": [2]})
    apply_masks(model, keep)
    assert reconstruct(model, before, keep, [(x[:64], None), (x[64:], None)], ridge=0.0, progress=False) == ["out"]
    hidden = outputs(keras().Model(before.inputs, before.get_layer("fc1").output), x).astype(np.float64)
    kernel, bias = (w.astype(np.float64) for w in before.get_layer("out").get_weights())
    kept = np.asarray(keep["out"]["in"])
    design = np.concatenate([hidden[:, kept], np.ones((128, 1))], axis=1)
    solution = np.linalg.lstsq(design, hidden @ kernel + bias, rcond=None)[0]
    new_kernel, new_bias = model.get_layer("out").get_weights()
    np.testing.assert_allclose(new_kernel[kept], solution[:-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_bias, solution[-1], rtol=1e-4, atol=1e-5)
    assert not new_kernel[2].any()  # the removed input stays masked


def test_reconstruction_lowers_the_output_error(trained, digits_task):
    x = digits_task.splits["test"][0]
    reference = outputs(trained, x)
    keep = _keep_lowest(trained, "fc1", 0.5)
    errors = {}
    for refit in (False, True):
        model = clone(trained)
        apply_masks(model, keep)
        if refit:
            assert reconstruct(model, trained, keep, digits_task.calibration_batches(), progress=False) == ["fc2"]
        pruned = apply_keep(model, keep)
        np.testing.assert_allclose(outputs(pruned, x), outputs(model, x), rtol=1e-4, atol=1e-5)  # masks == surgery
        errors[refit] = float(np.abs(outputs(pruned, x) - reference).mean())
    assert errors[True] < 0.7 * errors[False], errors


def test_reconstruction_in_the_loop_rolls_back_bit_exact(trained, digits_task):
    weights = [w.copy() for w in trained.get_weights()]
    config = PruneConfig(criterion="magnitude", ratio=0.5, reconstruct=True, progress=False, latency_runs=1)
    result = neuroprune.prune(trained, digits_task, config)
    assert result.model.count_params() < trained.count_params()
    assert result.report["after"]["accuracy"] > 0.5
    assert all((a == b).all() for a, b in zip(weights, trained.get_weights()))  # the user's model untouched


def test_only_dense_and_pointwise_convolutions_are_refitted():
    layers = keras().layers
    assert reconstructable(layers.Dense(3)) and reconstructable(layers.Conv2D(4, 1))
    assert not reconstructable(layers.Conv2D(4, 3)) and not reconstructable(layers.Conv2D(4, 1, strides=2))
    assert not reconstructable(layers.LSTM(3))


def test_blended_loss_matches_the_formula():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    labels = np.array([0, 2, 1, 1])
    weight, temperature = 0.3, 2.0

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    hard = -log_softmax(student)[np.arange(4), labels]
    p = np.exp(log_softmax(teacher / temperature))
    soft = (p * (np.log(p) - log_softmax(student / temperature))).sum(axis=1) * temperature**2
    y_true = np.concatenate([labels[:, None], teacher], axis=1).astype("float32")
    ours = keras().ops.convert_to_numpy(blended_loss(weight, temperature, True)(y_true, student.astype("float32")))
    np.testing.assert_allclose(ours, (1 - weight) * hard + weight * soft, rtol=1e-5)
    probabilities = np.exp(log_softmax(student)).astype("float32")  # a softmax output gives the same loss
    np.testing.assert_allclose(keras().ops.convert_to_numpy(blended_loss(weight, temperature, False)(y_true, probabilities)),
                               ours, rtol=1e-4)


def test_distillation_moves_the_student_towards_the_teacher(trained, digits_task):
    x = digits_task.splits["test"][0]
    keep = _keep_lowest(trained, "fc1", 0.75)
    student = apply_keep(clone(trained), keep)
    gap = lambda m: float(np.abs(outputs(m, x) - outputs(trained, x)).mean())  # noqa: E731
    before = gap(student)
    history = distill(student, trained, digits_task, epochs=3, weight=1.0, temperature=2.0)
    assert len(history) == 3 and history[-1] < history[0] and gap(student) < before
    with pytest.raises(ConfigError, match="distill_weight"):
        distill(student, trained, digits_task, epochs=1, weight=1.5)


def test_distillation_in_the_loop(trained, digits_task):
    config = PruneConfig(criterion="magnitude", ratio=0.5, finetune_epochs=1, distill_weight=0.5, progress=False,
                         latency_runs=1)
    result = neuroprune.prune(trained, digits_task, config)
    assert result.model.count_params() < trained.count_params()
    assert result.report["after"]["accuracy"] > 0.8
