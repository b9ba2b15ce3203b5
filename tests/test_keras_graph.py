"""Keras frontend: the dependency graph read from get_config()."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import pytest  # noqa: E402

pytest.importorskip("keras")

from keras_models import keras, mlp, residual_cnn  # noqa: E402

from neuroprune.core.errors import UnsupportedModelError, UnsupportedModuleError  # noqa: E402
from neuroprune.keras.graph import discover  # noqa: E402


def _members(graph):
    return {g.name: sorted(f"{m.path}:{m.axis}" for m in g.members) for g in graph.groups}


def test_sequential_mlp_groups_and_fixed_output():
    graph = discover(mlp((6, 5, 4, 3)))
    assert _members(graph) == {"fc1": ["fc1:out", "fc2:in"], "fc2": ["fc2:out", "out:in"]}
    assert graph.frozen == {"out": ["model output", "out: its softmax activation mixes the units"]}
    assert graph.axis_sizes["fc2"] == {"in": 5, "out": 4}
    assert graph.module_types["fc1"] == "Dense"


def test_residual_add_couples_channels_and_flatten_repeats_them():
    graph = discover(residual_cnn())
    members = _members(graph)
    assert members["c1"] == ["bn1:features", "bn2:features", "c1:out", "c2:in", "c2:out", "c3:in", "d1:in"]
    c1 = graph.group("c1")
    d1_in = next(m for m in c1.members if m.path == "d1" and m.axis == "in")
    # (4, 4, 11) flattened: the first 6 of every 11 positions are c1's channels, the other 5 are c3's
    assert d1_in.unit_of[:11].tolist() == [0, 1, 2, 3, 4, 5, -1, -1, -1, -1, -1]
    assert (d1_in.unit_of >= 0).sum() == 16 * 6
    assert graph.group("c3").size == 5 and graph.group("d1").size == 7


def test_nested_and_shared_models():
    k = keras()
    i = k.Input((4,))
    inner = k.Model(i, k.layers.Dense(3, name="a")(i), name="inner")
    x, y = k.Input((4,), name="x"), k.Input((4,), name="y")
    seq = k.Sequential([k.layers.Dense(5, name="s1"), k.layers.Dense(2, name="s2")], name="seq")
    model = k.Model([x, y], seq(k.layers.Concatenate()([inner(x), inner(y)])))
    members = _members(discover(model))
    seq_input = [m for m in members["inner/a"] if m.startswith("seq/input_layer")]  # its batch_shape follows
    assert len(seq_input) == 1 and seq_input[0].endswith(":features")
    assert members == {"inner/a": sorted(["inner/a:out", "seq/s1:in", *seq_input]), "seq/s1": ["seq/s1:out", "seq/s2:in"]}
    s1_in = next(m for m in discover(model).group("inner/a").members if m.path == "seq/s1")
    assert s1_in.unit_of.tolist() == [0, 1, 2, 0, 1, 2]


def test_unsupported_layers_and_softmax_are_fixed_with_the_reason():
    k = keras()
    inp = k.Input((6,))
    a = k.layers.Dense(4, name="a")(inp)
    b = k.layers.UnitNormalization(name="unit")(k.layers.Dense(4, name="b")(inp))
    c = k.layers.Dense(4, activation="softmax", name="c")(inp)
    d = k.ops.sort(k.layers.Dense(4, name="d")(inp))
    out = k.layers.Dense(2, name="out")(k.layers.Concatenate()([a, b, c, d]))
    graph = discover(k.Model(inp, out))
    assert [g.name for g in graph.groups] == ["a"]
    assert "layer type UnitNormalization is not supported" in graph.frozen["b"][0]
    assert "softmax activation mixes the units" in graph.frozen["c"][0]
    assert "keras.ops node 'Sort' is not followed" in graph.frozen["d"][0]


def test_ignore_leaves_a_layer_alone_and_unknown_names_are_refused():
    model = mlp((6, 5, 4, 3))
    graph = discover(model, ignore=["fc1"])
    assert [g.name for g in graph.groups] == ["fc2"] and "fc1" not in graph.axis_sizes
    with pytest.raises(UnsupportedModuleError, match="ignore names layers the model does not have: nope"):
        discover(model, ignore=["nope"])


def test_subclassed_models_get_a_clear_error():
    k = keras()

    class Net(k.Model):
        def __init__(self):
            super().__init__()
            self.dense = k.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(UnsupportedModelError, match="subclassed Keras model.*Functional model"):
        discover(Net())
    with pytest.raises(UnsupportedModelError, match="expected a keras.Model"):
        discover(object())
