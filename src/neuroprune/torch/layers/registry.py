"""Which handler serves which layer type.

Lookup walks the module's class hierarchy, so a subclass of ``nn.Linear`` is handled as a Linear
unless a handler is registered for the subclass itself.

Example:
    >>> import torch.nn as nn
    >>> type(handler_for(nn.Conv2d(1, 2, 3))).__name__
    'ConvHandler'
    >>> handler_for(nn.Transformer()) is None
    True
"""

from __future__ import annotations

import torch.nn as nn

from neuroprune.core.errors import DuplicateNameError
from neuroprune.torch.layers.attention import AttentionHandler
from neuroprune.torch.layers.base import ModuleHandler
from neuroprune.torch.layers.conv import ConvHandler
from neuroprune.torch.layers.embedding import EmbeddingHandler
from neuroprune.torch.layers.heads import HeadCountHandler
from neuroprune.torch.layers.linear import LinearHandler
from neuroprune.torch.layers.norm import ChannelwiseHandler, GroupNormHandler, LayerNormHandler
from neuroprune.torch.layers.passthrough import ElementwiseHandler, RearrangeHandler, SoftmaxHandler, SpatialHandler
from neuroprune.torch.layers.rnn import RecurrentHandler

_HANDLERS: dict[type[nn.Module], ModuleHandler] = {}
#: Handlers that serve modules by what they hold rather than by type, tried after the types.
_BY_ATTRIBUTE: list[HeadCountHandler] = [HeadCountHandler()]


def register_handler(handler: ModuleHandler, *, replace: bool = False) -> None:
    """Register ``handler`` for each of its ``module_types``; refuses duplicates unless ``replace``."""
    clashes = [t.__name__ for t in handler.module_types if t in _HANDLERS]
    if clashes and not replace:
        raise DuplicateNameError("layer handler for", ", ".join(clashes))
    for module_type in handler.module_types:
        _HANDLERS[module_type] = handler


def handler_for(module: nn.Module) -> ModuleHandler | None:
    """The handler for ``module``'s class or its nearest registered base class, else one that
    serves it by attribute (the head count of hand-written attention), else ``None``."""
    for cls in type(module).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
        if cls is nn.Module:
            break
    for handler in _BY_ATTRIBUTE:
        if handler.serves(module):
            return handler
    return None


def supported_layer_names() -> list[str]:
    """Names of every layer type with a handler, for error messages."""
    return sorted(t.__name__ for t in _HANDLERS)


for _handler in (LinearHandler(), ConvHandler(), ChannelwiseHandler(), LayerNormHandler(), GroupNormHandler(),
                 EmbeddingHandler(), RecurrentHandler(), AttentionHandler(), ElementwiseHandler(),
                 SpatialHandler(), RearrangeHandler(), SoftmaxHandler()):
    register_handler(_handler)
