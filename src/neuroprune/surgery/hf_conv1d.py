"""Hugging Face ``Conv1D`` (GPT-2 and kin): a Linear whose weight is stored transposed, ``(in, out)``.

``out`` neurons are columns of the weight (and entries of the bias), ``in`` features are its rows.
Registered when the hf adapter loads (this module imports transformers).

Example:
    >>> import torch
    >>> from transformers.pytorch_utils import Conv1D
    >>> layer = Conv1DHandler().prune(Conv1D(3, 4), {"out": torch.tensor([0, 2]), "in": torch.tensor([1, 2, 3])})
    >>> (layer.nx, layer.nf, tuple(layer.weight.shape))
    (3, 2, (3, 2))
"""

from __future__ import annotations

import torch

from .base import ModuleCall, ModuleHandler, WeightView, slice_parameter

try:
    from transformers.pytorch_utils import Conv1D
except ImportError as error:  # pragma: no cover - only imported by the hf adapter
    raise ImportError("the Conv1D handler needs transformers: pip install 'neuroprune[hf]'") from error


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _transpose(t: torch.Tensor) -> torch.Tensor:
    return t.t()


class Conv1DHandler(ModuleHandler):
    """``transformers.pytorch_utils.Conv1D``: ``y = x @ weight + bias`` with ``weight`` shaped ``(nx, nf)``."""

    module_types = (Conv1D,)

    def axes(self, module):
        return {"in": module.weight.shape[0], "out": module.weight.shape[1]}

    def propagate(self, ctx, call: ModuleCall):
        x = call.args[0]
        last = x.dim() - 1
        flows = dict(call.flows[0]) if isinstance(call.flows[0], dict) else {}
        in_ids = flows.pop(last, None)
        if in_ids is not None:
            ctx.bind_axis(call.path, "in", in_ids)
        return {**flows, last: ctx.producer_axis(call.path, "out", call.module.nf)}

    def incoming(self, module, axis):
        if axis != "out":
            return []
        return [WeightView("weight", _transpose, input_columns=_identity, input_axis="in")]

    def outgoing(self, module, axis):
        return [WeightView("weight", _identity)] if axis == "in" else []

    def observe(self, module, args, kwargs, output):
        return {"in": (args[0], -1)}

    def mask(self, module, axis, removed):
        if axis == "in":
            module.weight.data[removed, :] = 0

    def prune(self, module, keep):
        if "out" in keep:
            slice_parameter(module, "weight", keep["out"], 1)
            slice_parameter(module, "bias", keep["out"], 0)
            module.nf = len(keep["out"])
        if "in" in keep:
            slice_parameter(module, "weight", keep["in"], 0)
            module.nx = len(keep["in"])
        return module
