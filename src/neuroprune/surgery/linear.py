"""Linear layers: ``out`` neurons are rows of the weight, ``in`` features are its columns.

Example:
    >>> import torch, torch.nn as nn
    >>> lin = LinearHandler().prune(nn.Linear(4, 3), {"out": torch.tensor([0, 2])})
    >>> (lin.in_features, lin.out_features)
    (4, 2)
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import ModuleCall, ModuleHandler, WeightView, slice_parameter


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _transpose(t: torch.Tensor) -> torch.Tensor:
    return t.t()


class LinearHandler(ModuleHandler):
    """``nn.Linear``: contracts the last dimension of its input."""

    module_types = (nn.Linear,)

    def axes(self, module):
        return {"in": module.in_features, "out": module.out_features}

    def propagate(self, ctx, call: ModuleCall):
        x = call.args[0]
        last = x.dim() - 1
        flows = dict(call.flows[0]) if isinstance(call.flows[0], dict) else {}
        in_ids = flows.pop(last, None)
        if in_ids is not None:
            ctx.bind_axis(call.path, "in", in_ids)
        return {**flows, last: ctx.producer_axis(call.path, "out", call.module.out_features)}

    def incoming(self, module, axis):
        if axis != "out":
            return []
        return [WeightView("weight", _identity, input_columns=_identity, input_axis="in")]

    def outgoing(self, module, axis):
        return [WeightView("weight", _transpose)] if axis == "in" else []

    def observe(self, module, args, kwargs, output):
        return {"in": (args[0], -1)}

    def mask(self, module, axis, removed):
        if axis == "in":
            module.weight.data[:, removed] = 0

    def prune(self, module, keep):
        if "out" in keep:
            slice_parameter(module, "weight", keep["out"], 0)
            slice_parameter(module, "bias", keep["out"], 0)
            module.out_features = len(keep["out"])
        if "in" in keep:
            slice_parameter(module, "weight", keep["in"], 1)
            module.in_features = len(keep["in"])
        return module

