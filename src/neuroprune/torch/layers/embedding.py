"""Embedding tables: a neuron is one embedding dimension (a column of the table).

Example:
    >>> import torch, torch.nn as nn
    >>> EmbeddingHandler().prune(nn.Embedding(10, 6), {"dim": torch.arange(3)}).embedding_dim
    3
"""

from __future__ import annotations

import torch.nn as nn

from neuroprune.torch.layers.base import ModuleHandler, WeightView, slice_parameter


class EmbeddingHandler(ModuleHandler):
    """``nn.Embedding``: produces ``embedding_dim`` channels on the last dimension."""

    module_types = (nn.Embedding,)

    def axes(self, module):
        return {"dim": module.embedding_dim}

    def propagate(self, ctx, call):
        return {call.output.dim() - 1: ctx.producer_axis(call.path, "dim", call.module.embedding_dim)}

    def incoming(self, module, axis):
        return [WeightView("weight", lambda t: t.t())] if axis == "dim" else []

    def prune(self, module, keep):
        slice_parameter(module, "weight", keep["dim"], 1)
        module.embedding_dim = len(keep["dim"])
        return module
