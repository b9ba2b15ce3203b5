"""Keras ``Bidirectional`` recurrent layers: the hidden units of each direction, and the input features.

The wrapper holds a forward and a backward LSTM / GRU / SimpleRNN whose weights share their names
(``kernel``, ``recurrent_kernel``, ``bias``); :func:`bidirectional_weight_names` tells them apart by
the sublayer that owns them: ``forward/kernel``, ..., ``backward/bias``. Axes: ``forward_out`` and
``backward_out`` (the hidden units of each direction, sliced gate block by gate block as in
:mod:`neuroprune.keras.recurrent`) and ``in`` (the rows of both kernels). With ``merge_mode="concat"``
the output channels are [forward units, backward units], two independent groups; ``"sum"``,
``"ave"`` and ``"mul"`` tie forward unit ``j`` to backward unit ``j`` (one group); ``None`` returns
the two directions as two outputs. Returned states carry their direction's units. Stateful layers,
initial states given as tensors and inner layers other than LSTM / GRU / SimpleRNN stay frozen.

Example:
    >>> import numpy as np
    >>> arrays = {f"{d}/{n}": np.zeros(s) for d in ("forward", "backward")
    ...           for n, s in (("kernel", (3, 12)), ("recurrent_kernel", (3, 12)), ("bias", (12,)))}
    >>> sliced = BIDIRECTIONAL_RULE.slice_weights("backward_out", arrays, np.array([0, 2]))
    >>> sliced["backward/recurrent_kernel"].shape, sliced["forward/recurrent_kernel"].shape
    ((2, 8), (3, 12))
    >>> rule = BIDIRECTIONAL_RULE.for_weights({n: a.shape for n, a in arrays.items()})
    >>> [view.rows(arrays[view.name]).shape for view in rule.incoming("forward_out")]   # LSTM: 4 gates
    [(3, 12), (3, 12)]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from neuroprune.keras.layers import LayerRule, RowsView
from neuroprune.keras.recurrent import GATES, RecurrentRule, _by_unit, _first_dim_rows, _frozen_reason, _state_count

DIRECTIONS = ("forward", "backward")
#: the wrapper's config entry that holds each direction's layer
_CONFIG_ENTRY = {"forward": "layer", "backward": "backward_layer"}
_TIED_MERGES = ("sum", "ave", "mul")
_NAMES = ("kernel", "recurrent_kernel", "bias")


def bidirectional_weight_names(layer: Any) -> list[str]:
    """``forward/kernel``, ..., ``backward/bias``: each weight named after the direction that owns it."""
    owner = {id(w): direction for direction in DIRECTIONS for w in getattr(layer, f"{direction}_layer").weights}
    return [f"{owner[id(w)]}/{w.name}" for w in layer.weights]


def _gates(recurrent_kernel_shape: tuple[int, ...]) -> int:
    return int(recurrent_kernel_shape[-1]) // int(recurrent_kernel_shape[0])


def _direction(axis: str) -> str | None:
    return axis.removesuffix("_out") if axis in ("forward_out", "backward_out") else None


@dataclass(frozen=True)
class BidirectionalRule(LayerRule):
    """Axes ``forward_out``, ``backward_out`` and ``in`` of a ``Bidirectional`` (see the module docstring)."""

    gates: tuple[int, int] = (1, 1)  # gate blocks of the forward and backward layers, set by :meth:`for_weights`

    def for_weights(self, shapes: dict[str, tuple[int, ...]]) -> LayerRule:
        return replace(self, gates=tuple(_gates(shapes[f"{d}/recurrent_kernel"]) for d in DIRECTIONS))

    def _per_direction(self, method: str, axis: str, arrays: dict[str, np.ndarray], positions: np.ndarray):
        direction = _direction(axis)
        if direction is None:
            return getattr(super(), method)(axis, arrays, positions)
        prefix = f"{direction}/"
        own = {name.removeprefix(prefix): array for name, array in arrays.items() if name.startswith(prefix)}
        inner = RecurrentRule((), {}, gates=_gates(np.shape(own["recurrent_kernel"])))
        edited = getattr(inner, method)("out", own, positions)
        return {**arrays, **{prefix + name: array for name, array in edited.items()}}

    def slice_weights(self, axis: str, arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
        return self._per_direction("slice_weights", axis, arrays, keep)

    def zero_weights(self, axis: str, arrays: dict[str, np.ndarray], removed: np.ndarray) -> dict[str, np.ndarray]:
        return self._per_direction("zero_weights", axis, arrays, removed)

    def resize_config(self, config: dict[str, Any], axis: str, size: int) -> None:
        for direction in DIRECTIONS:  # built from the shapes that reach them, not the serialised ones
            (config.get(_CONFIG_ENTRY[direction]) or {}).pop("build_config", None)
        direction = _direction(axis)
        if direction is not None:
            config[_CONFIG_ENTRY[direction]]["config"]["units"] = size

    def incoming(self, axis: str, kernel_shape: tuple[int, ...] = ()) -> list[RowsView]:
        direction = _direction(axis)
        if direction is None:
            return []
        gates = self.gates[DIRECTIONS.index(direction)]
        return [RowsView(f"{direction}/kernel", _by_unit(gates), input_axis="in",
                         input_columns=lambda per_input: np.tile(np.asarray(per_input), gates)),
                RowsView(f"{direction}/recurrent_kernel", _by_unit(gates))]

    def outgoing(self, axis: str) -> list[RowsView]:
        direction = _direction(axis)
        if direction is not None:
            return [RowsView(f"{direction}/recurrent_kernel", _first_dim_rows)]
        return [RowsView(f"{d}/kernel", _first_dim_rows) for d in DIRECTIONS] if axis == "in" else []


BIDIRECTIONAL_RULE = BidirectionalRule(
    ("Bidirectional",),
    {"forward_out": {"forward/recurrent_kernel": 0}, "backward_out": {"backward/recurrent_kernel": 0},
     "in": {"forward/kernel": 0, "backward/kernel": 0}},
    {"forward_out": None, "backward_out": None, "in": None}, observed="in")


def _layers(config: dict[str, Any]) -> dict[str, dict]:
    forward = config.get("layer") or {}
    return {"forward": forward, "backward": config.get("backward_layer") or forward}


def _reason(call: Any) -> str:
    layers = _layers(call.config)
    kinds = sorted({entry.get("class_name", "?") for entry in layers.values()} - set(GATES))
    if kinds:
        return f"Bidirectional of {', '.join(kinds)} is not supported (LSTM, GRU and SimpleRNN are)"
    return _frozen_reason(dataclasses.replace(call, config=layers["forward"].get("config", {})))


def propagate_bidirectional(ids: Any, call: Any) -> list[np.ndarray | None]:
    """Channel flow through a ``Bidirectional`` call: ``in`` follows the producer, each direction's
    hidden units are a producer axis; the outputs follow ``merge_mode`` (see the module docstring)."""
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
    units = {d: ids.producer_axis(call.path, f"{d}_out", int(layers[d].get("config", {}).get("units", 1)))
             for d in DIRECTIONS}
    forward, backward = units["forward"], units["backward"]
    if reason:
        ids.freeze(forward, f"{call.path}: {reason}")
        ids.freeze(backward, f"{call.path}: {reason}")
    merge = call.config.get("merge_mode", "concat")
    if merge in _TIED_MERGES:
        ids.couple(forward, backward)
        outputs = [forward]
    else:
        outputs = [forward, backward] if merge is None else [np.concatenate([forward, backward])]
    states = _state_count(layers["forward"].get("class_name", ""), layers["forward"].get("config", {}))
    return outputs + [forward] * states + [backward] * states
