"""Layer paths of Keras models: ``"dense_1"`` at the top level, ``"block/dense_1"`` inside a nested model.

Example:
    >>> import keras
    >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="block")
    >>> model = keras.Sequential([keras.Input((3,)), inner], name="outer")
    >>> layer_at(model, "block/d").name, [path for path, _ in leaf_layers(model)]
    ('d', ['block/d'])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

SEP = "/"


def is_model(layer: Any) -> bool:
    """True for a (nested) Functional or Sequential model."""
    import keras

    return isinstance(layer, keras.Model)


def layer_at(model: Any, path: str) -> Any:
    """The layer at ``path`` (names separated by ``/``)."""
    layer = model
    for name in path.split(SEP):
        try:
            layer = layer.get_layer(name)
        except ValueError:  # a Sequential's InputLayer is left out of .layers (kept in ._layers)
            matches = [candidate for candidate in getattr(layer, "_layers", []) if candidate.name == name]
            if not matches:
                raise
            layer = matches[0]
    return layer


def leaf_layers(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, layer)`` for every layer that is not itself a model, depth first, InputLayers left out."""
    for layer in model.layers:
        path = prefix + layer.name
        if is_model(layer):
            yield from leaf_layers(layer, path + SEP)
        elif type(layer).__name__ != "InputLayer":
            yield path, layer
