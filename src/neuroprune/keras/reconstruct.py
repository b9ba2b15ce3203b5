"""Retrain-free recovery for Keras: re-fit the layers that read removed channels by least squares.

For every Dense layer (and every 1x1, stride-1, ungrouped channels-last Conv1D/2D/3D, which is a
Dense over positions) that lost input channels, the kernel rows of the kept inputs and the bias are
re-fitted so that the layer's pre-activation output on the kept inputs of the pruned (masked)
model reproduces the pre-activation output of the model before the step:
``min ||X_kept W + b - (X_before K_before + b_before)||^2 + ridge``. Layer inputs come from probe
sub-models (:mod:`~neuroprune.keras.probe`), the normal equations are summed in float64 and solved
by Cholesky (:class:`neuroprune.core.least_squares.NormalEquations`, the torch side's maths).
Layers are fitted in forward order, so each fit sees the earlier fits. Other consumers (wider
convolutions, recurrent and attention layers) are left as they are.

Example:
    >>> import keras, numpy as np
    >>> from neuroprune.keras.masks import apply_masks
    >>> from neuroprune.keras.surgery import clone
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu", name="a"),
    ...                           keras.layers.Dense(3, name="b")])
    >>> before, keep = clone(model), {"a": {"out": np.arange(5)}, "b": {"in": np.arange(5)}}
    >>> _ = apply_masks(model, keep)
    >>> batches = [(np.random.default_rng(0).normal(size=(64, 4)).astype("float32"), None)]
    >>> reconstruct(model, before, keep, batches, progress=False)
    ['b']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from neuroprune.core.least_squares import NormalEquations
from neuroprune.keras.layers import set_weights_by_name, weights_by_name
from neuroprune.keras.paths import leaf_layers
from neuroprune.keras.probe import LayerInputs

MAX_ROWS_PER_BATCH = 8192
CONV_CLASSES = ("Conv1D", "Conv2D", "Conv3D")


def reconstructable(layer: Any) -> bool:
    """Dense, or a convolution that is a Dense over positions (1x1 kernel, stride 1, one group, channels last)."""
    kind = type(layer).__name__
    if kind == "Dense":
        return True
    if kind not in CONV_CLASSES:
        return False
    config = layer.get_config()
    return (all(k == 1 for k in config["kernel_size"]) and all(s == 1 for s in config["strides"])
            and config.get("groups", 1) == 1 and config.get("data_format", "channels_last") == "channels_last")


def _rows(values: list[np.ndarray]) -> np.ndarray:
    """Every call's input of a layer as rows (positions x channels)."""
    return np.concatenate([v.reshape(-1, v.shape[-1]) for v in values])


def _pre_activation(x: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    kernel = arrays["kernel"].reshape(-1, arrays["kernel"].shape[-1]).astype(np.float64)
    out = x.astype(np.float64) @ kernel
    return out + arrays["bias"] if "bias" in arrays else out


def refit_layer(path: str, layer: Any, kept: Any, removed_out: np.ndarray,
                batches: list[Any], student_probe: LayerInputs, before_probe: LayerInputs, *,
                ridge: float = 1e-3, seed: int = 0) -> None:
    """Least-squares re-fit of ``layer`` (at ``path`` of the student) on its ``kept`` input channels."""
    kept = np.asarray(kept, dtype=np.int64)
    arrays_before = weights_by_name(before_probe.layers[path])
    equations = NormalEquations(bias="bias" in arrays_before)
    rng = np.random.default_rng(seed)
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        rows_student = _rows(student_probe(x)[path])
        rows_before = _rows(before_probe(x)[path])
        if len(rows_student) > MAX_ROWS_PER_BATCH:
            picked = rng.choice(len(rows_student), MAX_ROWS_PER_BATCH, replace=False)
            rows_student, rows_before = rows_student[picked], rows_before[picked]
        equations.add(rows_student[:, kept], _pre_activation(rows_before, arrays_before))
    weight, bias = equations.solve(ridge, what=f"reconstruction of {path}")
    arrays = weights_by_name(layer)
    kernel = arrays["kernel"].reshape(-1, arrays["kernel"].shape[-1]).copy()
    kernel[kept] = weight.astype(kernel.dtype)
    kernel[:, removed_out] = 0  # outputs this step removes stay masked
    arrays["kernel"] = kernel.reshape(arrays["kernel"].shape)
    if bias is not None:
        arrays["bias"] = bias.astype(arrays["bias"].dtype)
        arrays["bias"][removed_out] = 0
    set_weights_by_name(layer, arrays)


class _Probe(LayerInputs):
    """A probe that also remembers the layers it observes."""

    def __init__(self, model: Any, paths: set[str]):
        super().__init__(model, paths)
        self.layers = dict((path, layer) for path, layer in leaf_layers(model) if path in paths)


def reconstruct(student: Any, before: Any, keep: Mapping[str, Mapping[str, Any]], batches: list[Any], *,
                ridge: float = 1e-3, progress: bool = True) -> list[str]:
    """Re-fit, in forward order, every reconstructable layer of ``student`` whose inputs lost channels.

    Args:
        student: the masked model (same shapes as ``before``), changed in place.
        before: the model before this step (its outputs are the target).
        keep: layer path -> axis -> kept positions (the ``"in"`` axes are used; ``"out"`` positions
            removed from a re-fitted layer stay zero).
        batches: calibration batches, ``(x, y)`` pairs or inputs.

    Returns:
        The paths of the re-fitted layers.
    """
    targets = [(path, layer) for path, layer in leaf_layers(student)
               if "in" in keep.get(path, {}) and reconstructable(layer)]
    if not targets:
        return []
    paths = {path for path, _ in targets}
    student_probe, before_probe = _Probe(student, paths), _Probe(before, paths)
    for path, layer in tqdm(targets, desc="reconstructing", disable=not progress, leave=False):
        units = layer.get_weights()[0].shape[-1]
        removed_out = np.setdiff1d(np.arange(units), np.asarray(keep[path].get("out", np.arange(units)), dtype=np.int64))
        refit_layer(path, layer, keep[path]["in"], removed_out, batches, student_probe, before_probe,
                    ridge=ridge)
    return [path for path, _ in targets]


__all__ = ["reconstruct", "reconstructable", "refit_layer"]
