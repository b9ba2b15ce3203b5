"""``LayerScale`` of ``keras.applications`` (ConvNeXt): ``x * gamma``, one learned factor per channel.

Its channels pass through (one ``features`` axis); ``gamma`` loses the removed entries and the
config's ``projection_dim`` shrinks. The layer's one variable is auto-named (``variable_18``), so
this rule slices whatever single vector the layer holds.

Example:
    >>> import numpy as np
    >>> LAYER_SCALE_RULE.slice_weights("features", {"variable_3": np.arange(4.0)}, np.array([1, 3]))
    {'variable_3': array([1., 3.])}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from neuroprune.keras.layers import LayerRule


@dataclass(frozen=True)
class LayerScaleRule(LayerRule):
    """``features`` of a LayerScale: its one (auto-named) weight vector, and ``projection_dim``."""

    def axes(self, layer: Any) -> dict[str, int]:
        return {"features": int(layer.projection_dim)}

    def slice_weights(self, axis: str, arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.take(array, keep, axis=0) for name, array in arrays.items()}

    def zero_weights(self, axis: str, arrays: dict[str, np.ndarray], removed: np.ndarray) -> dict[str, np.ndarray]:
        out = {name: np.array(array, copy=True) for name, array in arrays.items()}
        for array in out.values():
            array[removed] = 0
        return out


LAYER_SCALE_RULE = LayerScaleRule(("LayerScale",), {"features": {}}, {"features": "projection_dim"})


def is_layer_scale(call: Any) -> bool:
    """Whether ``call`` is keras.applications' LayerScale over the channels of its input."""
    shape = call.shapes[0] if call.shapes else None
    return (call.class_name == "LayerScale" and "projection_dim" in call.config and shape is not None
            and shape[-1] == call.config["projection_dim"])
