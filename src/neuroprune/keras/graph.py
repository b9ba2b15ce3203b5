"""Discover the neuron groups of a Keras 3 model from ``model.get_config()``.

Sequential and Functional models (nested ones too) describe their graph in their config: every
layer with its inbound nodes, including ``keras.ops`` nodes. Following channels through that graph
(:mod:`neuroprune.keras.flow`) gives the same :class:`~neuroprune.core.groups.DependencyGraph` as
the torch side: coupled channels across ``Add`` share a group, model inputs and outputs and
unsupported layers are fixed with the reason. Subclassed models have no such graph: they get an
:class:`~neuroprune.core.errors.UnsupportedModelError` that says what to do.

Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="fc1"),
    ...                           keras.layers.Dense(2, name="fc2")])
    >>> [(g.name, g.size, [m.path + ":" + m.axis for m in g.members]) for g in discover(model).groups]
    [('fc1', 8, ['fc1:out', 'fc2:in'])]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from neuroprune.core.errors import UnsupportedModelError, UnsupportedModuleError
from neuroprune.core.groups import DependencyGraph
from neuroprune.keras.flow import Call, propagate
from neuroprune.keras.grouping import ChannelIds
from neuroprune.keras.layers import rule_for
from neuroprune.keras.paths import SEP, layer_at, leaf_layers

MODEL_CLASSES = ("Functional", "Sequential", "Model")


def check_model(model: Any) -> None:
    """Refuse models whose graph cannot be read from their config (subclassed models)."""
    import keras

    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"expected a keras.Model, got {type(model).__module__}.{type(model).__qualname__}")
    if type(model).__name__ not in ("Functional", "Sequential"):
        raise UnsupportedModelError(
            f"{type(model).__name__} is a subclassed Keras model: its layers are wired in Python code (call()), "
            "which neuroprune cannot read or rewrite. Build the same network as a Functional model "
            "(keras.Model(inputs, outputs)) or a keras.Sequential, load its weights, and prune that")
    if not model.built:
        raise UnsupportedModelError("the Keras model is not built: give it an Input (or call it once) first")


def _tensors(structure: Any) -> list[dict]:
    """The serialised Keras tensors in an inbound node's args, in order."""
    if isinstance(structure, dict):
        if structure.get("class_name") == "__keras_tensor__":
            return [structure["config"]]
        return [t for value in structure.values() for t in _tensors(value)]
    if isinstance(structure, (list, tuple)):
        return [t for value in structure for t in _tensors(value)]
    return []


def _constants(structure: Any) -> int:
    if isinstance(structure, (int, float)) and not isinstance(structure, bool):
        return 1
    if isinstance(structure, (list, tuple)):
        return sum(_constants(v) for v in structure)
    return 0


def _history_leaves(structure: Any) -> list[tuple[str, int, int]]:
    """``[name, node, tensor]`` triples of a config's ``input_layers`` / ``output_layers``."""
    if isinstance(structure, (list, tuple)) and len(structure) == 3 and isinstance(structure[0], str):
        return [(structure[0], int(structure[1]), int(structure[2]))]
    if isinstance(structure, dict):
        return [leaf for value in structure.values() for leaf in _history_leaves(value)]
    return [leaf for value in structure for leaf in _history_leaves(value)]


class _Walker:
    """Follows channels through a model's config, nested models included."""

    def __init__(self, model: Any, ignore: set[str]):
        self.model, self.ignore, self.ids = model, ignore, ChannelIds()

    def run(self) -> list[np.ndarray | None]:
        outputs = self._model(self.model.get_config(), type(self.model).__name__, "", None)
        for flow in outputs:
            if flow is not None:
                self.ids.freeze(flow, "model output")
        return outputs

    def _model(self, config: dict, class_name: str, prefix: str, inputs: list | None) -> list:
        if class_name == "Sequential":
            return self._sequential(config, prefix, inputs)
        return self._functional(config, prefix, inputs)

    def _input(self, entry: dict, given: np.ndarray | None, prefix: str) -> np.ndarray | None:
        if given is not None:  # a nested model's input: its batch_shape follows the channels
            self.ids.bind_axis(prefix + entry["config"]["name"], "features", given)
            return given
        shape = entry["config"].get("batch_shape") or entry["config"].get("batch_input_shape")
        return self.ids.fixed(int(shape[-1]), "model input") if shape and shape[-1] else None

    def _sequential(self, config: dict, prefix: str, inputs: list | None) -> list:
        flow = inputs[0] if inputs else None
        shape = config.get("build_input_shape")
        for entry in config["layers"]:
            layer_config = entry["config"]
            if entry["class_name"] == "InputLayer":
                flow, shape = self._input(entry, flow, prefix), tuple(layer_config.get("batch_shape") or ())
                continue
            if flow is None and shape:
                flow = self.ids.fixed(int(shape[-1]), "model input")
            in_shape = tuple((entry.get("build_config") or {}).get("input_shape") or shape or ())
            outs = self._layer(entry, prefix + layer_config["name"], [flow], [in_shape or None], 0)
            flow = outs[0]
            shape = None
        return [flow]

    def _functional(self, config: dict, prefix: str, inputs: list | None) -> list:
        tensors: dict[tuple[str, int, int], Any] = {}
        entries = {entry["name"]: entry for entry in config["layers"]}
        for position, (name, node, index) in enumerate(_history_leaves(config["input_layers"])):
            given = inputs[position] if inputs and position < len(inputs) else None
            tensors[(name, node, index)] = self._input(entries[name], given, prefix)
        pending = [(entry, n, node) for entry in config["layers"] if entry["class_name"] != "InputLayer"
                   for n, node in enumerate(entry.get("inbound_nodes", []))]
        while pending:
            waiting = []
            for entry, n, node in pending:
                refs = _tensors(node.get("args", [])) + _tensors(node.get("kwargs", {}))
                keys = [tuple(ref["keras_history"]) for ref in refs]
                if any(key not in tensors for key in keys):
                    waiting.append((entry, n, node))
                    continue
                shapes = [tuple(ref["shape"]) if ref.get("shape") is not None else None for ref in refs]
                outs = self._layer(entry, prefix + entry["name"], [tensors[k] for k in keys], shapes,
                                   _constants(node.get("args", [])), node)
                for index, flow in enumerate(outs):
                    tensors[(entry["name"], n, index)] = flow
            if len(waiting) == len(pending):
                raise UnsupportedModuleError(f"the Functional config of {prefix or 'the model'} has nodes whose inputs "
                                             "never appear (a disconnected graph)")
            pending = waiting
        return [tensors.get(leaf) for leaf in _history_leaves(config["output_layers"])]

    def _layer(self, entry: dict, path: str, flows: list, shapes: list, constants: int,
               node: dict | None = None) -> list:
        class_name = entry["class_name"]
        if class_name in MODEL_CLASSES:
            return self._model(entry["config"], class_name, path + SEP, flows)
        is_op = not str(entry.get("module", "keras.layers")).startswith("keras.layers")
        reason = "ignored (ignore=...)" if path in self.ignore else ""
        call = Call(path, "Ignored" if reason else class_name, entry["config"], flows, shapes, is_op, constants, reason,
                    node)
        return propagate(self.ids, call)


def discover(model: Any, example: Any = None, *, ignore: Iterable[str] = (), ignore_untraceable: bool = False) -> DependencyGraph:
    """The groups of a Sequential or Functional Keras ``model`` (``example`` is not needed: the
    graph comes from the config; it is accepted for the backend protocol)."""
    check_model(model)
    ignore = set(ignore)
    leaves = dict(leaf_layers(model))
    unknown = sorted(ignore - set(leaves))
    if unknown:
        raise UnsupportedModuleError(f"ignore names layers the model does not have: {', '.join(unknown)}; "
                                     f"layers: {', '.join(leaves)}")
    walker = _Walker(model, ignore)
    walker.run()
    paths = {path for path, _ in walker.ids.axes}
    module_types = {path: type(layer_at(model, path)).__name__ for path in paths}
    axis_sizes = {path: rule_for(module_types[path]).axes(layer_at(model, path)) for path in paths}
    return walker.ids.build(module_types, axis_sizes)
