"""Keras recurrent layers (LSTM, GRU, SimpleRNN) and GroupNormalization: pruned physically, masks equal
surgery, parameter drop equals the plan's, plan replay, .keras files, rollback, the CLI."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import functools  # noqa: E402
import json  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("keras")

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from keras_models import (  # noqa: E402
    first_units,
    keras,
    outputs,
    randomise,
    recurrent_stack,
    recurrent_states,
    removes_something,
    text_lstm,
)
from keras_models import check_model as shared_check_model  # noqa: E402

from neuroprune.core.backend import backend_for  # noqa: E402
from neuroprune.core.errors import PlanError  # noqa: E402
from neuroprune.keras.graph import discover  # noqa: E402
from neuroprune.keras.recurrent import GATES  # noqa: E402
from neuroprune.keras.surgery import apply_keep  # noqa: E402


def _recurrent_parameters(layer, keep):
    config = layer.get_config()
    units = len(keep["out"]) if "out" in keep else config["units"]
    fan_in = len(keep["in"]) if "in" in keep else layer.get_weights()[0].shape[0]
    gates = GATES[type(layer).__name__]
    bias_rows = 2 if type(layer).__name__ == "GRU" and config.get("reset_after", True) else 1
    return gates * units * (fan_in + units + (bias_rows if config["use_bias"] else 0))


#: masked == pruned etc., with recurrent layers counted by their formula: gates * units * (inputs + units + bias rows)
check_model = functools.partial(shared_check_model, formulas={name: _recurrent_parameters for name in GATES})


def _sequences(batch=3, steps=5, features=4):
    return np.random.default_rng(0).normal(size=(batch, steps, features)).astype("float32")


def test_lstm_and_gru_units_are_removed_physically(tmp_path):
    model = recurrent_stack()
    groups = {g.name: [m.path + ":" + m.axis for m in g.members] for g in discover(model).groups}
    assert groups == {"d0": ["d0:out", "lstm:in"], "lstm": ["lstm:out", "gru:in"], "gru": ["gru:out", "out:in"]}
    pruned = check_model(model, _sequences(), tmp_path=tmp_path)
    lstm, gru = pruned.get_layer("lstm"), pruned.get_layer("gru")
    assert (lstm.units, gru.units) == (4, 3)
    assert [tuple(w.shape) for w in lstm.weights] == [(3, 16), (4, 16), (16,)]
    assert [tuple(w.shape) for w in gru.weights] == [(4, 9), (3, 9), (2, 9)]
    loaded = keras().saving.load_model(tmp_path / "model.keras")
    assert type(loaded.get_layer("lstm").cell.kernel_initializer).__name__ == "GlorotUniform"  # the user's, not zeros


def test_return_state_simple_rnn_backwards_gru_and_group_norm(tmp_path):
    model = recurrent_states()
    graph = discover(model)
    by_name = {g.name: g for g in graph.groups}
    assert by_name["conv"].size == 3  # 6 channels in 3 groups of GroupNormalization: one unit per group
    assert {m.path + ":" + m.axis for m in by_name["lstm"].members} == {"lstm:out", "srnn:in", "out:in"}
    pruned = check_model(model, _sequences(4, 6, 3), tmp_path=tmp_path)
    assert pruned.get_layer("gn").groups == 2 and pruned.get_layer("conv").filters == 4


def test_masked_unit_with_nonzero_activation_still_equals_removal():
    """A sigmoid SimpleRNN unit outputs 0.5 when masked; nothing reads it, so masks still equal surgery."""
    k = keras()
    inp = k.Input((5, 3))
    x = k.layers.SimpleRNN(6, activation="sigmoid", return_sequences=True, name="s1")(inp)
    x = k.layers.SimpleRNN(4, activation="sigmoid", name="s2")(x)
    check_model(randomise(k.Model(inp, k.layers.Dense(2, name="out")(x))), _sequences(2, 5, 3))


def test_embedding_into_lstm(tmp_path):
    model = text_lstm()
    tokens = np.random.default_rng(0).integers(0, 11, (4, 5)).astype("int32")
    pruned = check_model(model, tokens, tmp_path=tmp_path)
    assert pruned.get_layer("emb").output_dim == 3 and pruned.get_layer("lstm").units == 2


def test_group_norm_keeps_whole_groups_only():
    model = recurrent_states()
    with pytest.raises(PlanError, match="whole groups of 2 channels"):
        apply_keep(model, {"conv": {"out": np.array([0, 2, 3, 4])}, "gn": {"features": np.array([0, 2, 3, 4])},
                           "lstm": {"in": np.array([0, 2, 3, 4])}})


def test_frozen_recurrent_cases_say_why():
    k = keras()
    inp = k.Input((5, 3))
    bidirectional = k.layers.Bidirectional(k.layers.LSTM(4, return_sequences=True), name="bi")(
        k.layers.Dense(6, name="d_bi")(inp))
    state = k.Input((4,))
    seeded = k.layers.GRU(4, name="seeded")(k.layers.Dense(5, name="d_seeded")(inp), initial_state=[state])
    stateful_in = k.Input((5, 3), batch_size=2)
    stateful = k.layers.LSTM(4, stateful=True, name="stateful")(stateful_in)
    model = k.Model([inp, state, stateful_in], [k.layers.Dense(2, name="o1")(bidirectional),
                                                 k.layers.Dense(2, name="o2")(seeded),
                                                 k.layers.Dense(2, name="o3")(stateful)])
    graph = discover(model)
    reasons = " ".join(r for why in graph.frozen.values() for r in why)
    assert "initial states" in reasons and "stateful" in reasons
    prunable = {g.name for g in graph.groups}
    assert "d_seeded" in prunable and "seeded" not in prunable
    assert {"d_bi", "bi"} <= prunable  # Bidirectional is pruned (tests/test_keras_more_layers.py); its frozen cases there


def test_weight_rows_equal_the_torch_handlers():
    """The criteria see an LSTM unit's gate rows as the torch side does: (units, gates * inputs)."""
    import torch

    from neuroprune.torch.layers.rnn import RecurrentHandler

    model = recurrent_stack()
    layer = model.get_layer("lstm")
    kernel, recurrent, _ = layer.get_weights()
    twin = torch.nn.LSTM(6, 7, batch_first=True)
    with torch.no_grad():
        twin.weight_ih_l0.copy_(torch.from_numpy(kernel.T))
        twin.weight_hh_l0.copy_(torch.from_numpy(recurrent.T))
    theirs = [view.rows(getattr(twin, view.name)).detach().numpy()
              for view in RecurrentHandler().incoming(twin, "hidden")]
    ours = backend_for(model).weight_rows(model, "lstm", "out")
    assert [r.name for r in ours] == ["kernel", "recurrent_kernel"]
    for mine, reference in zip(ours, theirs):
        np.testing.assert_array_equal(mine.rows, reference)
    assert ours[0].input_axis == "in" and ours[0].input_columns.tolist() == list(range(6)) * 4


@st.composite
def recurrent_graphs(draw):
    """Random Functional graphs of Conv1D/Dense/LSTM/GRU/SimpleRNN/GroupNorm/Add/Concatenate blocks."""
    k = keras()
    seed = draw(st.integers(0, 1000))
    dense = functools.partial(k.layers.Dense, kernel_initializer="zeros")
    # zeros initialisers (randomise sets the weights) and a dropout seed: Keras would draw from Python's
    # random module inside the strategy, and compile once per shape on jax
    zeros = {"kernel_initializer": "zeros", "recurrent_initializer": "zeros", "seed": 0}
    recurrent = {name: functools.partial(layer, **zeros) for name, layer in
                 {"lstm": k.layers.LSTM, "gru": k.layers.GRU, "rnn": k.layers.SimpleRNN}.items()}
    inp = k.Input((4, 3))
    x = k.layers.Conv1D(draw(st.integers(2, 6)), 2, padding="same", activation="relu", kernel_initializer="zeros")(inp)
    for kind in draw(st.lists(st.sampled_from(["lstm", "gru", "rnn", "dense", "residual", "concat", "gn"]),
                              min_size=1, max_size=3)):
        width = draw(st.integers(2, 5))
        if kind in recurrent:
            x = recurrent[kind](width, return_sequences=True)(x)
        elif kind == "dense":
            x = dense(width, activation="relu")(x)
        elif kind == "residual":
            x = k.layers.Add()([x, recurrent["lstm"](x.shape[-1], return_sequences=True)(x)])
        elif kind == "concat":
            x = k.layers.Concatenate()([x, recurrent["gru"](width, return_sequences=True, reset_after=False)(x)])
        else:
            channels = x.shape[-1]
            groups = draw(st.sampled_from([g for g in range(1, channels + 1) if channels % g == 0]))
            x = k.layers.GroupNormalization(groups)(x)
    end = draw(st.sampled_from(["lstm", "gru", "rnn", "pool", "flatten"]))
    if end in recurrent:
        x = recurrent[end](draw(st.integers(2, 5)))(x)
    else:
        x = k.layers.GlobalAveragePooling1D()(x) if end == "pool" else k.layers.Flatten()(x)
    model = randomise(k.Model(inp, dense(3)(x)), seed)
    return model, draw(st.sampled_from([0.25, 0.5, 0.75]))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recurrent_graphs())
def test_random_recurrent_graphs(case):
    model, fraction = case
    if not removes_something(model, fraction):
        return
    check_model(model, _sequences(2, 4, 3), removal_of=lambda graph: first_units(graph, fraction))


def test_prune_a_saved_lstm_from_the_command_line(tmp_path, capsys):
    from neuroprune.cli.main import main

    k = keras()
    inp = k.Input((8, 8))
    x = k.layers.LSTM(12, name="lstm")(inp)
    model = randomise(k.Model(inp, k.layers.Dense(10, name="out")(x)))
    model.save(tmp_path / "rnn.keras")
    code = main(["prune", "--model", f"keras:{tmp_path / 'rnn.keras'}", "--data", "digits", "--layout", "sequence",
                 "--train-epochs", "1", "--criterion", "magnitude", "--ratio", "0.5", "--tolerance", "1",
                 "--calibration-samples", "64", "--latency-runs", "1", "--quiet", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["adapter"] == "keras" and plan["modules"]["lstm"]["axes"]["out"]["size"] == 12
    pruned = keras().saving.load_model(tmp_path / "out" / "model.keras")
    assert pruned.get_layer("lstm").units == 6 and pruned.get_layer("out").kernel.shape == (6, 10)
    assert outputs(pruned, np.zeros((2, 8, 8), dtype="float32")).shape == (2, 10)


@pytest.fixture(scope="module")
def sequence_task():
    from neuroprune.data import load_digits
    from neuroprune.keras.task import KerasClassificationTask

    return KerasClassificationTask(load_digits(layout="sequence"), batch_size=64, calibration_samples=128)


@pytest.mark.parametrize("criterion", ["magnitude", "gradient", "taylor", "activation_mean",
                                       "activation_frequency", "seed", "rank", "random"])
def test_every_criterion_prunes_a_recurrent_model(sequence_task, criterion):
    import neuroprune
    from neuroprune.core.config import PruneConfig

    k = keras()
    inp = k.Input((8, 8))
    x = k.layers.GRU(8, return_sequences=True, name="gru")(k.layers.Dense(6, activation="relu", name="d0")(inp))
    model = randomise(k.Model(inp, k.layers.Dense(10, name="out")(k.layers.LSTM(6, name="lstm")(x))))
    weights = [w.copy() for w in model.get_weights()]
    result = neuroprune.prune(model, sequence_task.bind(model),
                              PruneConfig(criterion=criterion, ratio=0.5, tolerance=1.0, progress=False, latency_runs=1))
    assert {layer["name"]: layer["width_after"] for layer in result.report["layers"]} == {"d0": 3, "gru": 4, "lstm": 3}
    assert result.model.get_layer("gru").units == 4 and result.model.count_params() == result.report["after"]["params"]
    assert all((a == b).all() for a, b in zip(weights, model.get_weights()))  # the user's model untouched


def test_obs_refuses_units_read_by_a_recurrent_layer(sequence_task):
    """As on the torch side, OBS scores units read by dense layers only, and says so."""
    import neuroprune
    from neuroprune.core.config import PruneConfig
    from neuroprune.core.errors import ConfigError

    k = keras()
    inp = k.Input((8, 8))
    model = randomise(k.Model(inp, k.layers.Dense(10)(k.layers.LSTM(6, name="lstm")(k.layers.Dense(6, name="d0")(inp)))))
    with pytest.raises(ConfigError, match="read by lstm"):
        neuroprune.prune(model, sequence_task.bind(model), PruneConfig(criterion="obs", ratio=0.5, progress=False))
