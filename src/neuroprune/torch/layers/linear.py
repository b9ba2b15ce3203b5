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

from neuroprune.torch.layers.base import ModuleCall, ModuleHandler, WeightView, slice_parameter


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _transpose(t: torch.Tensor) -> torch.Tensor:
    return t.t()


class LinearHandler(ModuleHandler):
    """``nn.Linear``: contracts the last dimension of its input.

    ``out_dim`` is the weight dimension that holds the output neurons: 0 for ``nn.Linear``'s
    ``(out, in)`` weight; a subclass sets 1 for a layer that stores it transposed (transformers'
    ``Conv1D``) and names its width attributes in ``width_attributes``.
    """

    module_types = (nn.Linear,)
    out_dim = 0
    width_attributes = {"in": "in_features", "out": "out_features"}

    def axes(self, module):
        return {"in": module.weight.shape[1 - self.out_dim], "out": module.weight.shape[self.out_dim]}

    def propagate(self, ctx, call: ModuleCall):
        x = call.args[0]
        last = x.dim() - 1
        flows = dict(call.flows[0]) if isinstance(call.flows[0], dict) else {}
        in_ids = flows.pop(last, None)
        if in_ids is not None:
            ctx.bind_axis(call.path, "in", in_ids)
        return {**flows, last: ctx.producer_axis(call.path, "out", call.module.weight.shape[self.out_dim])}

    def _as_out_in(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.out_dim == 0 else t.t()

    def _as_in_out(self, t: torch.Tensor) -> torch.Tensor:
        return t.t() if self.out_dim == 0 else t

    def incoming(self, module, axis):
        if axis != "out":
            return []
        return [WeightView("weight", self._as_out_in, input_columns=_identity, input_axis="in")]

    def outgoing(self, module, axis):
        return [WeightView("weight", self._as_in_out)] if axis == "in" else []

    def observe(self, module, args, kwargs, output):
        return {"in": (args[0], -1)}

    def mask(self, module, axis, removed):
        if axis == "in":
            self._as_out_in(module.weight.data)[:, removed] = 0  # a view: zeroes the weight itself

    def prune(self, module, keep):
        if "out" in keep:
            slice_parameter(module, "weight", keep["out"], self.out_dim)
            slice_parameter(module, "bias", keep["out"], 0)
            setattr(module, self.width_attributes["out"], len(keep["out"]))
        if "in" in keep:
            slice_parameter(module, "weight", keep["in"], 1 - self.out_dim)
            setattr(module, self.width_attributes["in"], len(keep["in"]))
        return module
