"""Probe sub-models: the inputs of chosen layers of a Keras model, for one batch.

``keras.Model(model.inputs, [layer inputs...])`` reuses the model's own layers, so probing costs one
forward pass and works on every backend. A layer inside a nested model is reached by probing the
nested model's inputs first and running a probe of the nested model on them. Shared layers are
observed at every call.

Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")])
    >>> seen = LayerInputs(model, {"b"})(np.ones((5, 3), dtype="float32"))
    >>> [value.shape for value in seen["b"]]
    [(5, 4)]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuroprune.keras.paths import SEP, is_model


def _graph(model: Any) -> Any:
    """The Functional graph behind ``model`` (a built Sequential keeps one)."""
    return getattr(model, "_functional", None) or model


def _nodes(model: Any) -> list[Any]:
    graph = _graph(model)
    return [node for depth in sorted(graph._nodes_by_depth, reverse=True) for node in graph._nodes_by_depth[depth]]


class LayerInputs:
    """Calls of ``model`` that return the (first) input of every layer in ``paths``, per call."""

    def __init__(self, model: Any, paths: set[str], prefix: str = ""):
        import keras

        self.observed: list[str] = []
        self.nested: list[tuple[LayerInputs, int]] = []  # (probe of a nested model, its number of inputs)
        outputs = []
        for node in _nodes(model):
            layer = node.operation
            path = prefix + layer.name
            if path in paths and node.input_tensors:
                self.observed.append(path)
                outputs.append(node.input_tensors[0])
            elif is_model(layer) and any(p.startswith(path + SEP) for p in paths) and node.input_tensors:
                self.nested.append((LayerInputs(layer, paths, path + SEP), len(node.input_tensors)))
                outputs.extend(node.input_tensors)
        graph = _graph(model)
        inputs = graph.inputs[0] if len(graph.inputs) == 1 else graph.inputs
        self.probe = keras.Model(inputs, outputs) if outputs else None

    def __call__(self, x: Any) -> dict[str, list[np.ndarray]]:
        import keras

        seen: dict[str, list[np.ndarray]] = {}
        if self.probe is None:
            return seen
        values = self.probe(x, training=False)
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        for path, value in zip(self.observed, values):
            seen.setdefault(path, []).append(keras.ops.convert_to_numpy(value))
        position = len(self.observed)
        for probe, count in self.nested:
            inputs = values[position:position + count]
            position += count
            for path, found in probe(inputs[0] if count == 1 else inputs).items():
                seen.setdefault(path, []).extend(found)
        return seen
