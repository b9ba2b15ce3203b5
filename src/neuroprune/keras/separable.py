"""Keras depthwise and separable convolutions: ``DepthwiseConv1D/2D`` (any depth multiplier) and
``SeparableConv1D/2D``, as layer rules and channel flow.

A depthwise kernel is ``(k..., in, dm)``: output channel ``c * dm + m`` filters input channel ``c``
alone, so the layer cannot drop a single output; removing input channel ``c`` removes its ``dm``
outputs. Its one axis ``features`` (the input channels) slices the kernel's ``in`` dimension and
the bias blocks ``c * dm .. c * dm + dm - 1``; the output flow repeats each input id ``dm`` times.

A separable convolution is a depthwise kernel ``(k..., in, dm)`` followed by a pointwise kernel
``(1..., in * dm, filters)`` and a bias ``(filters,)``: axis ``out`` (the filters) is a pointwise
column and a bias entry; axis ``in`` is ``depthwise_kernel[..., c, :]`` and pointwise rows
``c * dm .. c * dm + dm - 1``. The criteria see an output as its pointwise column; an input is read
by its depthwise slice (zeroing it already silences the pointwise rows it feeds).

Example:
    >>> import numpy as np
    >>> arrays = {"depthwise_kernel": np.zeros((3, 3, 4, 2)), "pointwise_kernel": np.zeros((1, 1, 8, 5)),
    ...           "bias": np.zeros(5)}
    >>> {n: a.shape for n, a in SEPARABLE_RULE.slice_weights("in", arrays, np.array([0, 3])).items()}
    {'depthwise_kernel': (3, 3, 2, 2), 'pointwise_kernel': (1, 1, 4, 5), 'bias': (5,)}
    >>> rule = SEPARABLE_RULE.for_weights({n: a.shape for n, a in arrays.items()})
    >>> rule.incoming("out")[0].input_columns(np.arange(4)).tolist()   # pointwise row -> input channel
    [0, 0, 1, 1, 2, 2, 3, 3]
    >>> DEPTHWISE_RULE.slice_weights("features", {"kernel": np.zeros((3, 4, 2)), "bias": np.arange(8.0)},
    ...                              np.array([1, 3]))["bias"].tolist()
    [2.0, 3.0, 6.0, 7.0]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from neuroprune.keras.layers import LayerRule, RowsView, _rows_along

DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
SEPARABLE = ("SeparableConv1D", "SeparableConv2D")


def multiplied(positions: np.ndarray, depth_multiplier: int) -> np.ndarray:
    """The ``depth_multiplier`` intermediate channels of each of ``positions`` (``c * dm + m``)."""
    positions = np.asarray(positions, dtype=np.int64)
    return (positions[:, None] * depth_multiplier + np.arange(depth_multiplier, dtype=np.int64)[None, :]).reshape(-1)


def _take(array: np.ndarray, positions: np.ndarray, dim: int) -> np.ndarray:
    return np.take(array, positions, axis=dim)


def _zero(array: np.ndarray, positions: np.ndarray, dim: int) -> np.ndarray:
    array = np.array(array, copy=True)
    index = [slice(None)] * array.ndim
    index[dim] = positions
    array[tuple(index)] = 0
    return array


@dataclass(frozen=True)
class DepthwiseRule(LayerRule):
    """``features`` of a depthwise convolution: kernel ``in`` slices and bias blocks of ``dm``."""

    def _edit(self, edit, arrays: dict[str, np.ndarray], positions: np.ndarray) -> dict[str, np.ndarray]:
        out = dict(arrays)
        multiplier = int(np.shape(arrays["kernel"])[-1])
        out["kernel"] = edit(out["kernel"], np.asarray(positions, dtype=np.int64), -2)
        if "bias" in out:
            out["bias"] = edit(out["bias"], multiplied(positions, multiplier), 0)
        return out

    def slice_weights(self, axis: str, arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
        return self._edit(_take, arrays, keep) if axis == "features" else dict(arrays)

    def zero_weights(self, axis: str, arrays: dict[str, np.ndarray], removed: np.ndarray) -> dict[str, np.ndarray]:
        return self._edit(_zero, arrays, removed) if axis == "features" else dict(arrays)


@dataclass(frozen=True)
class SeparableRule(LayerRule):
    """``out`` (filters) and ``in`` (input channels, with their ``dm`` pointwise rows) of a separable conv."""

    depth_multiplier: int = 1  # set by :meth:`for_weights`; needed to map pointwise rows onto inputs

    def for_weights(self, shapes: dict[str, tuple[int, ...]]) -> LayerRule:
        return replace(self, depth_multiplier=int(shapes["depthwise_kernel"][-1]))

    def _edit_inputs(self, edit, arrays: dict[str, np.ndarray], positions: np.ndarray) -> dict[str, np.ndarray]:
        out = dict(arrays)
        multiplier = int(np.shape(arrays["depthwise_kernel"])[-1])
        out["depthwise_kernel"] = edit(out["depthwise_kernel"], np.asarray(positions, dtype=np.int64), -2)
        out["pointwise_kernel"] = edit(out["pointwise_kernel"], multiplied(positions, multiplier), -2)
        return out

    def slice_weights(self, axis: str, arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
        if axis == "in":
            return self._edit_inputs(_take, arrays, keep)
        return super().slice_weights(axis, arrays, keep)

    def zero_weights(self, axis: str, arrays: dict[str, np.ndarray], removed: np.ndarray) -> dict[str, np.ndarray]:
        if axis == "in":
            return self._edit_inputs(_zero, arrays, removed)
        return super().zero_weights(axis, arrays, removed)

    def incoming(self, axis: str, kernel_shape: tuple[int, ...] = ()) -> list[RowsView]:
        if axis != "out":
            return []
        multiplier = self.depth_multiplier
        return [RowsView("pointwise_kernel", _rows_along(-1), input_axis="in",
                         input_columns=lambda per_input: np.repeat(np.asarray(per_input), multiplier))]

    def outgoing(self, axis: str) -> list[RowsView]:
        return [RowsView("depthwise_kernel", _rows_along(-2))] if axis == "in" else []


DEPTHWISE_RULE = DepthwiseRule(DEPTHWISE, {"features": {"kernel": -2, "bias": 0}}, {"features": None})
SEPARABLE_RULE = SeparableRule(SEPARABLE, {"out": {"pointwise_kernel": -1, "bias": 0}, "in": {"depthwise_kernel": -2}},
                               {"out": "filters", "in": None}, observed="in")
SEPARABLE_RULES: tuple[LayerRule, ...] = (DEPTHWISE_RULE, SEPARABLE_RULE)


def _freeze(ids: Any, call: Any, reason: str) -> list[None]:
    for flow in call.inputs:
        if flow is not None:
            ids.freeze(flow, f"{call.path}: {reason}")
    return [None]


def propagate_depthwise(ids: Any, call: Any) -> list[np.ndarray | None]:
    """``features`` follows the input channels; each output channel repeats its input's id ``dm`` times."""
    flow, shape = call.inputs[0], call.shapes[0]
    if call.config.get("data_format", "channels_last") not in (None, "channels_last"):
        return _freeze(ids, call, "depthwise convolution of channels_first data is not supported")
    if flow is None or shape is None:
        return _freeze(ids, call, "depthwise convolution of a tensor whose channels are not known")
    activation = str(call.config.get("activation")).lower()
    if activation in ("softmax", "log_softmax", "sparsemax"):
        return _freeze(ids, call, f"its {activation} activation mixes the channels")
    ids.bind_axis(call.path, "features", flow)
    return [np.repeat(flow, int(call.config.get("depth_multiplier", 1)))]
