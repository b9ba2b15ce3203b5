"""Small Keras models and checks shared by the tests/test_keras*.py files (torch backend by default)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

from neuroprune.core.selection import spare_every_member  # noqa: E402


def keras():
    import keras as k

    return k


def mlp(sizes=(784, 128, 64, 10), seed=0):
    """The write-up's Sequential MLP (softmax output)."""
    k = keras()
    layers = [k.Input((sizes[0],))]
    for i, width in enumerate(sizes[1:-1]):
        layers.append(k.layers.Dense(width, activation="relu", name=f"fc{i + 1}", kernel_initializer="zeros"))
    layers.append(k.layers.Dense(sizes[-1], activation="softmax", name="out", kernel_initializer="zeros"))
    return randomise(k.Sequential(layers, name="mlp"), seed)


def residual_cnn(seed=0):
    """Conv + BN + residual Add + Concatenate + pooling + Flatten + Dense, with a keras.ops node."""
    k = keras()
    inp = k.Input((8, 8, 3))
    x = k.layers.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = k.layers.BatchNormalization(name="bn1")(x)
    x = k.layers.ReLU()(x)
    y = k.layers.Conv2D(6, 3, padding="same", name="c2")(x)
    y = k.layers.BatchNormalization(name="bn2")(y)
    z = k.ops.relu(k.layers.Add()([x, y]))
    c = k.layers.Conv2D(5, 1, activation="relu", name="c3")(z)
    cat = k.layers.Concatenate()([z, c])
    f = k.layers.Flatten()(k.layers.MaxPooling2D()(cat))
    d = k.layers.Dense(7, activation="relu", name="d1")(f)
    d = k.layers.Dropout(0.1)(d)
    out = k.layers.Dense(3, name="out")(d)
    return randomise(k.Model(inp, out, name="rescnn"), seed)


def randomise(model, seed=0):
    """Random weights set from numpy (layers are built with zeros initialisers: random ones compile once
    per shape on jax) and non-trivial BatchNorm statistics, so masks and surgery see real values."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        arrays = layer.get_weights()
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in arrays])
        elif arrays:
            fan_in = max(int(np.prod(arrays[0].shape[:-1])), 1)
            layer.set_weights([(rng.normal(size=w.shape) * np.sqrt(2 / fan_in)).astype("float32") for w in arrays])
    return model


def _all_layers(model):
    k = keras()
    for layer in model.layers:
        if isinstance(layer, k.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def outputs(model, x):
    return keras().ops.convert_to_numpy(model(x, training=False))


def first_units(graph, fraction=0.5):
    """Remove the first ``fraction`` of the prunable units of every group (a deterministic removal)."""
    removal = {}
    for group in graph.groups:
        units = np.nonzero(group.prunable)[0]
        n = min(len(units) - 1, max(1, int(len(units) * fraction)))
        if n > 0:
            chosen = units[::2][:n] if len(units[::2]) >= n else units[:n]
            # as the selection does: never every unit of one member layer (concat + residual groups)
            removal[group.name] = spare_every_member(group, np.arange(group.size, dtype=float), chosen)
    return removal


def removes_something(model, fraction) -> bool:
    """Whether :func:`first_units` removes any unit from ``model`` (a random graph may have no group with
    two units to choose from: nothing to check there)."""
    from neuroprune.keras.graph import discover

    return any(len(units) for units in first_units(discover(model), fraction).values())


def as_numpy_keep(keep):
    return {path: {axis: np.asarray(kept, dtype=np.int64) for axis, kept in axes.items()} for path, axes in keep.items()}


def expected_parameters(model, keep, formulas=None):
    """Parameters after ``keep``, from the weight shapes and the plan's sizes alone. ``formulas`` maps a
    layer class to ``f(layer, axes_keep) -> parameters`` where slicing one dimension is not the rule
    (recurrent gate blocks)."""
    from neuroprune.keras.layers import rule_for, weight_names
    from neuroprune.keras.paths import leaf_layers

    total = 0
    for path, layer in leaf_layers(model):
        formula = (formulas or {}).get(type(layer).__name__)
        if formula is not None:
            total += formula(layer, keep.get(path, {}))
            continue
        rule = rule_for(type(layer).__name__)
        for name, weight in zip(weight_names(layer), layer.weights):
            shape = list(weight.shape)
            for axis, kept in keep.get(path, {}).items():
                dim = rule.weights[axis].get(name) if rule else None
                if dim is not None:
                    shape[dim] = len(kept)
            total += int(np.prod(shape))
    return total


def check_model(model, x, removal_of=first_units, tmp_path=None, formulas=None):
    """Masked == pruned, bit-exact rollback, parameters == the plan's, plan replay, .keras reload."""
    from neuroprune.core.plan import PruningPlan
    from neuroprune.keras.graph import discover
    from neuroprune.keras.masks import apply_masks
    from neuroprune.keras.surgery import apply_keep

    graph = discover(model)
    keep = as_numpy_keep(graph.keep_indices(removal_of(graph)))
    original = [w.copy() for w in model.get_weights()]
    reference = outputs(model, x)
    pruned = apply_keep(model, keep)
    handle = apply_masks(model, keep)
    masked = outputs(model, x)
    handle.remove()
    np.testing.assert_allclose(outputs(pruned, x), masked, rtol=1e-5, atol=1e-5)
    assert all((a == b).all() for a, b in zip(original, model.get_weights())), "rollback is not bit-exact"
    np.testing.assert_array_equal(outputs(model, x), reference)
    assert pruned.count_params() == expected_parameters(model, keep, formulas) < model.count_params()
    plan = PruningPlan(adapter="keras").compose(keep, graph.module_types, graph.axis_sizes)
    replayed = apply_keep(model, PruningPlan.from_dict(plan.to_dict()).keep())
    np.testing.assert_array_equal(outputs(replayed, x), outputs(pruned, x))
    if tmp_path is not None:
        pruned.save(tmp_path / "model.keras")
        loaded = keras().saving.load_model(tmp_path / "model.keras")
        np.testing.assert_array_equal(outputs(loaded, x), outputs(pruned, x))
    return pruned


def check_write_up_keras(tmp_path, load_example):
    """examples/write_up_keras.py on tiny settings (skipped without keras): smaller, reloads identically."""
    import pytest

    pytest.importorskip("keras")
    example = load_example("write_up_keras")
    summary = example.main(["--make-demo-npz", "mnist.npz", "--epochs", "2", "--samples", "400", "--steps", "2",
                            "--finetune-epochs", "1", "--quiet"])
    result = summary["result"]
    assert summary["reloaded_equal"] and summary["dense_accuracy"] > 0.5
    assert result.plan.adapter == "keras" and result.report["config"]["criterion"] == "seed"
    assert [layer["name"] for layer in result.report["layers"]] == ["fc1", "fc2"]
    assert result.report["after"]["params"] < result.report["before"]["params"] == 784 * 128 + 128 + 128 * 64 + 64 + 650
    assert (tmp_path / "write-up-keras-out" / "model.keras").is_file()


CHANNEL_NORMS = ("LayerNormalization", "LayerNormalization(center=False, scale=False)",
                 "LayerNormalization(rms_scaling=True)", "RMSNormalization")


def channel_norm(choice=0, **options):
    """A normalisation over all channels, by index into :data:`CHANNEL_NORMS`."""
    layers = keras().layers
    if choice == 3:
        return layers.RMSNormalization(**options)
    variant = [{}, {"center": False, "scale": False, "epsilon": 1e-3}, {"rms_scaling": True}][choice]
    return layers.LayerNormalization(**variant, **options)


def recurrent_stack(seed=0):
    """Dense -> LSTM (sequences) -> GRU (last state, reset_after) -> Dense on (batch, 5, 4) sequences."""
    k = keras()
    inp = k.Input((5, 4))
    x = k.layers.Dense(6, activation="relu", name="d0", kernel_initializer="zeros")(inp)
    x = k.layers.LSTM(7, return_sequences=True, name="lstm")(x)
    x = k.layers.GRU(5, name="gru")(x)
    return randomise(k.Model(inp, k.layers.Dense(3, name="out")(x), name="rnn_stack"), seed)


def recurrent_states(seed=0):
    """LSTM with return_state (output, h, c concatenated), a SimpleRNN with a sigmoid activation under
    global pooling, a GRU without reset_after reading backwards, and a GroupNormalization after a Conv1D."""
    k = keras()
    inp = k.Input((6, 3))
    c = k.layers.Conv1D(6, 2, padding="same", name="conv", kernel_initializer="zeros")(inp)
    c = k.layers.GroupNormalization(3, name="gn")(c)
    out, h, cell = k.layers.LSTM(5, return_sequences=True, return_state=True, name="lstm")(c)
    s = k.layers.SimpleRNN(4, activation="sigmoid", return_sequences=True, name="srnn")(out)
    g = k.layers.GRU(3, reset_after=False, go_backwards=True, name="gru")(s)
    merged = k.layers.Concatenate()([h, cell, k.layers.GlobalAveragePooling1D()(s), g])
    return randomise(k.Model(inp, k.layers.Dense(2, name="out")(merged), name="rnn_states"), seed)


def text_lstm(vocabulary=11, seed=0):
    """Embedding -> LSTM -> Dense: a token classifier."""
    k = keras()
    tokens = k.Input((5,), dtype="int32")
    x = k.layers.Embedding(vocabulary, 6, name="emb")(tokens)
    x = k.layers.LSTM(4, name="lstm")(x)
    return randomise(k.Model(tokens, k.layers.Dense(3, name="out")(x), name="text_lstm"), seed)


def transformer_block(vocab=16, length=6, width=8, heads=4, key_dim=3, ffn=12, classes=3, seed=0, causal=False):
    """Embedding -> MultiHeadAttention -> Add -> LayerNormalization -> Dense FFN (Dense + EinsumDense)
    -> Add -> LayerNormalization -> pooled classifier: one transformer encoder block of keras layers."""
    k = keras()
    tokens = k.Input((length,), name="tokens")
    x = k.layers.Embedding(vocab, width, name="emb", embeddings_initializer="zeros")(tokens)
    attended = k.layers.MultiHeadAttention(heads, key_dim, name="mha", kernel_initializer=k.initializers.Constant(0.0))(
        x, x, use_causal_mask=causal)
    x = k.layers.LayerNormalization(name="ln1")(k.layers.Add()([x, attended]))
    h = k.layers.Dense(ffn, activation="relu", name="ffn1", kernel_initializer="zeros")(x)
    h = k.layers.EinsumDense("abc,cd->abd", output_shape=(None, width), bias_axes="d", name="ffn2",
                             kernel_initializer="zeros")(h)
    x = k.layers.LayerNormalization(name="ln2")(k.layers.Add()([x, h]))
    x = k.layers.GlobalAveragePooling1D()(x)
    out = k.layers.Dense(classes, name="out", kernel_initializer="zeros")(x)
    return randomise(k.Model(tokens, out, name="encoder"), seed)


def token_data(vocab=16, length=6, classes=3, samples=(192, 64, 64), seed=0):
    """Tiny token-sequence splits (float token ids, as the classification task stores inputs): the
    label is the most frequent of the tokens ``0 .. classes - 1`` in the sequence."""
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), samples):
        x = rng.integers(0, vocab, (n, length))
        counts = np.stack([(x == c).sum(axis=1) for c in range(classes)], axis=1)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x.astype(np.float32), counts.argmax(axis=1).astype(np.int64)
    return SimpleNamespace(**arrays)
