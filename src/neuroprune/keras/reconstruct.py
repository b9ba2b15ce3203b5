"""Retrain-free recovery for Keras: re-fit the layers that read removed channels by least squares.

For every Dense layer and every ungrouped Conv1D/2D/3D (any kernel size, strides, dilation,
padding ``"valid"``/``"same"``/``"causal"``, either data format) that lost input channels, the
kernel rows of the kept inputs and the bias are re-fitted so that the layer's pre-activation output
on the kept inputs of the pruned (masked) model reproduces the pre-activation output of the model
before the step: ``min ||X_kept W + b - (X_before K_before + b_before)||^2 + ridge``, where a
convolution's rows ``X`` are its input patches (im2col, :mod:`~neuroprune.keras.patches`; at most
``MAX_ROWS_PER_BATCH`` positions sampled per batch, only those copied). Layer inputs come from probe
sub-models (:mod:`~neuroprune.keras.probe`), the normal equations are summed in float64 over the
calibration batches and solved by Cholesky (:class:`neuroprune.core.least_squares.NormalEquations`,
the torch side's maths). Layers are fitted in forward order, so each fit sees the earlier fits.
Other consumers (depthwise and separable convolutions, whose inputs are per channel; recurrent and
attention layers) are left as they are.

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
from neuroprune.keras.patches import ConvSpec, conv_patches, positions
from neuroprune.keras.probe import LayerInputs

MAX_ROWS_PER_BATCH = 8192
CONV_CLASSES = ("Conv1D", "Conv2D", "Conv3D")


def reconstructable(layer: Any) -> bool:
    """Dense, or an ungrouped Conv1D/2D/3D (any kernel size, strides, dilation and padding)."""
    kind = type(layer).__name__
    return kind == "Dense" or (kind in CONV_CLASSES and layer.get_config().get("groups", 1) == 1)


class _Rows:
    """The rows a layer multiplies by ``kernel.reshape(-1, units)``: Dense inputs, or convolution patches."""

    def __init__(self, layer: Any):
        self.spec = ConvSpec.of(layer) if type(layer).__name__ in CONV_CLASSES else None
        self.channel_axis = 1 if self.spec is not None and self.spec.channels_first else -1

    def count(self, x: np.ndarray) -> int:
        return positions(x, self.spec) if self.spec is not None else x.size // x.shape[-1]

    def __call__(self, x: np.ndarray, picked: np.ndarray | None, channels: np.ndarray | None = None) -> np.ndarray:
        """Rows ``picked`` (all where None) of input ``x``, on its ``channels`` (all where None)."""
        if channels is not None:
            x = np.take(x, channels, axis=self.channel_axis)
        if self.spec is not None:
            return conv_patches(x, self.spec, picked)
        rows = x.reshape(-1, x.shape[-1])
        return rows if picked is None else rows[picked]


def _sample(counts: list[int], rng: np.random.Generator) -> list[np.ndarray | None]:
    """At most ``MAX_ROWS_PER_BATCH`` rows drawn over calls with ``counts`` rows: per call, its rows (None: all)."""
    total = sum(counts)
    if total <= MAX_ROWS_PER_BATCH:
        return [None] * len(counts)
    picked = np.sort(rng.choice(total, MAX_ROWS_PER_BATCH, replace=False))
    edges = np.cumsum([0, *counts])
    return [picked[(picked >= lo) & (picked < hi)] - lo for lo, hi in zip(edges[:-1], edges[1:])]


def _pre_activation(rows: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    kernel = arrays["kernel"].reshape(-1, arrays["kernel"].shape[-1]).astype(np.float64)
    out = rows.astype(np.float64) @ kernel
    return out + arrays["bias"] if "bias" in arrays else out


def refit_layer(path: str, layer: Any, kept: Any, removed_out: np.ndarray,
                batches: list[Any], student_probe: LayerInputs, before_probe: LayerInputs, *,
                ridge: float = 1e-3, seed: int = 0) -> None:
    """Least-squares re-fit of ``layer`` (at ``path`` of the student) on its ``kept`` input channels.

    The inputs are the student's rows (Dense inputs or convolution patches) on the kept channels;
    the targets, the layer's pre-activation output in the model before the step, at the same rows.
    """
    kept = np.asarray(kept, dtype=np.int64)
    arrays_before = weights_by_name(before_probe.layers[path])
    rows_of = _Rows(layer)
    equations = NormalEquations(bias="bias" in arrays_before)
    rng = np.random.default_rng(seed)
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        calls_student, calls_before = student_probe(x)[path], before_probe(x)[path]
        for student, before, picked in zip(calls_student, calls_before,
                                           _sample([rows_of.count(v) for v in calls_student], rng)):
            equations.add(rows_of(student, picked, kept), _pre_activation(rows_of(before, picked), arrays_before))
    weight, bias = equations.solve(ridge, what=f"reconstruction of {path}")
    arrays = weights_by_name(layer)
    kernel = arrays["kernel"].copy()  # (*kernel positions, inputs, units); Dense: (inputs, units)
    kernel[..., kept, :] = weight.reshape(*kernel.shape[:-2], len(kept), kernel.shape[-1]).astype(kernel.dtype)
    kernel[..., removed_out] = 0  # outputs this step removes stay masked
    arrays["kernel"] = kernel
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
