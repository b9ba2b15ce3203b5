"""Keras ``Bidirectional`` recurrent layers: hidden units (both directions) and input features.

The wrapper holds a forward and a backward LSTM / GRU / SimpleRNN whose weights share their names
(``kernel``, ``recurrent_kernel``, ``bias``); :func:`bidirectional_weight_names` tells them apart by
the sublayer that owns them: ``forward/kernel``, ..., ``backward/bias``. Keras requires both
directions to have one width (``Bidirectional.compute_output_shape`` takes the forward layer's for
both, in every ``merge_mode``), so hidden unit ``j`` of the forward layer and unit ``j`` of the
backward layer are one neuron: axis ``out`` slices both layers gate block by gate block, as in
:mod:`neuroprune.keras.recurrent` (the two layers may differ in type: gate counts are per layer),
and axis ``in`` the rows of both kernels. The output channels are [forward units, backward units]
with ``merge_mode="concat"`` (the unit's id twice), the units themselves with ``"sum"``, ``"ave"``,
``"mul"``, two outputs with ``None``; returned states carry the units too. Stateful layers, initial
states given as tensors and inner layers other than LSTM / GRU / SimpleRNN stay frozen.

Example:
    >>> import numpy as np
    >>> arrays = {f"{d}/{n}": np.zeros(s) for d in ("forward", "backward")
    ...           for n, s in (("kernel", (3, 12)), ("recurrent_kernel", (3, 12)), ("bias", (12,)))}
    >>> sliced = BIDIRECTIONAL_RULE.slice_weights("out", arrays, np.array([0, 2]))
    >>> sliced["backward/recurrent_kernel"].shape, sliced["forward/kernel"].shape
    ((2, 8), (3, 8))
    >>> rule = BIDIRECTIONAL_RULE.for_weights({n: a.shape for n, a in arrays.items()})
    >>> [(view.name, view.rows(arrays[view.name]).shape) for view in rule.incoming("out")][:2]   # LSTM: 4 gates
    [('forward/kernel', (3, 12)), ('forward/recurrent_kernel', (3, 12))]
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from neuroprune.keras.layers import LayerRule, RowsView
from neuroprune.keras.recurrent import GATES, RecurrentRule, _by_unit, _first_dim_rows, _frozen_reason, _state_count

DIRECTIONS = ("forward", "backward")
#: the wrapper's config entry that holds each direction's layer
_CONFIG_ENTRY = {"forward": "layer", "backward": "backward_layer"}


def bidirectional_weight_names(layer: Any) -> list[str]:
    """``forward/kernel``, ..., ``backward/bias``: each weight named after the direction that owns it."""
    owner = {id(w): direction for direction in DIRECTIONS for w in getattr(layer, f"{direction}_layer").weights}
    return [f"{owner[id(w)]}/{w.name}" for w in layer.weights]


def _gates(recurrent_kernel_shape: tuple[int, ...]) -> int:
    return int(recurrent_kernel_shape[-1]) // int(recurrent_kernel_shape[0])


@dataclass(frozen=True)
class BidirectionalRule(LayerRule):
    """Axes ``out`` (both directions' units) and ``in`` of a ``Bidirectional`` (see the module docstring)."""

    gates: tuple[int, int] = (1, 1)  # gate blocks of the forward and backward layers, set by :meth:`for_weights`

    def for_weights(self, shapes: dict[str, tuple[int, ...]]) -> LayerRule:
        return replace(self, gates=tuple(_gates(shapes[f"{d}/recurrent_kernel"]) for d in DIRECTIONS))

    def _per_direction(self, method: str, axis: str, arrays: dict[str, np.ndarray], positions: np.ndarray):
        if axis != "out":
            return getattr(super(), method)(axis, arrays, positions)
        out = dict(arrays)
        for direction in DIRECTIONS:
            prefix = f"{direction}/"
            own = {name.removeprefix(prefix): array for name, array in arrays.items() if name.startswith(prefix)}
            inner = RecurrentRule((), {}, gates=_gates(np.shape(own["recurrent_kernel"])))
            out.update({prefix + name: array for name, array in getattr(inner, method)("out", own, positions).items()})
        return out

    def slice_weights(self, axis: str, arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
        return self._per_direction("slice_weights", axis, arrays, keep)

    def zero_weights(self, axis: str, arrays: dict[str, np.ndarray], removed: np.ndarray) -> dict[str, np.ndarray]:
        return self._per_direction("zero_weights", axis, arrays, removed)

    def resize_config(self, config: dict[str, Any], axis: str, size: int) -> None:
        for direction in DIRECTIONS:  # built from the shapes that reach them, not the serialised ones
            entry = config.get(_CONFIG_ENTRY[direction]) or {}
            entry.pop("build_config", None)
            if axis == "out" and entry:
                entry["config"]["units"] = size

    def incoming(self, axis: str, kernel_shape: tuple[int, ...] = ()) -> list[RowsView]:
        if axis != "out":
            return []
        views = []
        for direction, gates in zip(DIRECTIONS, self.gates):
            views += [RowsView(f"{direction}/kernel", _by_unit(gates), input_axis="in",
                               input_columns=functools.partial(_tiled, gates=gates)),
                      RowsView(f"{direction}/recurrent_kernel", _by_unit(gates))]
        return views

    def outgoing(self, axis: str) -> list[RowsView]:
        if axis == "out":
            return [RowsView(f"{d}/recurrent_kernel", _first_dim_rows) for d in DIRECTIONS]
        return [RowsView(f"{d}/kernel", _first_dim_rows) for d in DIRECTIONS] if axis == "in" else []


def _tiled(per_input: np.ndarray, gates: int) -> np.ndarray:
    return np.tile(np.asarray(per_input), gates)


BIDIRECTIONAL_RULE = BidirectionalRule(
    ("Bidirectional",),
    {"out": {"forward/recurrent_kernel": 0, "backward/recurrent_kernel": 0},
     "in": {"forward/kernel": 0, "backward/kernel": 0}},
    {"out": None, "in": None}, observed="in")


def _layers(config: dict[str, Any]) -> dict[str, dict]:
    forward = config.get("layer") or {}
    return {"forward": forward, "backward": config.get("backward_layer") or forward}


def _reason(call: Any) -> str:
    layers = _layers(call.config)
    kinds = sorted({entry.get("class_name", "?") for entry in layers.values()} - set(GATES))
    if kinds:
        return f"Bidirectional of {', '.join(kinds)} is not supported (LSTM, GRU and SimpleRNN are)"
    widths = {entry.get("config", {}).get("units") for entry in layers.values()}
    if len(widths) > 1:
        return "its forward and backward layers differ in width (Keras gives both the forward layer's shape)"
    return _frozen_reason(dataclasses.replace(call, config=layers["forward"].get("config", {})))


def propagate_bidirectional(ids: Any, call: Any) -> list[np.ndarray | None]:
    """Channel flow through a ``Bidirectional`` call: ``in`` follows the producer, the hidden units (of
    both directions) are one producer axis; the outputs follow ``merge_mode`` (see the module docstring)."""
    reason = _reason(call)
    layers = _layers(call.config)
    if not set(GATES) >= {entry.get("class_name") for entry in layers.values()}:
        for flow in call.inputs:
            if flow is not None:
                ids.freeze(flow, f"{call.path}: {reason}")
        return [None] * 6  # at most two outputs and two states per direction
    flow = call.inputs[0]
    sequence = flow is not None and call.shapes[0] is not None and len(call.shapes[0]) == 3
    for extra in call.inputs[1:] if sequence else call.inputs:
        if extra is not None:
            ids.freeze(extra, f"{call.path}: {reason}")
    if sequence:
        ids.bind_axis(call.path, "in", flow)
    hidden = ids.producer_axis(call.path, "out", int(layers["forward"].get("config", {}).get("units", 1)))
    if reason:
        ids.freeze(hidden, f"{call.path}: {reason}")
    merge = call.config.get("merge_mode", "concat")
    if merge in (None, "concat"):  # [forward units, backward units]: the same neurons twice
        outputs = [hidden, hidden] if merge is None else [np.concatenate([hidden, hidden])]
    else:
        outputs = [hidden]
    states = _state_count(layers["forward"].get("class_name", ""), layers["forward"].get("config", {}))
    return outputs + [hidden] * (2 * states)
