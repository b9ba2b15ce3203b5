"""Bookkeeping while channels are followed through one forward pass.

Every channel a layer produces gets an integer *id*. Operations that tie channels together (a
residual add, a group of a grouped convolution, a GroupNorm group) *couple* ids; operations that
fix channels (model inputs and outputs, a softmax across channels, a layer left alone) *freeze*
them. After the pass, coupled ids form one neuron ("unit").

A flow maps a tensor dimension to the ids along it. When one channel dimension is split across
several dimensions (the head split ``reshape(B, N, heads, head_dim)`` of hand-written
attention, the ``view(B, groups, C // groups, H, W)`` of a channel shuffle) the key is the tuple
of those dimensions and the value a *grid* of ids shaped like them. Rules that do not know grids
never see one: discovery fixes their channels first (:meth:`FlowContext.freeze_grids`).

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

from neuroprune.core.channels import ChannelIds
from neuroprune.core.errors import UnsupportedModuleError

Flows = dict  # tensor dimension (or tuple of dimensions) -> np.ndarray of channel ids along it


def _moved(grid: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(grid, axis, 0).reshape(grid.shape[axis], -1)


def key_dims(key: int | tuple[int, ...]) -> tuple[int, ...]:
    """The dimensions of a flow key: ``2 -> (2,)``, ``(1, 3) -> (1, 3)``."""
    return key if isinstance(key, tuple) else (key,)


def make_key(dims: tuple[int, ...] | list[int]) -> int | tuple[int, ...]:
    """The flow key for ``dims``: a plain int for one dimension, else the tuple."""
    dims = tuple(int(d) for d in dims)
    return dims[0] if len(dims) == 1 else dims


class FlowContext(ChannelIds):
    """Ids, couplings, frozen ids and the axes of every module seen so far (see
    :class:`~neuroprune.core.channels.ChannelIds`), plus what tracing a torch graph needs."""

    def __init__(self) -> None:
        super().__init__()
        #: the model being traced (rules that need a module look it up here); set by discovery
        self.model: Any = None
        #: ids of grids whose units are whole slices (heads, shuffle positions): safe to merge
        self.settled: list[np.ndarray] = []
        #: channels split across dimensions: (ids, where); unsettled ones are fixed at the end
        self.splits: list[tuple[np.ndarray, str]] = []
        #: flows and tensor ranks of the traced graph's nodes so far (set by discovery)
        self.node_flows: dict = {}
        self.node_ndims: dict = {}

    # --- ids -------------------------------------------------------------------------------
    def concat_ids(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    def couple(self, a: np.ndarray, b: np.ndarray) -> None:
        """Tie channels position by position; channels of different widths cannot be tied in a
        traced graph (:class:`UnsupportedModuleError`)."""
        a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
        if len(a) != len(b):
            raise UnsupportedModuleError(f"cannot tie {len(a)} channels to {len(b)} channels")
        self.edges.append((a, b))

    def freeze_grids(self, flows: Any, reason: str) -> Any:
        """``flows`` without grid entries (a channel split across dimensions); those are frozen.

        Discovery calls this before every rule and handler that does not declare
        ``grid_aware = True``.
        """
        if isinstance(flows, dict):
            kept = {}
            for key, ids in flows.items():
                if isinstance(key, tuple) and isinstance(ids, np.ndarray):
                    self.freeze(ids, reason)
                else:
                    kept[key] = ids if isinstance(ids, np.ndarray) else self.freeze_grids(ids, reason)
            return kept
        if isinstance(flows, (tuple, list)):
            return type(flows)(self.freeze_grids(item, reason) for item in flows)
        return flows

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
    def couple_along_others(self, grid: np.ndarray, axis: int) -> None:
        """Couple the ids at each position along ``axis`` across all other axes of ``grid``."""
        per_position = _moved(grid, axis)
        if per_position.shape[1] > 1:
            self.couple(np.repeat(per_position[:, :1], per_position.shape[1] - 1, axis=1), per_position[:, 1:])

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

    def settle(self, ids: np.ndarray) -> None:
        """Mark a grid's ids as grouped into whole units, so merging the grid back is safe."""
        self.settled.append(np.asarray(ids).ravel())

    def _is_settled(self, ids: np.ndarray) -> bool:
        return bool(self.settled) and bool(np.isin(np.asarray(ids).ravel(), np.concatenate(self.settled)).all())

    def freeze_unsettled_splits(self) -> None:
        """Fix the channels of every split that no head or shuffle rule made whole units of:
        the code's reshape sizes would not follow their removal."""
        done = np.concatenate(self.settled) if self.settled else np.zeros(0, dtype=np.int64)
        for ids, where in self.splits:
            loose = ids[~np.isin(ids, done)]
            if len(loose):
                self.freeze(loose, f"{where}: channels split across dimensions that are not attention heads")

    def rearrange(self, where: str, fn, value: torch.Tensor, flows: Flows, output: Any,
                  sizes: list[str] | None = None) -> Flows:
        """Follow channels through a pure re-indexing (view, flatten, permute, indexing, …).

        Runs ``fn`` on a probe tensor holding each element's position among the channels of a
        flow and reads where the positions land. Positions that do not all survive (a slice of
        the channels) are frozen. Channels that land on several output dimensions become a grid
        (a head split, a channel-shuffle view); grids that land on one dimension become a plain
        flow again (the head merge).

        ``sizes`` says, for a view/reshape, how the code gives each output size: ``"number"``,
        ``"shape"`` (computed from a shape, like ``C // groups``) or ``"infer"`` (``-1``). A channel
        dimension whose new size is a number would not follow pruning: it is fixed. A split with
        exactly one size read from a shape keeps that size free, so its units are the positions
        along it: the channels at one position are coupled across the other dimensions (a channel
        shuffle). Other splits must become attention heads (:mod:`neuroprune.torch.graph.attention_ops`)
        or are fixed at the end; a grid is merged back only once its units are whole slices.
        """
        if not isinstance(output, torch.Tensor):
            self.freeze_all(flows, f"{where}: re-indexing to a non-tensor")
            return {}
        out: Flows = {}
        used: dict[int, Any] = {}
        for key, ids in flows.items():
            dims = key_dims(key)
            grid = np.asarray(ids).reshape([value.shape[d] for d in dims])
            probe = torch.zeros((), dtype=torch.float64)
            stride = 1
            for d in reversed(dims):
                shape = [1] * value.dim()
                shape[d] = value.shape[d]
                probe = probe + torch.arange(value.shape[d], dtype=torch.float64).reshape(shape) * stride
                stride *= value.shape[d]
            probe = probe.expand(value.shape).contiguous()
            landed = fn(probe)
            if not isinstance(landed, torch.Tensor) or tuple(landed.shape) != tuple(output.shape):
                self.freeze(ids, f"{where}: re-indexing changed shape unexpectedly")
                continue
            positions = landed.to(torch.int64).numpy()
            if len(np.unique(positions)) < grid.size:
                self.freeze(ids, f"{where}: only some channels are selected")
                continue
            varying = [a for a in range(positions.ndim) if not (positions == positions.take([0], axis=a)).all()]
            if not varying:
                self.freeze(ids, f"{where}: a single channel")
                continue
            index = tuple(slice(None) if a in varying else 0 for a in range(positions.ndim))
            landed_grid = grid.reshape(-1)[positions[index]]
            clash = [used[a] for a in varying if a in used]
            if clash:
                self.freeze(ids, f"{where}: two channel dimensions merged")
                for other in clash:
                    if other in out:
                        self.freeze(out.pop(other), f"{where}: two channel dimensions merged")
                continue
            if len(dims) > 1 and len(varying) == 1 and not self._is_settled(ids):
                self.freeze(ids, f"{where}: a split of the channels merged back with sizes fixed in the code")
                continue
            if len(dims) == 1 and len(varying) == 1 and sizes is not None and sizes[varying[0]] == "number":
                self.freeze(ids, f"{where}: the channel dimension's size is written as a number, which would "
                                 "not follow pruning (use -1 or a size read from the tensor)")
                continue
            if len(dims) == 1 and len(varying) > 1:
                free = [i for i, a in enumerate(varying) if sizes is not None and sizes[a] == "shape"]
                if len(free) == 1:
                    self.couple_along_others(landed_grid, free[0])
                    self.settle(landed_grid)
                else:
                    self.splits.append((np.asarray(landed_grid).ravel(), where))
            new_key = make_key(varying)
            for a in varying:
                used[a] = new_key
            out[new_key] = landed_grid
        return out
