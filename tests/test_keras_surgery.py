"""Keras frontend: masks equal surgery, parameter counts, plan replay, .keras files, rollback."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import functools  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("keras")

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from keras_models import (CHANNEL_NORMS, channel_norm, check_model, first_units, keras, mlp, randomise,  # noqa: E402
                          removes_something, residual_cnn)

from neuroprune.core.errors import PlanError  # noqa: E402
from neuroprune.keras.graph import discover  # noqa: E402
from neuroprune.keras.paths import layer_at  # noqa: E402
from neuroprune.keras.surgery import apply_keep  # noqa: E402


def test_write_up_mlp(tmp_path):
    model = mlp((20, 16, 8, 4))
    pruned = check_model(model, np.random.default_rng(0).random((5, 20), dtype=np.float32), tmp_path=tmp_path)
    assert [layer.units for layer in pruned.layers] == [8, 4, 4]
    assert [layer.units for layer in model.layers] == [16, 8, 4]  # the user's model is untouched


def test_residual_cnn_with_batchnorm_concat_flatten(tmp_path):
    pruned = check_model(residual_cnn(), np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32),
                         tmp_path=tmp_path)
    assert pruned.get_layer("c1").filters == 3 and pruned.get_layer("bn2").get_weights()[0].shape == (3,)
    assert pruned.get_layer("c1").get_config()["kernel_initializer"]["class_name"] == "GlorotUniform"


def test_nested_models_conv1d_and_reshape(tmp_path):
    k = keras()
    i = k.Input((6, 4))
    block = k.Model(i, k.layers.Conv1D(5, 3, padding="same", activation="relu", name="conv")(i), name="block")
    inp = k.Input((6, 4))
    x = k.layers.Reshape((3, 2, 5))(block(inp))
    x = k.layers.GlobalAveragePooling2D()(x)
    head = k.Sequential([k.layers.Dense(6, activation="tanh", name="h1"), k.layers.Dense(2, name="h2")], name="head")
    model = k.Model(inp, head(x))
    pruned = check_model(model, np.random.default_rng(0).random((3, 6, 4), dtype=np.float32), tmp_path=tmp_path)
    assert layer_at(pruned, "block/conv").filters < 5 and layer_at(pruned, "head/h1").units == 3


def test_plan_that_does_not_fit_is_refused():
    model = mlp((6, 5, 4, 3))
    with pytest.raises(PlanError, match="fc1.*5 positions"):
        apply_keep(model, {"fc1": {"out": np.array([0, 9])}})
    with pytest.raises(PlanError, match="has no layer 'nope'"):
        apply_keep(model, {"nope": {"out": np.array([0])}})
    with pytest.raises(PlanError, match="Dense has no axis 'heads'"):
        apply_keep(model, {"fc1": {"heads": np.array([0])}})


@st.composite
def functional_graphs(draw):
    """Random Functional graphs of Conv/BN/LN/Add/Concatenate/pooling/Flatten/Dense blocks."""
    k = keras()
    seed = draw(st.integers(0, 1000))
    conv2d = functools.partial(k.layers.Conv2D, kernel_initializer="zeros")
    dense = functools.partial(k.layers.Dense, kernel_initializer="zeros")
    inp = k.Input((6, 6, 2))
    x = conv2d(draw(st.integers(2, 5)), 3, padding="same", activation="relu")(inp)
    for kind in draw(st.lists(st.sampled_from(["conv", "conv_bn", "residual", "concat", "ln", "pool"]), max_size=3)):
        width = draw(st.integers(2, 5))
        if kind == "conv":
            x = conv2d(width, 1, activation="relu")(x)
        elif kind == "conv_bn":
            x = k.layers.ReLU()(k.layers.BatchNormalization()(conv2d(width, 3, padding="same")(x)))
        elif kind == "residual":
            x = k.layers.Add()([x, conv2d(x.shape[-1], 3, padding="same")(x)])
        elif kind == "concat":
            x = k.layers.Concatenate()([x, conv2d(width, 1)(x)])
        elif kind == "ln":
            x = channel_norm(draw(st.integers(0, len(CHANNEL_NORMS) - 1)))(x)
        else:
            x = k.layers.AveragePooling2D(2)(x) if x.shape[1] > 1 else x
    x = k.layers.Flatten()(x) if draw(st.booleans()) else k.layers.GlobalMaxPooling2D()(x)
    for kind in draw(st.lists(st.sampled_from(["dense", "residual", "concat"]), max_size=2)):
        width = draw(st.integers(2, 5))
        if kind == "dense":
            x = dense(width, activation="relu")(x)
        elif kind == "residual":
            x = k.layers.Add()([x, dense(x.shape[-1])(x)])
        else:
            x = k.layers.Concatenate()([x, dense(width, activation="sigmoid")(x)])
    model = randomise(k.Model(inp, dense(3)(x)), seed)
    fraction = draw(st.sampled_from([0.25, 0.5, 0.75]))
    return model, fraction


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(functional_graphs())
def test_random_functional_graphs(case):
    model, fraction = case
    if not removes_something(model, fraction):
        return
    check_model(model, np.random.default_rng(0).random((2, 6, 6, 2), dtype=np.float32),
                removal_of=lambda graph: first_units(graph, fraction))


def test_embedding_and_depthwise_convolution(tmp_path):
    k = keras()
    tokens = k.Input((5,), dtype="int32")
    e = k.layers.Embedding(11, 6, name="emb", embeddings_initializer="zeros")(tokens)
    x = k.layers.Reshape((5, 1, 6))(e)
    x = k.layers.DepthwiseConv2D((3, 1), padding="same", name="dw", depthwise_initializer="zeros")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    model = randomise(k.Model(tokens, k.layers.Dense(3, name="out")(x)))
    graph = discover(model)
    members = {f"{m.path}:{m.axis}" for m in graph.group("emb").members}
    assert {"emb:out", "dw:features", "out:in"} <= members and any(m.endswith(":features") and "reshape" in m
                                                                   for m in members)
    pruned = check_model(model, np.random.default_rng(0).integers(0, 11, (4, 5)).astype("int32"), tmp_path=tmp_path)
    assert pruned.get_layer("emb").output_dim == 3 and pruned.get_layer("dw").get_weights()[0].shape[-2] == 3
