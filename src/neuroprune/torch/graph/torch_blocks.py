"""Traceable forwards for torch's own transformer blocks.

``nn.TransformerEncoderLayer``, ``nn.TransformerDecoderLayer``, ``nn.TransformerEncoder``,
``nn.TransformerDecoder`` and ``nn.Transformer`` choose between a fused fast path and the plain
computation by looking at tensor properties (``src.dim()``, ``src.is_nested``, mask contents),
which torch.fx cannot follow. Tracing uses the plain computation instead, written with the
blocks' own submodules (``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``, ``norm1``…)
and their ``_sa_block`` / ``_mha_block`` / ``_ff_block`` helpers, so discovery sees the
attention layers and the FFN Linears and prunes their heads and neurons with the usual handlers.
The model itself keeps its real forward (fast path included) at run time; both compute the same.

Example:
    >>> import torch.nn as nn
    >>> traceable_forward(nn.TransformerEncoderLayer(8, 2, 16)) is not None
    True
    >>> traceable_forward(nn.Linear(2, 2)) is None
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch.nn as nn


def _encoder_layer(layer: nn.TransformerEncoderLayer, src, src_mask=None, src_key_padding_mask=None,
                   is_causal=False):
    x = src
    if layer.norm_first:
        x = x + layer._sa_block(layer.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
        return x + layer._ff_block(layer.norm2(x))
    x = layer.norm1(x + layer._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
    return layer.norm2(x + layer._ff_block(x))


def _decoder_layer(layer: nn.TransformerDecoderLayer, tgt, memory, tgt_mask=None, memory_mask=None,
                   tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=False,
                   memory_is_causal=False):
    x = tgt
    if layer.norm_first:
        x = x + layer._sa_block(layer.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
        x = x + layer._mha_block(layer.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
        return x + layer._ff_block(layer.norm3(x))
    x = layer.norm1(x + layer._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
    x = layer.norm2(x + layer._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
    return layer.norm3(x + layer._ff_block(x))


def _encoder(encoder: nn.TransformerEncoder, src, mask=None, src_key_padding_mask=None, is_causal=None):
    output = src
    for layer in encoder.layers:
        output = layer(output, src_mask=mask, is_causal=bool(is_causal), src_key_padding_mask=src_key_padding_mask)
    return output if encoder.norm is None else encoder.norm(output)


def _decoder(decoder: nn.TransformerDecoder, tgt, memory, tgt_mask=None, memory_mask=None,
             tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=None,
             memory_is_causal=False):
    output = tgt
    for layer in decoder.layers:
        output = layer(output, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                       tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                       tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal)
    return output if decoder.norm is None else decoder.norm(output)


def _transformer(model: nn.Transformer, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                 src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
                 src_is_causal=None, tgt_is_causal=None, memory_is_causal=False):
    memory = model.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
    return model.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                         tgt_key_padding_mask=tgt_key_padding_mask,
                         memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                         memory_is_causal=memory_is_causal)


_FORWARDS: dict[type[nn.Module], Callable] = {
    nn.TransformerEncoderLayer: _encoder_layer,
    nn.TransformerDecoderLayer: _decoder_layer,
    nn.TransformerEncoder: _encoder,
    nn.TransformerDecoder: _decoder,
    nn.Transformer: _transformer,
}


def _torch_class(module: nn.Module) -> type[nn.Module] | None:
    for cls in _FORWARDS:
        if isinstance(module, cls) and type(module).forward is cls.forward:
            return cls
    return None


def traceable_forward(module: nn.Module) -> Callable | None:
    """The plain forward of a torch transformer block (bound to ``module``), else ``None``.

    Subclasses count only while they keep torch's ``forward``.
    """
    cls = _torch_class(module)
    return None if cls is None else functools.partial(_FORWARDS[cls], module)
