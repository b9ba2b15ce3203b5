"""im2col on numpy: the input patches a Keras convolution multiplies by its kernel, as rows.

A ``ConvND`` layer computes, at every output position, ``patch @ kernel.reshape(-1, filters) + bias``
where ``patch`` is the window of its input under the kernel, flattened in the kernel's own order
(kernel positions first, input channels last). :func:`conv_patches` builds those rows for any kernel
size, strides, dilation and padding (``"valid"``, ``"same"`` the way Keras pads it: the extra row
after; ``"causal"`` for Conv1D), in either data format, from a strided view of the (padded) input:
only the rows asked for are copied, so a caller can sample positions without ever holding all
patches. Pure numpy, so it does not depend on the Keras backend.

Example:
    >>> import numpy as np
    >>> x = np.arange(2 * 5 * 3, dtype=np.float64).reshape(2, 5, 3)  # (batch, steps, channels)
    >>> spec = ConvSpec(kernel=(3,), strides=(2,), dilation=(1,), padding="same")
    >>> spec.output_shape((5,))
    (3,)
    >>> conv_patches(x, spec).shape  # (batch * 3 positions, 3 kernel positions * 3 channels)
    (6, 9)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from neuroprune.core.errors import PlanError

PADDINGS = ("valid", "same", "causal")


@dataclass(frozen=True)
class ConvSpec:
    """How a convolution slides over its input: kernel size, strides, dilation per spatial axis, padding."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: str = "valid"
    channels_first: bool = False

    @classmethod
    def of(cls, layer: Any) -> ConvSpec:
        """The spec of a Keras ``Conv1D``/``Conv2D``/``Conv3D`` layer (from its config)."""
        config = layer.get_config()
        rank = len(config["kernel_size"])

        def per_axis(value: Any) -> tuple[int, ...]:
            return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * rank

        spec = cls(tuple(config["kernel_size"]), per_axis(config["strides"]), per_axis(config.get("dilation_rate", 1)),
                   str(config.get("padding", "valid")).lower(), config.get("data_format") == "channels_first")
        if spec.padding not in PADDINGS:
            raise PlanError(f"{layer.name}: padding {spec.padding!r} is not one of {PADDINGS}")
        return spec

    def span(self, axis: int) -> int:
        """Input positions one window covers along ``axis`` (the dilated kernel)."""
        return (self.kernel[axis] - 1) * self.dilation[axis] + 1

    def pads(self, size: int, axis: int) -> tuple[int, int]:
        """(before, after) zeros added along ``axis`` of an input ``size`` long."""
        if self.padding == "valid":
            return 0, 0
        if self.padding == "causal":
            return self.span(axis) - 1, 0
        out = -(-size // self.strides[axis])
        total = max((out - 1) * self.strides[axis] + self.span(axis) - size, 0)
        return total // 2, total - total // 2

    def output_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """The output's spatial shape for an input of spatial shape ``spatial``."""
        return tuple((size + sum(self.pads(size, axis)) - self.span(axis)) // self.strides[axis] + 1
                     for axis, size in enumerate(spatial))


def _windows(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """A view (batch, *output positions, channels, *kernel positions) of channels-last ``x``."""
    spatial = tuple(range(1, x.ndim - 1))
    pads = [(0, 0)] + [spec.pads(x.shape[axis], axis - 1) for axis in spatial] + [(0, 0)]
    if any(p != (0, 0) for p in pads):
        x = np.pad(x, pads)
    view = sliding_window_view(x, tuple(spec.span(a - 1) for a in spatial), axis=spatial)
    strided = (slice(None),) + tuple(slice(None, None, s) for s in spec.strides) + (slice(None),)
    dilated = tuple(slice(None, None, d) for d in spec.dilation)
    return view[strided + dilated]


def conv_patches(x: np.ndarray, spec: ConvSpec, rows: np.ndarray | None = None) -> np.ndarray:
    """Patches of ``x`` (batch, *spatial, channels), (positions, kernel positions * channels), in the
    order of ``kernel.reshape(-1, filters)``; ``rows`` picks positions (indices into batch * output
    positions, row-major) and only those are copied."""
    if spec.channels_first:
        x = np.moveaxis(x, 1, -1)
    windows = _windows(x, spec)
    leading = windows.shape[:x.ndim - 1]
    if rows is not None:
        windows = windows[np.unravel_index(np.asarray(rows, dtype=np.int64), leading)]
    else:
        windows = windows.reshape(math.prod(leading), *windows.shape[len(leading):])
    # (n, channels, *kernel) -> (n, *kernel, channels): the kernel's (k..., in) order
    return np.moveaxis(windows, 1, -1).reshape(windows.shape[0], -1)


def positions(x: np.ndarray, spec: ConvSpec) -> int:
    """How many rows :func:`conv_patches` gives for ``x``: batch times output positions."""
    spatial = x.shape[2:] if spec.channels_first else x.shape[1:-1]
    return x.shape[0] * math.prod(spec.output_shape(tuple(spatial)))


__all__ = ["ConvSpec", "conv_patches", "positions"]
