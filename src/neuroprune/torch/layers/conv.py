"""Convolutions: output channels are filters, input channels are filter slices.

Three layouts: ordinary (``groups == 1``), depthwise (``groups == in_channels``: output channel
``j`` reads input channel ``j // multiplier``, so the two are one neuron) and grouped (channels
pruned at the same position in every group, so that groups stay equal).

Example:
    >>> import torch, torch.nn as nn
    >>> conv = ConvHandler().prune(nn.Conv2d(3, 8, 3), {"out": torch.arange(4)})
    >>> conv.out_channels
    4
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from neuroprune.core.errors import PlanError
from neuroprune.torch.layers.base import ModuleCall, ModuleHandler, WeightView, slice_parameter


def conv_kind(module: nn.Module) -> str:
    """``"standard"``, ``"depthwise"`` or ``"grouped"``."""
    if module.groups == 1:
        return "standard"
    if module.groups == module.in_channels:
        return "depthwise"
    return "grouped"


def _couple_across_groups(ctx, ids: np.ndarray, groups: int) -> None:
    """Tie position ``p`` of every group to position ``p`` of group 0."""
    table = ids.reshape(groups, -1)
    for g in range(1, groups):
        ctx.couple(table[0], table[g])


class ConvHandler(ModuleHandler):
    """``nn.Conv1d/2d/3d`` with any ``groups``."""

    module_types = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

    def axes(self, module):
        return {"in": module.in_channels, "out": module.out_channels}

    def propagate(self, ctx, call: ModuleCall):
        module = call.module
        flows = dict(call.flows[0]) if isinstance(call.flows[0], dict) else {}
        in_ids = flows.pop(1, None)
        for dim in [d for d in flows if d >= 2]:  # spatial positions are mixed by the kernel
            ctx.freeze(flows.pop(dim), f"{call.path}: channels laid along a spatial dimension of a convolution")
        kind = conv_kind(module)
        if kind == "depthwise":
            if in_ids is None:
                in_ids = ctx.new_ids(module.in_channels)
                ctx.freeze(in_ids, f"{call.path}: depthwise convolution of a fixed input")
            ctx.bind_axis(call.path, "in", in_ids)
            out_ids = np.repeat(in_ids, module.out_channels // module.in_channels)
            ctx.bind_axis(call.path, "out", out_ids)
            return {**flows, 1: out_ids}
        if in_ids is not None:
            if kind == "grouped":
                _couple_across_groups(ctx, in_ids, module.groups)
            ctx.bind_axis(call.path, "in", in_ids)
        out_ids = ctx.producer_axis(call.path, "out", module.out_channels)
        if kind == "grouped":
            _couple_across_groups(ctx, out_ids, module.groups)
        return {**flows, 1: out_ids}

    def incoming(self, module, axis):
        if axis != "out":
            return []
        kernel = int(np.prod(module.kernel_size))
        if conv_kind(module) != "standard":
            return [WeightView("weight", lambda t: t.reshape(t.shape[0], -1))]
        return [WeightView("weight", lambda t: t.reshape(t.shape[0], -1),
                           input_columns=lambda f: f.repeat_interleave(kernel), input_axis="in")]

    def outgoing(self, module, axis):
        if axis != "in":
            return []
        kind = conv_kind(module)
        if kind == "standard":
            return [WeightView("weight", lambda t: t.transpose(0, 1).reshape(t.shape[1], -1))]
        if kind == "depthwise":
            return [WeightView("weight", lambda t: t.reshape(module.in_channels, -1))]
        groups = module.groups

        def grouped_rows(t: torch.Tensor) -> torch.Tensor:
            out, per_group = t.shape[0], t.shape[1]
            # (g, out/g, in/g, k) -> (g, in/g, out/g, k) -> (in, -1): row = input channel
            return t.reshape(groups, out // groups, per_group, -1).permute(0, 2, 1, 3).reshape(groups * per_group, -1)

        return [WeightView("weight", grouped_rows)]

    def observe(self, module, args, kwargs, output):
        return {"in": (args[0], 1)}

    def mask(self, module, axis, removed):
        if axis != "in":
            return
        kind = conv_kind(module)
        if kind == "standard":
            module.weight.data[:, removed] = 0
        elif kind == "grouped":
            per_group = module.in_channels // module.groups
            module.weight.data[:, torch.unique(removed % per_group)] = 0
        # depthwise: the channel's consumers downstream are masked instead

    def prune(self, module, keep):
        kind = conv_kind(module)
        out_keep, in_keep = keep.get("out"), keep.get("in")
        if kind == "depthwise":
            if in_keep is None:
                raise PlanError("depthwise convolution pruned on its output only; both axes must be given")
            multiplier = module.out_channels // module.in_channels
            expected = (in_keep[:, None] * multiplier + torch.arange(multiplier, device=in_keep.device)).reshape(-1)
            if out_keep is None or not torch.equal(out_keep, expected):
                raise PlanError("depthwise convolution: output channels must follow the input channels they read")
            slice_parameter(module, "weight", out_keep, 0)
            slice_parameter(module, "bias", out_keep, 0)
            module.in_channels, module.out_channels, module.groups = len(in_keep), len(out_keep), len(in_keep)
            return module
        if out_keep is not None:
            if kind == "grouped":
                _check_same_positions(out_keep, module.out_channels, module.groups, "output")
            slice_parameter(module, "weight", out_keep, 0)
            slice_parameter(module, "bias", out_keep, 0)
            module.out_channels = len(out_keep)
        if in_keep is not None:
            if kind == "grouped":
                local = _check_same_positions(in_keep, module.in_channels, module.groups, "input")
                slice_parameter(module, "weight", local, 1)
                module.in_channels = len(local) * module.groups
            else:
                slice_parameter(module, "weight", in_keep, 1)
                module.in_channels = len(in_keep)
        return module


def _check_same_positions(keep: torch.Tensor, size: int, groups: int, side: str) -> torch.Tensor:
    """Positions kept within group 0, after checking every group keeps the same ones."""
    per_group = size // groups
    mask = torch.zeros(size, dtype=torch.bool, device=keep.device)
    mask[keep] = True
    table = mask.reshape(groups, per_group)
    if not bool((table == table[0]).all()):
        raise PlanError(f"grouped convolution: every group must keep the same {side} positions")
    return torch.nonzero(table[0]).flatten()
