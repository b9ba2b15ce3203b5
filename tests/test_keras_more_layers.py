"""Keras Bidirectional recurrent layers, separable convolutions and depthwise convolutions with a depth
multiplier: pruned physically, masks equal surgery, parameter drop equals the plan's, plan replay,
.keras files, rollback, every criterion."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import functools  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("keras")

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from keras_models import first_units, keras, randomise, removes_something  # noqa: E402
from keras_models import check_model as shared_check_model  # noqa: E402

from neuroprune.core.backend import backend_for  # noqa: E402
from neuroprune.keras.graph import discover  # noqa: E402
from neuroprune.keras.recurrent import GATES  # noqa: E402


def _recurrent(config: dict, units: int, fan_in: int, class_name: str) -> int:
    bias_rows = 2 if class_name == "GRU" and config.get("reset_after", True) else 1
    return GATES[class_name] * units * (fan_in + units + (bias_rows if config["use_bias"] else 0))


def _bidirectional_parameters(layer, keep):
    fan_in = len(keep["in"]) if "in" in keep else layer.forward_layer.get_weights()[0].shape[0]
    total = 0
    for direction in ("forward", "backward"):
        inner = getattr(layer, f"{direction}_layer")
        units = len(keep["out"]) if "out" in keep else inner.units
        total += _recurrent(inner.get_config(), units, fan_in, type(inner).__name__)
    return total


def _separable_parameters(layer, keep):
    depthwise, pointwise = layer.depthwise_kernel.shape, layer.pointwise_kernel.shape
    inputs = len(keep["in"]) if "in" in keep else depthwise[-2]
    filters = len(keep["out"]) if "out" in keep else pointwise[-1]
    multiplier, positions = depthwise[-1], int(np.prod(depthwise[:-2]))
    return positions * inputs * multiplier + inputs * multiplier * filters + (filters if layer.use_bias else 0)


def _depthwise_parameters(layer, keep):
    kernel = layer.kernel.shape
    channels = len(keep["features"]) if "features" in keep else kernel[-2]
    return int(np.prod(kernel[:-2])) * channels * kernel[-1] + (channels * kernel[-1] if layer.use_bias else 0)


FORMULAS = {"Bidirectional": _bidirectional_parameters, "SeparableConv1D": _separable_parameters,
            "SeparableConv2D": _separable_parameters, "DepthwiseConv1D": _depthwise_parameters,
            "DepthwiseConv2D": _depthwise_parameters}
#: masked == pruned, rollback, parameters == the plan's (counted by formula), plan replay, .keras reload
check_model = functools.partial(shared_check_model, formulas=FORMULAS)


def _data(*shape):
    return np.random.default_rng(0).normal(size=shape).astype("float32")


def _members(model):
    return {g.name: [m.path + ":" + m.axis for m in g.members] for g in discover(model).groups}


RECURRENT = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN"}


def _cell(kind, units, **kwargs):
    return getattr(keras().layers, RECURRENT[kind])(units, **kwargs)


@pytest.mark.parametrize(("merge", "kind"), [("concat", "lstm"), ("sum", "gru"), ("ave", "rnn"), ("mul", "lstm"),
                                             (None, "gru")])
def test_bidirectional_merge_modes(tmp_path, merge, kind):
    k = keras()
    inp = k.Input((5, 4))
    x = k.layers.Dense(6, activation="relu", name="d0")(inp)
    y = k.layers.Bidirectional(_cell(kind, 4, return_sequences=True), merge_mode=merge, name="bi")(x)
    y = k.layers.Concatenate(name="cat")(y) if merge is None else y
    y = k.layers.Bidirectional(_cell(kind, 3), merge_mode="concat" if merge is None else merge, name="bi2")(y)
    model = randomise(k.Model(inp, k.layers.Dense(2, name="out")(y)))
    members = _members(model)
    assert members == {"d0": ["d0:out", "bi:in"], "bi": ["bi:out", "bi2:in"], "bi2": ["bi2:out", "out:in"]}
    unit_of = discover(model).groups[1].members[1].unit_of.tolist()
    assert unit_of == ([0, 1, 2, 3] * 2 if merge in ("concat", None) else [0, 1, 2, 3])  # forward j, backward j
    pruned = check_model(model, _data(3, 5, 4), tmp_path=tmp_path)
    layer = pruned.get_layer("bi")
    assert (layer.forward_layer.units, layer.backward_layer.units) == (2, 2)
    assert layer.forward_layer.get_weights()[0].shape[0] == 3  # d0 lost 3 of its 6 units


def test_bidirectional_states_mixed_directions_and_sequential(tmp_path):
    """return_state (forward h, c then backward h, c), an explicit GRU backward layer under an LSTM,
    and a Sequential model."""
    k = keras()
    inp = k.Input((6, 3))
    x = k.layers.Conv1D(6, 2, padding="same", name="conv")(inp)
    out, fh, fc, bh, bc = k.layers.Bidirectional(k.layers.LSTM(5, return_sequences=True, return_state=True),
                                                 name="bi")(x)
    mixed = k.layers.Bidirectional(k.layers.LSTM(4), backward_layer=k.layers.GRU(4, go_backwards=True),
                                   name="mixed")(out)
    merged = k.layers.Concatenate()([fh, fc, bh, bc, mixed])
    model = randomise(k.Model(inp, k.layers.Dense(2, name="out")(merged)))
    members = _members(model)
    assert members["bi"] == ["bi:out", "mixed:in", "out:in"] and members["mixed"] == ["mixed:out", "out:in"]
    pruned = check_model(model, _data(2, 6, 3), tmp_path=tmp_path)
    layer = pruned.get_layer("mixed")
    assert (layer.forward_layer.units, layer.backward_layer.units) == (2, 2)
    # the GRU (reset_after) reads 2 x 3 units of bi
    assert [tuple(w.shape) for w in layer.backward_layer.weights] == [(6, 6), (2, 6), (2, 6)]

    sequential = randomise(k.Sequential([k.Input((5, 4)),
                                         k.layers.Bidirectional(k.layers.GRU(4, return_sequences=True)),
                                         k.layers.Bidirectional(k.layers.SimpleRNN(3), merge_mode="sum"),
                                         k.layers.Dense(2)]))
    check_model(sequential, _data(3, 5, 4), tmp_path=tmp_path)


def test_bidirectional_weight_rows_match_a_plain_lstm():
    """Each direction's rows are those of the same LSTM on its own: (units, gates * inputs), gate by gate."""
    k = keras()
    inp = k.Input((5, 4))
    model = randomise(k.Model(inp, k.layers.Dense(2)(k.layers.Bidirectional(k.layers.LSTM(3), name="bi")(inp))))
    plain = k.Sequential([k.Input((5, 4)), k.layers.LSTM(3, name="lstm")])
    backend = backend_for(model)
    layer = model.get_layer("bi")
    for direction in ("forward", "backward"):
        plain.get_layer("lstm").set_weights(getattr(layer, f"{direction}_layer").get_weights())
        ours = [r for r in backend.weight_rows(model, "bi", "out", outgoing=True) if r.name.startswith(direction)]
        theirs = backend.weight_rows(plain, "lstm", "out", outgoing=True)
        assert [r.name for r in ours] == [f"{direction}/{r.name}" for r in theirs]
        for mine, reference in zip(ours, theirs):
            np.testing.assert_array_equal(mine.rows, reference.rows)
            assert np.array_equal(mine.input_columns, reference.input_columns) or reference.input_axis is None
    assert [r.name for r in backend.weight_rows(model, "bi", "in", outgoing=True)] == ["forward/kernel",
                                                                                      "backward/kernel"]


def test_frozen_bidirectional_cases_say_why():
    k = keras()
    inp = k.Input((5, 3))
    state = [k.Input((4,)) for _ in range(2)]
    seeded = k.layers.Bidirectional(k.layers.GRU(4), name="seeded")(k.layers.Dense(5, name="d_seeded")(inp),
                                                                      initial_state=state)
    stateful_in = k.Input((5, 3), batch_size=2)
    stateful = k.layers.Bidirectional(k.layers.LSTM(4, stateful=True), name="stateful")(stateful_in)
    cell = k.layers.Bidirectional(k.layers.RNN(k.layers.SimpleRNNCell(4)), name="cell")(
        k.layers.Dense(5, name="d_cell")(inp))
    widths = k.layers.Bidirectional(k.layers.LSTM(4, return_sequences=True), name="widths",
                                    backward_layer=k.layers.LSTM(3, go_backwards=True, return_sequences=True))(inp)
    model = k.Model([inp, *state, stateful_in], [k.layers.Dense(2)(seeded), k.layers.Dense(2)(stateful),
                                                  k.layers.Dense(2)(cell), k.layers.Dense(2)(widths)])
    graph = discover(model)
    reasons = " ".join(r for why in graph.frozen.values() for r in why)
    assert "initial states" in reasons and "stateful" in reasons and "Bidirectional of RNN is not supported" in reasons
    assert "forward and backward layers differ in width" in reasons
    prunable = {g.name for g in graph.groups}
    assert "d_seeded" in prunable and "d_cell" not in prunable
    assert not prunable & {"seeded", "stateful", "cell", "widths"}


@pytest.mark.parametrize(("dims", "multiplier"), [(1, 1), (1, 2), (2, 2)])
def test_separable_convolutions(tmp_path, dims, multiplier):
    k = keras()
    separable = k.layers.SeparableConv1D if dims == 1 else k.layers.SeparableConv2D
    shape = (9, 4) if dims == 1 else (9, 9, 4)
    inp = k.Input(shape)
    x = k.layers.Conv1D(6, 1, name="c0")(inp) if dims == 1 else k.layers.Conv2D(6, 1, name="c0")(inp)
    x = separable(8, 3, padding="same", depth_multiplier=multiplier, activation="relu", name="s1")(x)
    y = separable(8, 3, padding="same", depth_multiplier=multiplier, name="s2")(x)
    x = k.layers.Add()([x, y])
    x = separable(5, 2, strides=2, padding="valid", depth_multiplier=multiplier, use_bias=False, name="s3")(x)
    model = randomise(k.Model(inp, k.layers.Dense(3, name="out")(k.layers.Flatten()(x))))
    members = _members(model)
    assert members["c0"] == ["c0:out", "s1:in"]
    assert members["s1"] == ["s1:out", "s2:in", "s2:out", "s3:in"]
    pruned = check_model(model, _data(2, *shape), tmp_path=tmp_path)
    assert pruned.get_layer("s1").filters == 4 and pruned.get_layer("s1").depthwise_kernel.shape[-2] == 3
    assert pruned.get_layer("s3").pointwise_kernel.shape[-2] == 4 * multiplier

    if dims == 2:
        return
    sequential = randomise(k.Sequential([k.Input(shape), separable(6, 3, depth_multiplier=multiplier),
                                         separable(4, 3, depth_multiplier=multiplier, padding="same"),
                                         k.layers.Flatten(), k.layers.Dense(2)]))
    check_model(sequential, _data(2, *shape))


def test_separable_weight_rows():
    """An output's rows are its pointwise column; columns map back to input channels c * dm + m."""
    k = keras()
    model = randomise(k.Sequential([k.Input((6, 6, 3)), k.layers.SeparableConv2D(5, 3, depth_multiplier=2, name="s")]))
    rows = backend_for(model).weight_rows(model, "s", "out")
    pointwise = keras().ops.convert_to_numpy(model.get_layer("s").pointwise_kernel)
    assert [r.name for r in rows] == ["pointwise_kernel"] and rows[0].input_axis == "in"
    np.testing.assert_array_equal(rows[0].rows, np.asarray(pointwise).reshape(6, 5).T)
    assert rows[0].input_columns.tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize(("dims", "multiplier"), [(1, 1), (1, 3), (2, 2)])
def test_depthwise_convolutions_with_a_depth_multiplier(tmp_path, dims, multiplier):
    k = keras()
    depthwise = k.layers.DepthwiseConv1D if dims == 1 else k.layers.DepthwiseConv2D
    conv = k.layers.Conv1D if dims == 1 else k.layers.Conv2D
    shape = (8, 3) if dims == 1 else (8, 8, 3)
    inp = k.Input(shape)
    x = conv(6, 1, activation="relu", name="c0")(inp)
    d = depthwise(3, depth_multiplier=multiplier, padding="same", name="dw")(x)
    d = k.layers.BatchNormalization(name="bn")(d)
    e = depthwise(3, depth_multiplier=1, strides=2, padding="valid", name="dw1")(d)
    y = conv(6 * multiplier, 1, name="c1")(d)
    x = k.layers.Add()([d, y])
    pool = k.layers.GlobalAveragePooling1D() if dims == 1 else k.layers.GlobalAveragePooling2D()
    x = k.layers.Concatenate()([pool(x), k.layers.Flatten()(e)])
    model = randomise(k.Model(inp, k.layers.Dense(3, name="out")(x)))
    members = _members(model)
    assert sorted(members["c0"]) == ["bn:features", "c0:out", "c1:in", "c1:out", "dw1:features", "dw:features",
                                     "out:in"]
    assert discover(model).groups[0].size == 6  # the dm copies of a channel are one unit
    pruned = check_model(model, _data(2, *shape), tmp_path=tmp_path)
    assert pruned.get_layer("dw").kernel.shape[-2:] == (3, multiplier)
    assert pruned.get_layer("c1").filters == 3 * multiplier


def test_frozen_depthwise_cases_say_why():
    k = keras()
    inp = k.Input((8, 3))
    x = k.layers.Conv1D(4, 1, name="c_soft")(inp)
    x = k.layers.DepthwiseConv1D(3, depth_multiplier=2, activation="softmax", name="dw_soft")(x)
    model = k.Model(inp, k.layers.Dense(2)(k.layers.Flatten()(x)))
    graph = discover(model)
    assert "c_soft" in graph.frozen and "softmax activation mixes the channels" in " ".join(graph.frozen["c_soft"])


@st.composite
def layer_graphs(draw):
    """Random Functional graphs of Conv1D / SeparableConv1D / DepthwiseConv1D / Bidirectional / Add blocks."""
    k = keras()
    seed = draw(st.integers(0, 1000))
    zeros = {"kernel_initializer": "zeros", "recurrent_initializer": "zeros"}
    inp = k.Input((6, 3))
    x = k.layers.Conv1D(draw(st.integers(2, 5)), 2, padding="same", kernel_initializer="zeros")(inp)
    for kind in draw(st.lists(st.sampled_from(["separable", "depthwise", "bidirectional", "residual"]),
                              min_size=1, max_size=3)):
        width = draw(st.integers(2, 5))
        if kind == "separable":
            x = k.layers.SeparableConv1D(width, 3, padding="same", depth_multiplier=draw(st.integers(1, 2)),
                                         activation="relu", depthwise_initializer="zeros",
                                         pointwise_initializer="zeros")(x)
        elif kind == "depthwise":
            x = k.layers.DepthwiseConv1D(3, padding="same", depth_multiplier=draw(st.integers(1, 2)),
                                         depthwise_initializer="zeros")(x)
        elif kind == "bidirectional":
            merge = draw(st.sampled_from(["concat", "sum", "mul"]))
            cell = _cell(draw(st.sampled_from(sorted(RECURRENT))), width, return_sequences=True, **zeros)
            x = k.layers.Bidirectional(cell, merge_mode=merge)(x)
        else:
            x = k.layers.Add()([x, k.layers.SeparableConv1D(x.shape[-1], 3, padding="same",
                                                            depthwise_initializer="zeros",
                                                            pointwise_initializer="zeros")(x)])
    x = k.layers.Flatten()(x) if draw(st.booleans()) else k.layers.GlobalAveragePooling1D()(x)
    model = randomise(k.Model(inp, k.layers.Dense(3, kernel_initializer="zeros")(x)), seed)
    return model, draw(st.sampled_from([0.25, 0.5, 0.75]))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_graphs())
def test_random_graphs_of_the_new_layers(case):
    model, fraction = case
    if not removes_something(model, fraction):
        return
    check_model(model, _data(2, 6, 3), removal_of=lambda graph: first_units(graph, fraction))


@pytest.fixture(scope="module")
def sequence_task():
    from neuroprune.data import load_digits
    from neuroprune.keras.task import KerasClassificationTask

    return KerasClassificationTask(load_digits(layout="sequence"), batch_size=64, calibration_samples=128)


def _every_layer_model():
    k = keras()
    inp = k.Input((8, 8))
    x = k.layers.SeparableConv1D(8, 3, padding="same", depth_multiplier=2, activation="relu", name="sep")(inp)
    x = k.layers.DepthwiseConv1D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = k.layers.Bidirectional(k.layers.GRU(6, return_sequences=True), name="bi")(x)
    x = k.layers.Bidirectional(k.layers.LSTM(4), merge_mode="sum", name="bi_sum")(x)
    return randomise(k.Model(inp, k.layers.Dense(10, name="out")(x)))


def _dense_read_model():
    """Every group is read by a Dense layer only (what obs scores)."""
    k = keras()
    inp = k.Input((8, 8))
    x = k.layers.Bidirectional(k.layers.LSTM(6), name="bi")(inp)
    y = k.layers.GlobalAveragePooling1D()(k.layers.SeparableConv1D(6, 3, depth_multiplier=2, name="sep")(inp))
    return randomise(k.Model(inp, k.layers.Dense(10, name="out")(k.layers.Concatenate()([x, y]))))


@pytest.mark.parametrize("criterion", ["magnitude", "gradient", "taylor", "activation_mean", "activation_frequency",
                                       "seed", "obs", "rank", "random"])
def test_every_criterion_prunes_the_new_layers(sequence_task, criterion):
    import neuroprune
    from neuroprune.core.config import PruneConfig

    model = _dense_read_model() if criterion == "obs" else _every_layer_model()
    weights = [w.copy() for w in model.get_weights()]
    result = neuroprune.prune(model, sequence_task.bind(model),
                              PruneConfig(criterion=criterion, ratio=0.5, tolerance=1.0, progress=False,
                                          latency_runs=1))
    widths = {layer["name"]: (layer["width_before"], layer["width_after"]) for layer in result.report["layers"]}
    assert widths and all(after < before for before, after in widths.values()), widths
    assert result.model.count_params() == result.report["after"]["params"] < result.report["before"]["params"]
    assert all((a == b).all() for a, b in zip(weights, model.get_weights()))  # the user's model untouched
    x = _data(4, 8, 8)
    assert keras().ops.convert_to_numpy(result.model(x)).shape == (4, 10)


def test_saved_folder_reloads_and_replays_onto_the_original(tmp_path):
    """safetensors keys name each direction (``bi/forward/kernel``); the plan replays onto a fresh model."""
    from keras_models import as_numpy_keep, outputs
    from safetensors.numpy import load_file

    from neuroprune.core.plan import PruningPlan
    from neuroprune.keras import io
    from neuroprune.keras.surgery import apply_keep

    model = _every_layer_model()
    graph = discover(model)
    keep = as_numpy_keep(graph.keep_indices(first_units(graph)))
    pruned = apply_keep(model, keep)
    io.save(tmp_path / "out", pruned, PruningPlan(adapter="keras").compose(keep, graph.module_types, graph.axis_sizes))
    x = _data(3, 8, 8)
    for loaded in (io.load(tmp_path / "out", _every_layer_model()), io.load(tmp_path / "out")):
        np.testing.assert_array_equal(outputs(loaded, x), outputs(pruned, x))
    names = set(load_file(tmp_path / "out" / "model.safetensors"))
    assert {"bi/forward/kernel", "bi/backward/recurrent_kernel", "sep/pointwise_kernel", "dw/kernel"} <= names
