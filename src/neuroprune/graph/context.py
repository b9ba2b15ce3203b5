"""Bookkeeping while channels are followed through one forward pass.

Every channel a layer produces gets an integer *id*. Operations that tie channels together (a
residual add, a group of a grouped convolution, a GroupNorm group) *couple* ids; operations that
fix channels (model inputs and outputs, a softmax across channels, a layer left alone) *freeze*
them. After the pass, coupled ids form one neuron ("unit").

Example:
    >>> ctx = FlowContext()
    >>> a, b = ctx.new_ids(3), ctx.new_ids(3)
    >>> ctx.couple(a, b)
    >>> ctx.next_id
    6
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import UnsupportedModuleError

Flows = dict  # tensor dimension -> np.ndarray of channel ids along it


class FlowContext:
    """Ids, couplings, frozen ids and the axes of every module seen so far."""

    def __init__(self) -> None:
        self.next_id = 0
        self.edges: list[tuple[np.ndarray, np.ndarray]] = []
        self.frozen: list[tuple[np.ndarray, str]] = []
        #: (module path, axis) -> channel ids of each position, in discovery order
        self.axes: dict[tuple[str, str], np.ndarray] = {}
        self.producers: list[tuple[str, str]] = []

    # --- ids -------------------------------------------------------------------------------
    def new_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        return ids

    def concat_ids(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    def couple(self, a: np.ndarray, b: np.ndarray) -> None:
        if len(a) != len(b):
            raise UnsupportedModuleError(f"cannot tie {len(a)} channels to {len(b)} channels")
        self.edges.append((np.asarray(a), np.asarray(b)))

    def freeze(self, ids: np.ndarray, reason: str) -> None:
        self.frozen.append((np.asarray(ids), reason))

    def freeze_all(self, flows: Any, reason: str) -> None:
        """Freeze every id found in a (possibly nested) flow structure."""
        if isinstance(flows, dict):  # a flow dict (dim -> ids) or a dict of outputs (name -> flows)
            for value in flows.values():
                if isinstance(value, np.ndarray):
                    self.freeze(value, reason)
                else:
                    self.freeze_all(value, reason)
        elif isinstance(flows, (tuple, list)):
            for item in flows:
                self.freeze_all(item, reason)

    # --- module axes -----------------------------------------------------------------------
    def producer_axis(self, path: str, axis: str, size: int) -> np.ndarray:
        """Ids of the neurons a module computes; a module called twice computes the same ones."""
        key = (path, axis)
        if key not in self.axes:
            self.axes[key] = self.new_ids(size)
            self.producers.append(key)
        return self.axes[key]

    def bind_axis(self, path: str, axis: str, ids: np.ndarray) -> None:
        """Record which channels run along an axis a module reads or carries."""
        key = (path, axis)
        if key in self.axes:
            self.couple(self.axes[key], ids)
        else:
            self.axes[key] = np.asarray(ids)

    # --- common flow rules -----------------------------------------------------------------
    def spatial(self, where: str, flows: Flows) -> Flows:
        """Pooling-like operations: batch and channel dimensions pass, later ones are mixed."""
        out = {}
        for dim, ids in flows.items():
            if dim < 2:
                out[dim] = ids
            else:
                self.freeze(ids, f"{where}: channels along a pooled dimension")
        return out

    def rearrange(self, where: str, fn, value: torch.Tensor, flows: Flows, output: Any) -> Flows:
        """Follow channels through a pure re-indexing (view, flatten, permute, indexing, …).

        Runs ``fn`` on a probe tensor holding each element's position along the channel
        dimension and reads where the positions land. Positions that do not all survive (a slice
        of the channels) are frozen; a channel spread over several output dimensions cannot be
        followed and raises :class:`UnsupportedModuleError`.
        """
        if not isinstance(output, torch.Tensor):
            self.freeze_all(flows, f"{where}: re-indexing to a non-tensor")
            return {}
        out: Flows = {}
        for dim, ids in flows.items():
            shape = [1] * value.dim()
            shape[dim] = value.shape[dim]
            probe = torch.arange(value.shape[dim], dtype=torch.float64).reshape(shape).expand(value.shape).contiguous()
            landed = fn(probe)
            if not isinstance(landed, torch.Tensor) or tuple(landed.shape) != tuple(output.shape):
                self.freeze(ids, f"{where}: re-indexing changed shape unexpectedly")
                continue
            positions = landed.to(torch.int64).numpy()
            if len(np.unique(positions)) < len(ids):
                self.freeze(ids, f"{where}: only some channels are selected")
                continue
            channel_of = ids[positions]
            if len(np.unique(channel_of)) == 1:
                self.freeze(ids, f"{where}: a single channel")
                continue
            target = _single_varying_axis(channel_of)
            if target is None:
                raise UnsupportedModuleError(
                    f"{where}: a channel dimension is split across several dimensions (as in a "
                    "head split of hand-written attention); its mapping cannot be followed")
            axis, along = target
            if axis in out:
                self.freeze(ids, f"{where}: two channel dimensions merged")
                self.freeze(out.pop(axis), f"{where}: two channel dimensions merged")
                continue
            out[axis] = along
        return out


def _single_varying_axis(values: np.ndarray) -> tuple[int, np.ndarray] | None:
    """The one axis along which ``values`` change, with the values along it; else ``None``."""
    varying = [axis for axis in range(values.ndim) if not (values == values.take([0], axis=axis)).all()]
    if len(varying) != 1:
        return None
    axis = varying[0]
    index = tuple(slice(None) if a == axis else 0 for a in range(values.ndim))
    return axis, values[index]
