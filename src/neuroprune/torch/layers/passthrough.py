"""Layers without prunable axes that channels flow through: activations, dropout, pooling,
reshaping modules and softmax.

Example:
    >>> import torch.nn as nn
    >>> from neuroprune.torch.layers.registry import handler_for
    >>> type(handler_for(nn.ReLU())).__name__
    'ElementwiseHandler'
"""

from __future__ import annotations

import torch.nn as nn

from neuroprune.torch.layers.base import ModuleHandler, positive_dim


def _first_flows(call) -> dict:
    return dict(call.flows[0]) if call.flows and isinstance(call.flows[0], dict) else {}


class ElementwiseHandler(ModuleHandler):
    """Acts on every value alone, so every channel passes unchanged."""

    module_types = (
        nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
        nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Softsign,
        nn.Tanhshrink, nn.LogSigmoid, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
        nn.AlphaDropout, nn.Identity,
    )
    grid_aware = True

    def propagate(self, ctx, call):
        return _first_flows(call)


class SpatialHandler(ModuleHandler):
    """Pooling and resampling over the dimensions after the channel dimension."""

    module_types = (
        nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
        nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
        nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, nn.Upsample,
    )

    def propagate(self, ctx, call):
        return ctx.spatial(call.path, _first_flows(call))


class RearrangeHandler(ModuleHandler):
    """Pure re-indexing modules (flatten, unflatten, channel shuffle): traced with a probe."""

    module_types = (nn.Flatten, nn.Unflatten, nn.ChannelShuffle)
    grid_aware = True

    def propagate(self, ctx, call):
        return ctx.rearrange(call.path, call.module, call.args[0], _first_flows(call), call.output)


class SoftmaxHandler(ModuleHandler):
    """Softmax-like modules: values along ``dim`` depend on each other."""

    module_types = (nn.Softmax, nn.LogSoftmax, nn.Softmin)

    def propagate(self, ctx, call):
        flows = _first_flows(call)
        dim = call.module.dim
        if dim is not None:
            dim = positive_dim(dim, call.args[0].dim())
            if dim in flows:
                ctx.freeze(flows.pop(dim), f"{call.path}: softmax across the channels")
        return flows
