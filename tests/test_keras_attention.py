"""Keras MultiHeadAttention heads and EinsumDense projections: masks equal surgery, plans, files, the loop."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import pytest  # noqa: E402

pytest.importorskip("keras")

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from keras_models import (CHANNEL_NORMS, channel_norm, check_model, first_units, keras, outputs,  # noqa: E402
                          randomise, removes_something, token_data, transformer_block)

import neuroprune  # noqa: E402
from neuroprune.core.config import PruneConfig  # noqa: E402
from neuroprune.core.errors import ConfigError  # noqa: E402
from neuroprune.keras.graph import discover  # noqa: E402
from neuroprune.keras.io import load  # noqa: E402
from neuroprune.keras.stats import collect_statistics  # noqa: E402
from neuroprune.keras.task import KerasClassificationTask  # noqa: E402


def value_dim(wanted, key_dim):
    """``wanted``, except on jax where Keras 3.15 cannot run a MultiHeadAttention whose value_dim differs from
    its key_dim at all (``jax.nn.dot_product_attention`` needs one head size), pruned or not."""
    return key_dim if keras().backend.backend() == "jax" else wanted


def tokens(n=3, length=6, vocab=16):
    return np.random.default_rng(1).integers(0, vocab, (n, length)).astype("float32")


def test_transformer_block_heads_ffn_and_residual_stream(tmp_path):
    model = transformer_block()
    graph = discover(model)
    assert {"mha:heads", "ffn1", "emb"} <= {g.name for g in graph.groups}
    stream = {(m.path, m.axis) for m in graph.group("emb").members}
    assert {("ln1", "features"), ("ln2", "features"), ("mha", "out")} <= stream
    assert [(m.path, m.axis) for m in graph.group("mha:heads").members] == [("mha", "heads")]
    pruned = check_model(model, tokens(), tmp_path=tmp_path)
    mha = pruned.get_layer("mha")
    assert mha.get_config()["num_heads"] == 2 and mha.get_weights()[0].shape[1:] == (2, 3)
    assert mha.get_config()["kernel_initializer"]["class_name"] == "Constant"  # the user's, not the rebuild's
    assert pruned.get_layer("ffn1").units == 6 and pruned.get_layer("ffn2").get_weights()[0].shape == (6, 4)
    # the residual stream (width 8) lost half its channels, LayerNormalizations included
    assert pruned.get_layer("emb").output_dim == 4 and pruned.get_layer("ln2").get_weights()[0].shape == (4,)


def test_attention_features_flow_through_the_residual_stream():
    k = keras()
    inp = k.Input((5, 6))
    x = k.layers.Dense(8, name="proj")(inp)
    memory = k.layers.Dense(7, name="memory")(inp)
    y = k.layers.MultiHeadAttention(3, 2, value_dim=value_dim(4, 2), name="cross")(x, memory)  # query 8, value/key 7
    x = k.layers.Add()([x, y])
    z = k.layers.MultiHeadAttention(2, 3, output_shape=5, name="narrow", use_bias=False)(x, x)
    model = randomise(k.Model(inp, k.layers.Dense(2, name="out")(k.layers.Flatten()(z))))
    graph = discover(model)
    proj = {(m.path, m.axis) for m in graph.group("proj").members}
    assert {("cross", "in"), ("cross", "out"), ("narrow", "in"), ("narrow", "value_in"), ("narrow", "key_in")} <= proj
    assert {(m.path, m.axis) for m in graph.group("memory").members} == {("memory", "out"), ("cross", "value_in"),
                                                                          ("cross", "key_in")}
    assert graph.group("narrow").size == 5  # output_shape=5: its own units
    pruned = check_model(model, np.random.default_rng(0).random((2, 5, 6), dtype=np.float32))
    assert pruned.get_layer("narrow").get_config()["output_shape"] in (3, [3], (3,))


@st.composite
def attention_graphs(draw):
    """Random blocks of Dense / EinsumDense / MultiHeadAttention / Add / LayerNormalization."""
    k = keras()
    seed = draw(st.integers(0, 1000))
    inp = k.Input((4, 5))
    x = k.layers.Dense(draw(st.integers(3, 8)), kernel_initializer="zeros")(inp)
    for kind in draw(st.lists(st.sampled_from(["attention", "residual_attention", "einsum", "ln", "cross"]),
                              min_size=1, max_size=3)):
        heads, key_dim = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        options = {"use_bias": draw(st.booleans()), "kernel_initializer": "zeros"}
        if draw(st.booleans()):
            options["value_dim"] = value_dim(draw(st.integers(1, 3)), key_dim)
        if kind == "attention":
            shape = draw(st.sampled_from([None, draw(st.integers(2, 6))]))
            x = k.layers.MultiHeadAttention(heads, key_dim, output_shape=shape, **options)(
                x, x, use_causal_mask=draw(st.booleans()))
        elif kind == "residual_attention":
            x = k.layers.Add()([x, k.layers.MultiHeadAttention(heads, key_dim, **options)(x, x)])
        elif kind == "cross":
            memory = k.layers.Dense(draw(st.integers(2, 5)), activation="relu", kernel_initializer="zeros")(inp)
            x = k.layers.MultiHeadAttention(heads, key_dim, **options)(x, memory)
        elif kind == "einsum":
            width = draw(st.integers(2, 6))
            equation, shape, bias = (("abc,cd->abd", (4, width), "d") if draw(st.booleans())
                                     else ("...a,ab->...b", width, "b"))
            x = k.layers.EinsumDense(equation, output_shape=shape, bias_axes=draw(st.sampled_from([None, bias])),
                                     activation="relu", kernel_initializer="zeros")(x)
        else:
            x = channel_norm(draw(st.integers(0, len(CHANNEL_NORMS) - 1)))(x)
    x = k.layers.Dense(draw(st.integers(2, 5)), activation="relu", kernel_initializer="zeros")(x)
    model = randomise(k.Model(inp, k.layers.Dense(3, kernel_initializer="zeros")(k.layers.Flatten()(x))), seed)
    return model, draw(st.sampled_from([0.25, 0.5, 0.75]))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=(Phase.explicit, Phase.reuse, Phase.generate))  # a failure shrinks for minutes: report it as found
@given(attention_graphs())
def test_random_attention_graphs(case):
    model, fraction = case
    if not removes_something(model, fraction):
        return
    check_model(model, np.random.default_rng(0).random((2, 4, 5), dtype=np.float32),
                removal_of=lambda graph: first_units(graph, fraction))


def test_einsum_equations_that_are_not_projections_are_frozen_with_the_reason():
    k = keras()
    inp = k.Input((4, 5))
    x = k.layers.Dense(6, name="d")(inp)
    x = k.layers.EinsumDense("abc,cde->abde", output_shape=(4, 2, 3), name="split")(x)
    x = k.layers.Dense(4, activation="relu", name="h")(k.layers.Flatten()(x))
    model = randomise(k.Model(inp, k.layers.Dense(2, name="out")(x)))
    graph = discover(model)
    assert "d" not in {g.name for g in graph.groups}
    assert any("split: EinsumDense equation 'abc,cde->abde' is not a plain projection" in reason
               for reason in graph.frozen["d"])
    task = KerasClassificationTask(_arrays((4, 5)), batch_size=8, calibration_samples=8)
    result = neuroprune.prune(model, task, PruneConfig(criterion="magnitude", ratio=0.5, progress=False,
                                                       latency_runs=1, tolerance=1.0))
    assert "not a plain projection" in str(result.report["fixed_layers"]["d"])


def _arrays(shape, classes=2, n=16):
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    return SimpleNamespace(**{f"{p}_{s}": (rng.random((n, *shape), dtype=np.float32) if p == "x" else
                                           rng.integers(0, classes, n)) for p in "xy" for s in ("train", "val", "test")})


def test_head_statistics_are_the_attention_output_per_head():
    model = transformer_block(causal=True)
    loss = lambda y, p: keras().ops.mean(keras().ops.square(p))  # noqa: E731
    stats = collect_statistics(model, discover(model), [(tokens(), None)], loss, progress=False)
    heads = stats.axes[("mha", "heads")]
    assert heads.act_count.shape == (4,) and heads.act_n == 3 * 6 * 3  # batch x tokens x value_dim
    assert np.all(heads.act_abs > 0)


def test_activation_criteria_refuse_cross_attention_by_name():
    k = keras()
    inp = k.Input((4, 5))
    y = k.layers.MultiHeadAttention(2, 2, name="cross")(k.layers.Dense(6)(inp), k.layers.Dense(3)(inp))
    model = randomise(k.Model(inp, k.layers.Dense(2)(k.layers.Flatten()(y))))
    loss = lambda y, p: keras().ops.mean(keras().ops.square(p))  # noqa: E731
    batch = [(np.ones((2, 4, 5), "float32"), np.zeros((2, 2), "float32"))]
    with pytest.raises(ConfigError, match="MultiHeadAttention 'cross': an activation criterion needs"):
        collect_statistics(model, discover(model), batch, loss, progress=False)
    # the write-up's formula reads weights and gradients there: no refusal
    stats = collect_statistics(model, discover(model), batch, loss, gradients=True, per_weight=True, progress=False)
    assert stats.axes[("cross", "heads")].grad_abs.shape == (2,)


@pytest.mark.parametrize("criterion", ["magnitude", "taylor", "seed", "activation_mean"])
def test_transformer_prune_end_to_end(criterion, tmp_path):
    task = KerasClassificationTask(token_data(), batch_size=32, calibration_samples=64)
    model = transformer_block()
    task.bind(model).finetune(model, epochs=1, learning_rate=3e-3)
    weights = [w.copy() for w in model.get_weights()]
    config = PruneConfig(criterion=criterion, ratio=0.5, tolerance=1.0, progress=False, latency_runs=1)
    result = neuroprune.prune(model, task, config)
    widths = {layer["name"]: layer["width_after"] for layer in result.report["layers"]}
    assert widths["mha:heads"] == 2 and widths["ffn1"] == 6
    assert result.model.get_layer("mha").get_config()["num_heads"] == 2
    assert result.report["after"]["params"] < result.report["before"]["params"]
    assert all((a == b).all() for a, b in zip(weights, model.get_weights()))  # the user's model untouched
    result.save(tmp_path / "out", html=False)
    x = task.make_input(4)
    np.testing.assert_array_equal(outputs(keras().saving.load_model(tmp_path / "out" / "model.keras"), x),
                                  outputs(result.model, x))
    np.testing.assert_array_equal(outputs(load(tmp_path / "out", original=model), x), outputs(result.model, x))
