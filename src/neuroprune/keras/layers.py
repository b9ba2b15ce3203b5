"""How each supported Keras layer type takes part in pruning, as data.

A :class:`LayerRule` says which prunable axes a layer has, which dimension of which weight holds
each axis (Keras lays kernels out ``(in, out)`` and ``(k..., in, out)``: channels last), which
config entry stores the axis size, and how its weights read as ``units x fan-in`` rows for the
criteria. Masks, surgery, statistics and scoring all read these tables; channel flow through a
layer (for dependency discovery) lives in :mod:`neuroprune.keras.flow`.

Example:
    >>> import numpy as np
    >>> rule = rule_for("Dense")
    >>> kernel = np.arange(6.0).reshape(2, 3)          # (in=2, out=3)
    >>> rule.incoming("out")[0].rows(kernel).shape      # one row per output unit
    (3, 2)
    >>> rule.slice_weights("out", {"kernel": kernel, "bias": np.zeros(3)}, np.array([0, 2]))["kernel"].shape
    (2, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RowsView:
    """Weight ``name`` as ``units x fan-in`` rows of an axis; ``input_columns`` maps a per-input
    unit vector (of axis ``input_axis``) onto the columns of ``rows``."""

    name: str
    rows: Callable[[np.ndarray], np.ndarray]
    input_axis: str | None = None
    input_columns: Callable[[np.ndarray], np.ndarray] | None = None


def _rows_along(dim: int) -> Callable[[np.ndarray], np.ndarray]:
    def rows(array: np.ndarray) -> np.ndarray:
        moved = np.moveaxis(np.asarray(array), dim, 0)
        return moved.reshape(moved.shape[0], -1)

    return rows


def _tile_over_kernel(array_shape_of_kernel_positions: int) -> Callable[[np.ndarray], np.ndarray]:
    # conv rows after moving "out" first are (k..., in) flattened: column = position * in + channel
    return lambda per_input: np.tile(np.asarray(per_input), array_shape_of_kernel_positions)


def _input_width(layer: Any) -> int | None:
    """The last dimension of ``layer``'s input (``None`` if unknown, e.g. a layer used twice)."""
    try:
        width = layer.input.shape[-1]
    except (AttributeError, ValueError, IndexError):
        return None
    return int(width) if width is not None else None


@dataclass(frozen=True)
class LayerRule:
    """The prunable axes of one layer type.

    ``weights[axis]`` maps a weight name to the dimension holding ``axis``; ``config_keys[axis]``
    names the config entry that stores the axis size (``None``: the size follows the input).
    ``observed`` is the axis whose activations are the layer's (first) input, channels last.
    """

    class_names: tuple[str, ...]
    weights: dict[str, dict[str, int]]
    config_keys: dict[str, str | None] = field(default_factory=dict)
    observed: str | None = None
    kernel_rank: int = 0  # spatial dimensions of the kernel (0 for Dense)

    def axes(self, layer: Any) -> dict[str, int]:
        """Axis sizes of a built ``layer``."""
        arrays = {name: tuple(w.shape) for name, w in zip(weight_names(layer), layer.weights)}
        sizes = {}
        for axis, dims in self.weights.items():
            for name, dim in dims.items():
                if name in arrays:
                    sizes[axis] = int(arrays[name][dim])
                    break
            else:
                key = self.config_keys.get(axis)
                if key in SHAPE_KEYS:  # Reshape, InputLayer: the size is the shape's last entry
                    sizes[axis] = int(layer.get_config()[key][-1])
                elif axis == "features" and _input_width(layer):  # a norm without weights: its input's width
                    sizes[axis] = _input_width(layer)
        return sizes

    def for_weights(self, shapes: dict[str, tuple[int, ...]]) -> LayerRule:
        """This rule for a layer whose weights have ``shapes`` (name -> shape): rules whose rows depend on
        them (a depth multiplier, gate blocks per direction) return a specialised copy."""
        return self

    def slice_weights(self, axis: str, arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
        """``arrays`` with positions ``keep`` of ``axis`` kept in every weight that has the axis."""
        out = dict(arrays)
        for name, dim in self.weights.get(axis, {}).items():
            if name in out:
                out[name] = np.take(out[name], keep, axis=dim)
        return out

    def zero_weights(self, axis: str, arrays: dict[str, np.ndarray], removed: np.ndarray) -> dict[str, np.ndarray]:
        """``arrays`` with the entries of positions ``removed`` of ``axis`` set to zero (copies)."""
        out = dict(arrays)
        for name, dim in self.weights.get(axis, {}).items():
            if name in out:
                array = np.array(out[name], copy=True)
                index = [slice(None)] * array.ndim
                index[dim] = removed
                array[tuple(index)] = 0
                out[name] = array
        return out

    def resize_config(self, config: dict[str, Any], axis: str, size: int) -> None:
        """Write the new size of ``axis`` into the layer's ``config`` (in place)."""
        key = self.config_keys.get(axis)
        if key in SHAPE_KEYS:
            config[key] = [*list(config[key])[:-1], size]
        elif key is not None:
            config[key] = size

    def incoming(self, axis: str, kernel_shape: tuple[int, ...] = ()) -> list[RowsView]:
        """Weights that compute the units of ``axis``, as rows (kernel only, like the torch side)."""
        if axis == "out" and "embeddings" in self.weights.get("out", {}):  # one row per feature, over the vocabulary
            return [RowsView("embeddings", _rows_along(-1))]
        if axis != "out" or "kernel" not in self.weights.get("out", {}):
            return []
        positions = int(np.prod(kernel_shape[:-2])) if self.kernel_rank and kernel_shape else 1
        columns = _tile_over_kernel(positions) if self.kernel_rank else (lambda v: np.asarray(v))
        return [RowsView("kernel", _rows_along(-1), input_axis="in", input_columns=columns)]

    def outgoing(self, axis: str) -> list[RowsView]:
        """Weights that read the units of ``axis``, as rows."""
        if axis != "in" or "kernel" not in self.weights.get("in", {}):
            return []
        return [RowsView("kernel", _rows_along(-2))]


#: config entries that hold a whole shape (channels last)
SHAPE_KEYS = ("target_shape", "batch_shape")

_PROJECTION = {"out": {"kernel": -1, "bias": 0}, "in": {"kernel": -2}}
_CHANNELWISE = {"features": {"gamma": 0, "beta": 0, "moving_mean": 0, "moving_variance": 0}}

RULES: tuple[LayerRule, ...] = (
    LayerRule(("Dense",), _PROJECTION, {"out": "units", "in": None}, observed="in"),
    # Conv1D/2D/3D: neuroprune.keras.grouped_conv (a depthwise ``groups`` adds a ``features`` axis)
    LayerRule(("BatchNormalization",), _CHANNELWISE, {"features": None}),
    # normalised over all channels: masks narrow them (neuroprune.keras.narrowed_norm)
    LayerRule(("LayerNormalization",), _CHANNELWISE, {"features": None}),
    LayerRule(("RMSNormalization",), {"features": {"scale": 0}}, {"features": None}),
    LayerRule(("Embedding",), {"out": {"embeddings": -1}}, {"out": "output_dim"}),
    LayerRule(("Reshape",), {"features": {}}, {"features": "target_shape"}),
    LayerRule(("InputLayer",), {"features": {}}, {"features": "batch_shape"}),  # of a nested model
)
_BY_NAME = {name: rule for rule in RULES for name in rule.class_names}


_SUBCLASSED: dict[str, LayerRule] = {}


def _subclassed_rules() -> tuple[LayerRule, ...]:
    """Rules that subclass :class:`LayerRule` in their own modules (imported here, not at the top)."""
    from neuroprune.keras.attention_rules import ATTENTION_RULES
    from neuroprune.keras.bidirectional import BIDIRECTIONAL_RULE
    from neuroprune.keras.grouped_conv import CONV_RULES
    from neuroprune.keras.groupnorm import GROUP_NORM_RULE
    from neuroprune.keras.layer_scale import LAYER_SCALE_RULE
    from neuroprune.keras.recurrent import RECURRENT_RULES
    from neuroprune.keras.separable import SEPARABLE_RULES

    return (*RECURRENT_RULES, GROUP_NORM_RULE, *ATTENTION_RULES.values(), *CONV_RULES.values(), LAYER_SCALE_RULE,
            BIDIRECTIONAL_RULE, *SEPARABLE_RULES)


def rule_for(class_name: str) -> LayerRule | None:
    """The rule of a layer class (``None`` for layers without prunable axes)."""
    if class_name in _BY_NAME:
        return _BY_NAME[class_name]
    if not _SUBCLASSED:
        _SUBCLASSED.update({name: rule for rule in _subclassed_rules() for name in rule.class_names})
    return _SUBCLASSED.get(class_name)


def weight_names(layer: Any) -> list[str]:
    """Unique names of a layer's weights: the variable names (``kernel``, ``bias``, ...), or, where
    sublayers repeat them (``MultiHeadAttention``), the last two parts of the path (``query/kernel``)."""
    if type(layer).__name__ == "Bidirectional":  # forward/kernel, backward/kernel, ...
        from neuroprune.keras.bidirectional import bidirectional_weight_names

        return bidirectional_weight_names(layer)
    names = [w.name for w in layer.weights]
    if len(set(names)) == len(names):
        return names
    return ["/".join(w.path.split("/")[-2:]) for w in layer.weights]


def weights_by_name(layer: Any) -> dict[str, np.ndarray]:
    """A layer's weights as numpy arrays keyed by :func:`weight_names` (``kernel``, ``bias``, ...)."""
    return dict(zip(weight_names(layer), layer.get_weights()))


def set_weights_by_name(layer: Any, arrays: dict[str, np.ndarray]) -> None:
    """Set a layer's weights from arrays keyed by :func:`weight_names` (in order where the names are
    auto-numbered, ``variable_18``, and differ between a layer and its rebuilt copy)."""
    names = weight_names(layer)
    layer.set_weights([arrays[name] for name in names] if set(names) == set(arrays) else list(arrays.values()))
