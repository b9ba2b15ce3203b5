"""Keras convolutions with ``groups`` equal to their channels: depthwise convolutions written as
``Conv1D/2D/3D(filters=C, groups=C)`` (ConvNeXt's 7x7 convolution in ``keras.applications``).

Output channel ``c`` filters input channel ``c`` alone, so the channels pass through like a
``DepthwiseConv`` with depth multiplier 1: one ``features`` axis (kernel ``(k.., 1, C)`` along its
last dimension, bias), and ``filters`` and ``groups`` shrink together. Other grouped convolutions
stay frozen with the reason.

Example:
    >>> config = {"filters": 8, "groups": 8}
    >>> CONV_RULES["Conv2D"].resize_layer_config(config, "features", [0, 2, 5], channels=8)
    >>> config["filters"], config["groups"]
    (3, 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from neuroprune.keras.layers import LayerRule


@dataclass(frozen=True)
class ConvRule(LayerRule):
    """A convolution's ``out``/``in`` axes, and ``features`` when it is depthwise by ``groups``."""

    def resize_layer_config(self, config: dict[str, Any], axis: str, kept: Any, channels: int) -> None:
        """Write the new size of ``axis`` (``features``: ``filters`` and ``groups`` together)."""
        if axis == "features":
            config["filters"] = config["groups"] = len(kept)
        else:
            self.resize_config(config, axis, len(kept))


def is_channelwise(config: dict[str, Any], input_channels: int | None) -> bool:
    """Whether a convolution's ``groups`` make it depthwise: one group per input and output channel."""
    groups = int(config.get("groups", 1))
    return groups > 1 and groups == int(config.get("filters", 0)) == input_channels


_AXES = {"out": {"kernel": -1, "bias": 0}, "in": {"kernel": -2}, "features": {"kernel": -1, "bias": 0}}
CONV_RULES = {name: ConvRule((name,), _AXES, {"out": "filters", "in": None, "features": "filters"}, observed="in",
                             kernel_rank=rank)
              for rank, name in enumerate(("Conv1D", "Conv2D", "Conv3D"), start=1)}


def channelwise_flow(ids: Any, call: Any) -> list[np.ndarray]:
    """Bind ``features`` to the input channels; the output carries them on."""
    ids.bind_axis(call.path, "features", call.inputs[0])
    return [call.inputs[0]]
