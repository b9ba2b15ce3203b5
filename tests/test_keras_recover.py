"""Keras recovery: least-squares reconstruction of Dense layers and convolutions (against closed-form lstsq, no
reconstruction, and in the loop) and distillation."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import pytest  # noqa: E402

pytest.importorskip("keras")

import numpy as np  # noqa: E402
from keras_models import keras, mlp, outputs, randomise  # noqa: E402

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
    kernel = kernel.reshape(-1, kernel.shape[-1])  # a convolution's filters as columns
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


def test_dense_and_ungrouped_convolutions_are_refitted():
    layers = keras().layers
    assert reconstructable(layers.Dense(3)) and reconstructable(layers.Conv2D(4, 1))
    assert reconstructable(layers.Conv2D(4, 3)) and reconstructable(layers.Conv2D(4, 1, strides=2))
    assert reconstructable(layers.Conv1D(4, 5, padding="causal")) and reconstructable(layers.Conv3D(4, 3, dilation_rate=2))
    assert not reconstructable(layers.Conv2D(4, 3, groups=2)) and not reconstructable(layers.DepthwiseConv2D(3))
    assert not reconstructable(layers.SeparableConv2D(4, 3)) and not reconstructable(layers.LSTM(3))


def _identity_patches(x, kernel_size, strides, padding):
    """Patches of ``x`` computed by Keras itself: a convolution whose kernel picks one (position, channel) per output."""
    channels = x.shape[-1]
    size = int(np.prod(kernel_size)) * channels
    picker = np.eye(size, dtype="float32").reshape(*kernel_size, channels, size)
    found = keras().ops.convert_to_numpy(keras().ops.conv(x, picker, strides=strides, padding=padding))
    return found.reshape(-1, *kernel_size, channels).astype(np.float64)


@pytest.mark.parametrize("kind", ["Conv1D", "Conv2D"])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv_reconstruction_equals_lstsq(kind, padding):
    """A kernel-3, stride-2 convolution reading a pruned convolution: its new kernel is the lstsq solution."""
    k = keras()
    spatial = (15,) if kind == "Conv1D" else (9, 9)
    conv = getattr(k.layers, kind)
    model = randomise(k.Sequential([k.Input((*spatial, 3)), conv(6, 3, padding="same", activation="relu", name="c1"),
                                    conv(4, 3, strides=2, padding=padding, name="c2")]), seed=5)
    before, x = clone(model), np.random.default_rng(0).normal(size=(96, *spatial, 3)).astype("float32")
    keep = discover(model).keep_indices({"c1": [1, 4]})
    apply_masks(model, keep)
    assert reconstruct(model, before, keep, [(x[:64], None), (x[64:], None)], ridge=0.0, progress=False) == ["c2"]
    hidden = outputs(k.Model(before.inputs, before.get_layer("c1").output), x)
    kept = np.asarray(keep["c2"]["in"])
    patches = _identity_patches(hidden, (3,) * len(spatial), 2, padding)[..., kept].reshape(-1, 3 ** len(spatial) * 4)
    target = outputs(before, x).reshape(-1, 4)
    solution = np.linalg.lstsq(np.concatenate([patches, np.ones((len(patches), 1))], axis=1), target, rcond=None)[0]
    new_kernel, new_bias = model.get_layer("c2").get_weights()
    np.testing.assert_allclose(new_kernel[..., kept, :].reshape(-1, 4), solution[:-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_bias, solution[-1], rtol=1e-4, atol=1e-5)
    assert not new_kernel[..., [1, 4], :].any()  # the removed inputs stay masked


@pytest.fixture(scope="module")
def image_task():
    return KerasClassificationTask(load_digits(layout="image"), batch_size=64, calibration_samples=512)


@pytest.fixture(scope="module")
def trained_cnn(image_task):
    k = keras()
    model = randomise(k.Sequential([k.Input((8, 8, 1)), k.layers.Conv2D(12, 3, padding="same", activation="relu", name="c1"),
                                    k.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="c2"),
                                    k.layers.Flatten(), k.layers.Dense(10, name="out")], name="cnn"), seed=2)
    image_task.bind(model).finetune(model, epochs=4, learning_rate=3e-3)
    return model


def test_conv_reconstruction_lowers_the_error_on_calibration_data(trained_cnn, image_task):
    batches = image_task.calibration_batches()
    x = np.concatenate([batch[0] for batch in batches])
    reference = outputs(trained_cnn, x)
    keep = _keep_lowest(trained_cnn, "c1", 0.5)
    errors = {}
    for refit in (False, True):
        model = clone(trained_cnn)
        apply_masks(model, keep)
        if refit:
            assert reconstruct(model, trained_cnn, keep, batches, progress=False) == ["c2"]
        pruned = apply_keep(model, keep)
        np.testing.assert_allclose(outputs(pruned, x), outputs(model, x), rtol=1e-4, atol=1e-4)  # masks == surgery
        errors[refit] = float(np.abs(outputs(pruned, x) - reference).mean())
    assert errors[True] < 0.7 * errors[False], errors


def test_conv_reconstruction_in_the_loop_rolls_back_bit_exact(trained_cnn, image_task, monkeypatch):
    """Every attempt is rolled back (no drop allowed): the result is the model as it was, bit for bit."""
    import neuroprune.keras.backend as keras_backend

    refitted = []
    original = keras_backend.reconstruct
    monkeypatch.setattr(keras_backend, "reconstruct", lambda *a, **kw: refitted.append(original(*a, **kw)))
    weights = [w.copy() for w in trained_cnn.get_weights()]
    config = PruneConfig(criterion="magnitude", ratio=0.9, tolerance=0.0, max_retries=0, reconstruct=True,
                         progress=False, latency_runs=1)
    result = neuroprune.prune(trained_cnn, image_task, config)
    assert refitted and "c2" in refitted[0] and not any(step["accepted"] for step in result.report["steps"])
    assert all((a == b).all() for a, b in zip(weights, result.model.get_weights()))  # rolled back bit for bit
    assert all((a == b).all() for a, b in zip(weights, trained_cnn.get_weights()))  # the user's model untouched
    accepted = neuroprune.prune(trained_cnn, image_task, PruneConfig(criterion="magnitude", ratio=0.5, tolerance=1.0,
                                                                     reconstruct=True, progress=False, latency_runs=1))
    assert accepted.model.count_params() < trained_cnn.count_params()
    assert all((a == b).all() for a, b in zip(weights, trained_cnn.get_weights()))


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
