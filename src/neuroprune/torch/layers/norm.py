"""Normalisation and other per-channel layers.

* BatchNorm and PReLU act on each channel alone: removing a channel just drops its entries.
* LayerNorm / RMSNorm normalise *across* the features, so masks emulate the smaller layer with a
  forward hook (mean and variance over the kept features only) to stay equal to surgery.
* GroupNorm normalises within groups of channels: neurons are whole groups, so the remaining
  groups compute exactly what they did before.

Example:
    >>> import torch, torch.nn as nn
    >>> bn = ChannelwiseHandler().prune(nn.BatchNorm1d(4), {"features": torch.tensor([1, 3])})
    >>> bn.num_features
    2
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuroprune.core.errors import PlanError
from neuroprune.torch.layers.base import ModuleCall, ModuleHandler, slice_parameter

_FEATURE_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _passthrough_with_axis(ctx, call: ModuleCall, dim: int, axis: str) -> dict:
    flows = dict(call.flows[0]) if isinstance(call.flows[0], dict) else {}
    ids = flows.get(dim)
    if ids is not None:
        ctx.bind_axis(call.path, axis, ids)
    return flows


class ChannelwiseHandler(ModuleHandler):
    """BatchNorm1d/2d/3d and PReLU with one parameter per channel (channels on dim 1)."""

    module_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.PReLU)

    def axes(self, module):
        if isinstance(module, nn.PReLU):
            return {"features": module.num_parameters} if module.num_parameters > 1 else {}
        return {"features": module.num_features}

    def propagate(self, ctx, call):
        if isinstance(call.module, nn.PReLU) and call.module.num_parameters == 1:
            return dict(call.flows[0]) if isinstance(call.flows[0], dict) else {}
        return _passthrough_with_axis(ctx, call, 1, "features")

    def prune(self, module, keep):
        index = keep["features"]
        for name in _FEATURE_TENSORS:
            if getattr(module, name, None) is not None:
                slice_parameter(module, name, index, 0)
        if isinstance(module, nn.PReLU):
            module.num_parameters = len(index)
        else:
            module.num_features = len(index)
        return module


class LayerNormHandler(ModuleHandler):
    """LayerNorm / RMSNorm over the last dimension only; wider normalised shapes stay fixed."""

    module_types = tuple(t for t in (nn.LayerNorm, getattr(nn, "RMSNorm", None)) if t is not None)

    def axes(self, module):
        shape = tuple(module.normalized_shape)
        return {"features": shape[0]} if len(shape) == 1 else {}

    def propagate(self, ctx, call):
        x = call.args[0]
        shape = tuple(call.module.normalized_shape)
        flows = dict(call.flows[0]) if isinstance(call.flows[0], dict) else {}
        for dim in list(flows):
            if dim >= x.dim() - len(shape) and (len(shape) > 1 or dim != x.dim() - 1):
                ctx.freeze(flows.pop(dim), f"{call.path}: normalised over several dimensions")
        if len(shape) == 1 and x.dim() - 1 in flows:
            ctx.bind_axis(call.path, "features", flows[x.dim() - 1])
        return flows

    def mask_hooks(self, module, axis, removed):
        keep = torch.ones(module.normalized_shape[0], dtype=torch.bool, device=removed.device)
        keep[removed] = False
        keep_index = torch.nonzero(keep).flatten()

        def normalise_kept(mod, args, output):
            x = args[0]
            index = keep_index.to(x.device)
            kept = x.index_select(-1, index)
            weight = None if mod.weight is None else mod.weight.index_select(0, index)
            if isinstance(mod, nn.LayerNorm):
                bias = None if mod.bias is None else mod.bias.index_select(0, index)
                y = F.layer_norm(kept, (len(index),), weight, bias, mod.eps)
            else:
                y = F.rms_norm(kept, (len(index),), weight, mod.eps)
            out = torch.zeros_like(output)
            out.index_copy_(-1, index, y.to(out.dtype))
            return out

        return [module.register_forward_hook(normalise_kept)]

    def prune(self, module, keep):
        index = keep["features"]
        for name in ("weight", "bias"):
            if getattr(module, name, None) is not None:
                slice_parameter(module, name, index, 0)
        module.normalized_shape = (len(index),)
        return module


class GroupNormHandler(ModuleHandler):
    """GroupNorm: a neuron is a whole group of ``num_channels // num_groups`` channels."""

    module_types = (nn.GroupNorm,)

    def axes(self, module):
        return {"channels": module.num_channels}

    def propagate(self, ctx, call):
        flows = _passthrough_with_axis(ctx, call, 1, "channels")
        ids = flows.get(1)
        if ids is not None:
            table = ids.reshape(call.module.num_groups, -1)
            for j in range(1, table.shape[1]):
                ctx.couple(table[:, 0], table[:, j])
        return flows

    def prune(self, module, keep):
        index = keep["channels"]
        per_group = module.num_channels // module.num_groups
        groups = index.reshape(-1, per_group) if len(index) % per_group == 0 else None
        if groups is None or not bool((groups == groups[:, :1] + torch.arange(per_group, device=index.device)).all()) or bool(
            (groups[:, 0] % per_group != 0).any()
        ):
            raise PlanError(f"GroupNorm keeps whole groups of {per_group} channels only")
        for name in ("weight", "bias"):
            if getattr(module, name, None) is not None:
                slice_parameter(module, name, index, 0)
        module.num_channels, module.num_groups = len(index), len(index) // per_group
        return module
