"""Remove neurons from a Keras model for real: rewrite the config, rebuild, set sliced weights.

The config's ``units`` / ``filters`` / ``target_shape`` entries take the new sizes; serialised
``build_config`` input shapes are dropped, so every layer is built from the shapes that actually
reach it; rebuilt layers get zeros initialisers (a random initialiser would compile once per new
shape on jax, and its values are overwritten anyway), and the original initialisers are put back
on the new layers afterwards, so the saved config is the user's. The user's model is not touched.

Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="fc1"), keras.layers.Dense(2, name="fc2")])
    >>> small = apply_keep(model, {"fc1": {"out": np.array([0, 3, 5])}, "fc2": {"in": np.array([0, 3, 5])}})
    >>> small.get_layer("fc1").units, small.get_layer("fc2").kernel.shape, model.get_layer("fc1").units
    (3, (3, 2), 8)
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from neuroprune.core.errors import PlanError
from neuroprune.keras.graph import MODEL_CLASSES, check_model
from neuroprune.keras.layers import rule_for, set_weights_by_name, weights_by_name
from neuroprune.keras.paths import SEP, layer_at, leaf_layers

ZEROS = {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None}


def _entries(config: dict) -> list[dict]:
    return config.get("layers", [])


def _entry_name(entry: dict) -> str:
    return entry.get("name") or entry["config"]["name"]


def entry_at(config: dict, path: str) -> dict:
    """The serialised layer at ``path`` inside a model ``config``."""
    entry = {"config": config}
    for name in path.split(SEP):
        matches = [e for e in _entries(entry["config"]) if _entry_name(e) == name]
        if not matches:
            raise PlanError(f"the model has no layer {path!r}")
        entry = matches[0]
    return entry


def _prepare_for_rebuild(config: dict, prefix: str, initializers: dict[tuple[str, str], Any]) -> None:
    """Drop ``build_config`` and use zeros initialisers in every layer, remembering the originals."""
    for entry in _entries(config):
        path = prefix + _entry_name(entry)
        if entry["class_name"] in MODEL_CLASSES:
            _prepare_for_rebuild(entry["config"], path + SEP, initializers)
            continue
        if entry["class_name"] == "InputLayer":
            continue
        entry.pop("build_config", None)
        for key, value in list(entry["config"].items()):
            if key.endswith("_initializer") and value is not None:
                initializers[(path, key)] = value
                entry["config"][key] = dict(ZEROS)


def _restore_initializers(model: Any, initializers: dict[tuple[str, str], Any]) -> None:
    import keras

    for (path, key), value in initializers.items():
        layer = layer_at(model, path)
        owner = getattr(layer, "cell", layer)  # a recurrent layer's initialisers live on its cell
        key = key if hasattr(owner, key) else f"_{key}"  # MultiHeadAttention keeps them private
        if hasattr(owner, key):
            setattr(owner, key, keras.initializers.get(value))


def rebuild(model: Any, config: dict) -> Any:
    """A new model of ``model``'s class from ``config``, with zeros initialisers while it is built."""
    config = copy.deepcopy(config)
    initializers: dict[tuple[str, str], Any] = {}
    _prepare_for_rebuild(config, "", initializers)
    new = type(model).from_config(config)
    _restore_initializers(new, initializers)
    if getattr(model, "compiled", False) and model.get_compile_config():
        new.compile_from_config(model.get_compile_config())
    return new


def resized_config(model: Any, keep: dict[str, dict[str, np.ndarray]]) -> dict:
    """``model``'s config with the sizes of every axis in ``keep`` rewritten."""
    config = copy.deepcopy(model.get_config())
    for path, axes in keep.items():
        entry = entry_at(config, path)
        rule = rule_for(entry["class_name"])
        if rule is None:
            raise PlanError(f"{path}: layer type {entry['class_name']} has no prunable axes")
        for axis, kept in axes.items():
            if axis not in rule.weights:
                raise PlanError(f"{path}: {entry['class_name']} has no axis {axis!r}; axes: {', '.join(rule.weights)}")
            if hasattr(rule, "resize_layer_config"):  # GroupNormalization: sizes in whole groups
                channels = rule.axes(layer_at(model, path)).get(axis, len(kept))
                rule.resize_layer_config(entry["config"], axis, kept, channels)
            else:
                rule.resize_config(entry["config"], axis, len(kept))
    return config


def sliced_weights(layer: Any, class_name: str, axes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weights of ``layer`` with only the kept positions of each axis."""
    arrays = weights_by_name(layer)
    rule = rule_for(class_name)
    sizes = rule.axes(layer) if rule else {}
    for axis, kept in axes.items():
        kept = np.asarray(kept, dtype=np.int64)
        if axis in sizes and len(kept) and (kept.min() < 0 or kept.max() >= sizes[axis]):
            raise PlanError(f"{layer.name}: axis {axis!r} has {sizes[axis]} positions; the plan keeps {int(kept.max())}")
        arrays = rule.slice_weights(axis, arrays, kept)
    return arrays


def apply_keep(model: Any, keep: dict[str, dict[str, Any]]) -> Any:
    """A smaller copy of ``model`` with only the positions in ``keep`` (path -> axis -> kept positions);
    layers not in ``keep`` keep all their weights. ``model`` itself is not modified."""
    check_model(model)
    keep = {path: {axis: np.asarray(kept, dtype=np.int64) for axis, kept in axes.items()} for path, axes in keep.items()}
    new = rebuild(model, resized_config(model, keep))
    for path, layer in leaf_layers(model):
        if path not in keep:  # unchanged: by order (a custom layer's variables may be auto-named, "variable_18")
            layer_at(new, path).set_weights(layer.get_weights())
            continue
        set_weights_by_name(layer_at(new, path), sliced_weights(layer, type(layer).__name__, keep[path]))
    return new


def clone(model: Any) -> Any:
    """An independent copy of ``model`` (same config, same weights)."""
    return apply_keep(model, {})
