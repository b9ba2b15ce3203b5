"""Masks on a Keras model: zero the weights of removed positions in place, restorably.

The weights of every touched layer are snapshotted with ``get_weights`` first; :meth:`KerasMasks.remove`
puts them back with ``set_weights`` (bit for bit), :meth:`KerasMasks.commit` keeps the zeros.
Zeroing a unit's incoming weights and every column that reads it makes the model compute what the
physically pruned model computes; a normalisation over all channels (``LayerNormalization``,
``RMSNormalization``) is also narrowed to its kept channels (:mod:`~neuroprune.keras.narrowed_norm`).

Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="fc1")])
    >>> before = model.get_layer("fc1").get_weights()
    >>> handle = apply_masks(model, {"fc1": {"out": np.array([0, 2])}})
    >>> model.get_layer("fc1").get_weights()[0][:, 1].tolist()
    [0.0, 0.0]
    >>> handle.remove()
    >>> all((a == b).all() for a, b in zip(before, model.get_layer("fc1").get_weights()))
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuroprune.keras.layers import rule_for, set_weights_by_name, weights_by_name
from neuroprune.keras.narrowed_norm import narrow, widen
from neuroprune.keras.paths import layer_at


def _forget_compiled_functions(model: Any) -> None:
    """Drop ``model``'s traced predict / test / train functions, so a narrowed ``call`` is seen."""
    for name in ("predict_function", "test_function", "train_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


class KerasMasks:
    """Zeroed positions on a model; undone bit for bit by :meth:`remove`, or made permanent by :meth:`commit`."""

    def __init__(self, model: Any, keep: dict[str, dict[str, Any]]):
        self.snapshot: dict[str, list[np.ndarray]] = {}
        self.narrowed: list[Any] = []
        self.model = model
        for path, axes in keep.items():
            layer = layer_at(model, path)
            rule = rule_for(type(layer).__name__)
            if rule is None:
                continue
            self.snapshot[path] = layer.get_weights()
            arrays = weights_by_name(layer)
            sizes = rule.axes(layer)
            for axis, kept in axes.items():
                if axis not in sizes:
                    continue
                removed = np.setdiff1d(np.arange(sizes[axis]), np.asarray(kept, dtype=np.int64))
                arrays = rule.zero_weights(axis, arrays, removed)
                if narrow(layer, kept, sizes[axis]):
                    self.narrowed.append(layer)
            set_weights_by_name(layer, arrays)
        if self.narrowed:
            _forget_compiled_functions(model)

    def remove(self) -> None:
        """Put every masked weight back as it was."""
        for path, weights in self.snapshot.items():
            layer_at(self.model, path).set_weights(weights)
        for layer in self.narrowed:
            widen(layer)
        if self.narrowed:
            _forget_compiled_functions(self.model)
        self.snapshot, self.narrowed = {}, []

    def commit(self) -> None:
        """Keep the zeros (and narrowed normalisations); forget the snapshot."""
        self.snapshot, self.narrowed = {}, []


def apply_masks(model: Any, keep: dict[str, dict[str, Any]]) -> KerasMasks:
    """Zero, in ``model``, every position that ``keep`` (path -> axis -> kept positions) drops."""
    return KerasMasks(model, keep)
