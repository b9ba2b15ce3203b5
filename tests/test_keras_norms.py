"""Normalisations over all channels in Keras (LayerNormalization, RMSNormalization): the channels
they normalise are pruned, and while masked they normalise only the kept ones (exactly the pruned
layer)."""

import numpy as np
import pytest

pytest.importorskip("keras")

import neuroprune  # noqa: E402
from keras_models import (CHANNEL_NORMS, channel_norm, check_model, keras, outputs, randomise,  # noqa: E402
                          token_data, transformer_block)
from neuroprune.core.config import PruneConfig  # noqa: E402
from neuroprune.keras.graph import discover  # noqa: E402
from neuroprune.keras.masks import apply_masks  # noqa: E402
from neuroprune.keras.narrowed_norm import narrow, widen  # noqa: E402
from neuroprune.keras.task import KerasClassificationTask  # noqa: E402


def pre_norm_block(choice=0, width=8, ffn=12, seed=0):
    """A pre-norm residual MLP block (x + W2 relu(W1 norm(x))) twice, then a norm and a classifier: the
    LLaMA / ViT layout, where the normalised stream is the residual stream itself."""
    k = keras()
    inp = k.Input((5, 6))
    x = k.layers.Dense(width, name="embed", kernel_initializer="zeros")(inp)
    for i in range(2):
        h = channel_norm(choice, name=f"norm{i}")(x)
        h = k.layers.Dense(ffn, activation="relu", name=f"up{i}", kernel_initializer="zeros")(h)
        h = k.layers.Dense(width, name=f"down{i}", kernel_initializer="zeros")(h)
        x = k.layers.Add(name=f"residual{i}")([x, h])
    x = k.layers.GlobalAveragePooling1D()(channel_norm(choice, name="final_norm")(x))
    return randomise(k.Model(inp, k.layers.Dense(3, name="head", kernel_initializer="zeros")(x)), seed)


def _x(shape=(4, 5, 6), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("choice", range(len(CHANNEL_NORMS)), ids=CHANNEL_NORMS)
def test_a_narrowed_norm_is_the_smaller_norm(choice):
    x, kept = _x(), np.array([0, 2, 3, 5])
    layer, small = channel_norm(choice), channel_norm(choice)
    layer(x)
    small(x[..., kept])
    weights = [np.random.default_rng(1).normal(size=w.shape).astype(np.float32) for w in layer.get_weights()]
    layer.set_weights(weights)
    small.set_weights([w[kept] for w in weights])
    before = keras().ops.convert_to_numpy(layer(x))
    assert narrow(layer, kept, 6)
    narrowed = keras().ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(narrowed[..., kept], keras().ops.convert_to_numpy(small(x[..., kept])), rtol=1e-6,
                               atol=1e-6)
    assert (narrowed[..., [1, 4]] == 0).all()
    widen(layer)
    np.testing.assert_array_equal(keras().ops.convert_to_numpy(layer(x)), before)
    assert not narrow(layer, np.arange(6), 6)  # nothing removed: left alone


@pytest.mark.parametrize("choice", range(len(CHANNEL_NORMS)), ids=CHANNEL_NORMS)
def test_pre_norm_residual_stream_is_pruned_masked_equals_pruned(choice, tmp_path):
    model = pre_norm_block(choice)
    graph = discover(model)
    stream = graph.group("embed")
    assert {("norm0", "features"), ("norm1", "features"), ("final_norm", "features"), ("down1", "out")} <= {
        (m.path, m.axis) for m in stream.members}
    pruned = check_model(model, _x(), tmp_path=tmp_path)
    assert [w.shape for w in pruned.get_layer("final_norm").get_weights()] in ([], [(4,)], [(4,), (4,)])
    assert pruned.get_layer("embed").units == 4 and pruned.get_layer("up1").kernel.shape == (4, 6)


def test_a_compiled_predict_function_sees_the_narrowed_norm():
    model = pre_norm_block()
    model.compile(loss="mse")
    x = _x()
    reference = model.predict(x, verbose=0)  # traces (and on jax compiles) predict_function
    graph = discover(model)
    keep = graph.keep_indices({"embed": [0, 1, 2, 3]})
    handle = apply_masks(model, keep)
    np.testing.assert_allclose(model.predict(x, verbose=0), outputs(model, x), rtol=1e-5, atol=1e-5)
    assert not np.allclose(model.predict(x, verbose=0), reference)
    handle.remove()
    np.testing.assert_array_equal(model.predict(x, verbose=0), reference)
    assert "call" not in vars(model.get_layer("norm0"))


def test_norm_over_other_axes_is_frozen_with_the_reason():
    k = keras()
    inp = k.Input((5, 6))
    x = k.layers.Dense(6, name="d")(inp)
    x = k.layers.LayerNormalization(axis=[1, 2], name="ln")(x)
    model = k.Model(inp, k.layers.Dense(2, name="out")(k.layers.Flatten()(x)))
    graph = discover(model)
    assert "d" not in {g.name for g in graph.groups}
    assert any("ln: normalisation over an axis other than the channels" in r for r in graph.frozen["d"])


def test_prune_a_transformer_block_removes_residual_channels_and_keeps_the_users_model(tmp_path):
    model = transformer_block()
    original = [w.copy() for w in model.get_weights()]
    data = token_data()
    task = KerasClassificationTask(data, batch_size=32, calibration_samples=64)
    config = PruneConfig(criterion="magnitude", ratio=0.5, steps=1, tolerance=1.0, progress=False, latency_runs=1)
    result = neuroprune.prune(model, task, config)
    assert result.model.get_layer("emb").output_dim < 8
    assert result.model.get_layer("ln1").get_weights()[0].shape == (result.model.get_layer("emb").output_dim,)
    assert all((a == b).all() for a, b in zip(original, model.get_weights()))
    assert "call" not in vars(model.get_layer("ln1"))
    result.save(tmp_path / "out")
    loaded = keras().saving.load_model(tmp_path / "out" / "model.keras")
    x = data.x_test[:8]
    np.testing.assert_array_equal(outputs(loaded, x), outputs(result.model, x))
