"""One streaming pass over calibration batches that gathers what every criterion needs, for Keras.

The same sums as the torch side (:class:`~neuroprune.core.statistics.Statistics`), as numpy
arrays: float64 sums, int64 counts. Activations are the inputs of the layers that read a group
(Dense and Conv inputs, channels last), taken with a probe sub-model; gradients come from
:func:`~neuroprune.keras.gradients.loss_and_gradients`. The model is called with
``training=False`` and left as found; activations are never stored.

Example:
    >>> import keras, numpy as np
    >>> from neuroprune.keras.graph import discover
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(2, name="b")])
    >>> loss = lambda y, p: keras.ops.mean(keras.ops.square(p - y))
    >>> batches = [(np.ones((16, 4), "float32"), np.zeros((16, 2), "float32"))]
    >>> stats = collect_statistics(model, discover(model), batches, loss, gradients=True, progress=False)
    >>> stats.axes[("b", "in")].act_count.shape, stats.axes[("b", "in")].act_count.dtype, stats.axes[("a", "out")].grad_abs.dtype
    ((8,), dtype('int64'), dtype('float64'))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from neuroprune.core.errors import DataError, NonFiniteError
from neuroprune.core.groups import DependencyGraph
from neuroprune.core.statistics import Statistics
from neuroprune.keras.attention import HeadActivations
from neuroprune.keras.gradients import LossFn, loss_and_gradients
from neuroprune.keras.layers import rule_for, weight_names
from neuroprune.keras.paths import layer_at, leaf_layers
from neuroprune.keras.probe import LayerInputs


def _add(current: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    return value if current is None else current + value


def _members(model: Any, graph: DependencyGraph) -> list[tuple[str, str, Any]]:
    """(path, axis, rule) for every layer axis a group touches."""
    seen, found = set(), []
    for group in graph.groups:
        for member in group.members:
            key = (member.path, member.axis)
            rule = rule_for(graph.module_types.get(member.path, ""))
            if key not in seen and rule is not None:
                seen.add(key)
                found.append((member.path, member.axis, rule))
    return found


def _record_activations(stats: Statistics, path: str, values: list[np.ndarray], threshold: float, gram: bool) -> None:
    entry = stats.axis(path, "in")
    for x in values:
        rows = x.reshape(-1, x.shape[-1])
        entry.act_count = _add(entry.act_count, (rows > threshold).sum(axis=0, dtype=np.int64))
        entry.act_abs = _add(entry.act_abs, np.abs(rows).sum(axis=0, dtype=np.float64))
        entry.act_sum = _add(entry.act_sum, rows.sum(axis=0, dtype=np.float64))
        entry.act_sq = _add(entry.act_sq, np.square(rows, dtype=np.float64).sum(axis=0))
        entry.act_n += float(rows.shape[0])
        if gram:
            extended = np.concatenate([rows.astype(np.float64), np.ones((len(rows), 1))], axis=1)
            entry.gram = _add(entry.gram, extended.T @ extended)


def _record_gradients(stats: Statistics, model: Any, members, grads: dict[tuple[str, str], np.ndarray],
                      per_weight: bool) -> None:
    for path, axis, rule in members:
        entry = stats.axis(path, axis)
        layer = layer_at(model, path)
        weights = {name: w for name, w in zip(weight_names(layer), layer.weights) if w.trainable}
        rule = rule.for_weights({name: tuple(w.shape) for name, w in zip(weight_names(layer), layer.weights)})
        for view in rule.incoming(axis, tuple(weights["kernel"].shape) if "kernel" in weights else ()):
            grad = grads.get((path, view.name))
            if grad is None:
                continue
            rows = np.abs(view.rows(grad))
            entry.grad_abs = _add(entry.grad_abs, rows.sum(axis=1, dtype=np.float64))
            entry.grad_numel = _add(entry.grad_numel, np.full(rows.shape[0], rows.shape[1], dtype=np.int64))
            if per_weight:
                key = (path, view.name)
                stats.weight_grad_abs[key] = _add(stats.weight_grad_abs.get(key), rows.astype(np.float32))  # as rows
        for view in rule.outgoing(axis):
            grad = grads.get((path, view.name))
            if grad is None:
                continue
            value = np.asarray(weights[view.name].numpy() if hasattr(weights[view.name], "numpy")
                               else weights[view.name], dtype=np.float64)
            entry.taylor = _add(entry.taylor, view.rows(value * grad).sum(axis=1, dtype=np.float64))


def _variable_names(model: Any) -> list[tuple[str, str] | None]:
    """(layer path, weight name) of each of ``model.trainable_variables``."""
    owner = {id(w): (path, name) for path, layer in leaf_layers(model)
             for name, w in zip(weight_names(layer), layer.weights)}
    return [owner.get(id(v)) for v in model.trainable_variables]


def collect_statistics(model: Any, graph: DependencyGraph, batches: Iterable[Any], loss_fn: LossFn, *,
                       activations: bool = True, gradients: bool = False, per_weight: bool = False,
                       gram: bool = False, threshold: float = 0.0, progress: bool = True,
                       desc: str = "scoring") -> Statistics:
    """Gather activation and gradient statistics for every group of ``graph``.

    Args:
        batches: ``(x, y)`` pairs of numpy arrays.
        loss_fn: ``loss_fn(y_true, y_pred)``, written with ``keras.ops`` (used when ``gradients``).
        gram: also sum ``[x, 1]^T [x, 1]`` over the inputs of the Dense layers that read a group.
    """
    stats = Statistics(threshold=threshold)
    members = _members(model, graph)
    observed = {path for path, axis, rule in members if rule.observed == axis}
    heads = HeadActivations(model, graph, required=activations and not per_weight) if activations else None
    paths = observed | (heads.paths if heads is not None else set())
    probe = LayerInputs(model, paths) if (activations or gram) and paths else None
    names = _variable_names(model) if gradients else []
    total = len(batches) if hasattr(batches, "__len__") else None
    for index, (x, y) in enumerate(tqdm(batches, total=total, desc=desc, disable=not progress, leave=False)):
        if probe is not None:
            for path, values in probe(x).items():
                if heads is not None and path in heads.paths:  # MultiHeadAttention: per-head outputs
                    heads.record(stats, path, values, threshold)
                if path in observed:
                    _record_activations(stats, path, values, threshold, gram and graph.module_types[path] == "Dense")
        if gradients:
            loss, grads = loss_and_gradients(model, loss_fn, x, y)
            if not np.isfinite(loss):
                raise NonFiniteError(f"loss is {loss} on calibration batch {index}")
            by_name = {name: grad for name, grad in zip(names, grads) if name is not None}
            bad = [f"{path}.{weight}" for (path, weight), grad in by_name.items() if not np.isfinite(grad).all()]
            if bad:
                raise NonFiniteError(f"non-finite gradient in {bad[0]} on calibration batch {index}")
            _record_gradients(stats, model, members, by_name, per_weight)
        stats.batches += 1
    if stats.batches == 0:
        raise DataError("calibration data is empty: at least one batch is needed to score neurons")
    return stats
