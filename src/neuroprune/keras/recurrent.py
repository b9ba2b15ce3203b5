"""Keras recurrent layers (LSTM, GRU, SimpleRNN): hidden units and input features, as a layer rule.

Keras keeps a recurrent layer's weights gate by gate along the last dimension: ``kernel`` is
``(in, gates * units)``, ``recurrent_kernel`` ``(units, gates * units)`` and ``bias``
``(gates * units)`` (``(2, 3 * units)`` for a GRU with ``reset_after``); the gates are i, f, c, o
for an LSTM, z, r, h for a GRU and one block for a SimpleRNN. Hidden unit ``j`` (axis ``out``)
owns column ``j`` of every gate block of the three weights and row ``j`` of ``recurrent_kernel``;
the input features (axis ``in``) are the rows of ``kernel`` and follow the producer.

Masking zeroes a removed unit's gate columns, biases and recurrent row: its own state may stay
non-zero only where ``activation(0) != 0``, and then nothing reads it (its recurrent row and the
consumers' columns are zero), so the masked layer computes what the smaller layer computes.
Stateful layers stay frozen (see :func:`propagate_recurrent`); ``Bidirectional`` wrappers have their
own rule (:mod:`neuroprune.keras.bidirectional`).

Example:
    >>> import numpy as np
    >>> rule = RECURRENT_RULES[0]                        # LSTM: 4 gate blocks
    >>> arrays = {"kernel": np.zeros((2, 12)), "recurrent_kernel": np.zeros((3, 12)), "bias": np.zeros(12)}
    >>> {name: a.shape for name, a in rule.slice_weights("out", arrays, np.array([0, 2])).items()}
    {'kernel': (2, 8), 'recurrent_kernel': (2, 8), 'bias': (8,)}
    >>> rule.incoming("out")[0].rows(arrays["kernel"]).shape   # a row per unit: its 4 gates x 2 inputs
    (3, 8)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuroprune.keras.layers import LayerRule, RowsView

#: gate blocks per recurrent layer class
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}
#: the recurrent weights that hold the gate columns of the hidden units
_GATED = ("kernel", "recurrent_kernel", "bias")


def gate_columns(gates: int, units: int, positions: np.ndarray) -> np.ndarray:
    """Column indices of ``positions`` in every gate block of a ``(..., gates * units)`` weight."""
    positions = np.asarray(positions, dtype=np.int64)
    return (np.arange(gates, dtype=np.int64)[:, None] * units + positions[None, :]).reshape(-1)


def _by_unit(gates: int) -> Callable[[np.ndarray], np.ndarray]:
    """``(rows, gates * units)`` -> ``(units, gates * rows)``: one row per unit, its gates side by side."""

    def rows(array: np.ndarray) -> np.ndarray:
        array = np.asarray(array)
        units = array.shape[-1] // gates
        return array.reshape(array.shape[0], gates, units).transpose(2, 1, 0).reshape(units, -1)

    return rows


def _first_dim_rows(array: np.ndarray) -> np.ndarray:
    return np.asarray(array).reshape(np.shape(array)[0], -1)


@dataclass(frozen=True)
class RecurrentRule(LayerRule):
    """A :class:`LayerRule` whose ``out`` axis is spread over ``gates`` column blocks."""

    gates: int = 1

    def _units(self, arrays: dict[str, np.ndarray]) -> int:
        return int(np.shape(arrays["recurrent_kernel"])[0])

    def slice_weights(self, axis: str, arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
        if axis != "out":
            return super().slice_weights(axis, arrays, keep)
        out = dict(arrays)
        columns = gate_columns(self.gates, self._units(arrays), keep)
        for name in _GATED:
            if name in out:
                out[name] = np.take(out[name], columns, axis=-1)
        out["recurrent_kernel"] = np.take(out["recurrent_kernel"], np.asarray(keep, dtype=np.int64), axis=0)
        return out

    def zero_weights(self, axis: str, arrays: dict[str, np.ndarray], removed: np.ndarray) -> dict[str, np.ndarray]:
        if axis != "out":
            return super().zero_weights(axis, arrays, removed)
        out = dict(arrays)
        columns = gate_columns(self.gates, self._units(arrays), removed)
        for name in _GATED:
            if name in out:
                array = np.array(out[name], copy=True)
                array[..., columns] = 0
                out[name] = array
        out["recurrent_kernel"][np.asarray(removed, dtype=np.int64), :] = 0
        return out

    def incoming(self, axis: str, kernel_shape: tuple[int, ...] = ()) -> list[RowsView]:
        if axis != "out":
            return []
        gates = self.gates
        return [RowsView("kernel", _by_unit(gates), input_axis="in", input_columns=lambda v: np.tile(np.asarray(v), gates)),
                RowsView("recurrent_kernel", _by_unit(gates))]

    def outgoing(self, axis: str) -> list[RowsView]:
        if axis == "in":
            return [RowsView("kernel", _first_dim_rows)]
        if axis == "out":
            return [RowsView("recurrent_kernel", _first_dim_rows)]
        return []


RECURRENT_RULES: tuple[LayerRule, ...] = tuple(
    RecurrentRule((name,), {"out": {"recurrent_kernel": 0}, "in": {"kernel": 0}}, {"out": "units", "in": None},
                  observed="in", gates=gates)
    for name, gates in GATES.items()
)


def _state_count(class_name: str, config: dict) -> int:
    """How many state tensors a recurrent layer returns besides its output."""
    if not config.get("return_state"):
        return 0
    return 2 if class_name == "LSTM" else 1


def _frozen_reason(call: Any) -> str:
    if call.config.get("stateful"):
        return "a stateful recurrent layer keeps states of its width between batches"
    if len(call.inputs) > 1:
        return "initial states (or constants) given as tensors have the recurrent layer's width"
    shape = call.shapes[0]
    if shape is None or len(shape) != 3:
        return "a recurrent layer's input is expected as (batch, time, features)"
    return ""


def propagate_recurrent(ids: Any, call: Any) -> list[np.ndarray | None]:
    """Channel flow through an LSTM / GRU / SimpleRNN call: ``in`` follows the producer, the hidden
    units are a new producer axis; the output and every returned state carry the hidden units."""
    reason = _frozen_reason(call)
    units = int(call.config["units"])
    flow = call.inputs[0]
    sequence = flow is not None and call.shapes[0] is not None and len(call.shapes[0]) == 3
    for extra in call.inputs[1:] if sequence else call.inputs:  # the features of a sequence stay prunable
        if extra is not None:
            ids.freeze(extra, f"{call.path}: {reason}")
    if sequence:
        ids.bind_axis(call.path, "in", flow)
    hidden = ids.producer_axis(call.path, "out", units)
    if reason:
        ids.freeze(hidden, f"{call.path}: {reason}")
    return [hidden] * (1 + _state_count(call.class_name, call.config))

