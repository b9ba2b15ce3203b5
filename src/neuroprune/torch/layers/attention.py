"""Attention heads of ``nn.MultiheadAttention``.

``nn.MultiheadAttention`` derives the head size from the model width, so it cannot hold fewer
heads than its width implies. A pruned block becomes a :class:`HeadPrunedMultiheadAttention`: the
same call signature, the same parameter names (so state dicts line up) and any number of heads.
Its ``_qkv_same_embed_dim`` is ``False`` so that ``nn.TransformerEncoderLayer`` never takes its
fused fast path with it.

Example:
    >>> import torch, torch.nn as nn
    >>> mha = nn.MultiheadAttention(8, 4, batch_first=True)
    >>> small = AttentionHandler().prune(mha, {"heads": torch.tensor([0, 3])})
    >>> (small.num_heads, small.head_dim, tuple(small(torch.ones(1, 5, 8), torch.ones(1, 5, 8), torch.ones(1, 5, 8))[0].shape))
    (2, 2, (1, 5, 8))
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuroprune.torch.layers.base import ModuleCall, ModuleHandler, WeightView


def _projections(module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if module.in_proj_weight is not None:
        return module.in_proj_weight.chunk(3)
    return module.q_proj_weight, module.k_proj_weight, module.v_proj_weight


def _as_additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def attention_context(module, query, key, value, key_padding_mask=None, attn_mask=None,
                      is_causal=False, need_weights=False, average_attn_weights=True):
    """Per-head attention output of ``module`` before the output projection.

    Works for ``nn.MultiheadAttention`` and :class:`HeadPrunedMultiheadAttention` alike.

    Returns:
        ``(context, weights, unbatched)`` with context shaped ``(N, heads, L, head_dim)`` and
        weights ``(N, heads, L, S)`` or ``None``.
    """
    heads = module.num_heads
    head_dim = module.head_dim
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    if module.batch_first and not unbatched:
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    # now (L, N, E)
    w_q, w_k, w_v = _projections(module)
    b_q = b_k = b_v = None
    if module.in_proj_bias is not None:
        b_q, b_k, b_v = module.in_proj_bias.chunk(3)
    q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
    batch, target = q.shape[1], q.shape[0]
    dtype = q.dtype
    attn_mask = _as_additive(attn_mask, dtype)
    key_padding_mask = _as_additive(key_padding_mask, dtype)
    if attn_mask is not None and attn_mask.dim() == 3:
        # (N * original heads, L, S) -> keep the rows of the heads this module still has
        original = attn_mask.shape[0] // batch
        attn_mask = attn_mask.reshape(batch, original, *attn_mask.shape[1:])
        attn_mask = attn_mask[:, list(getattr(module, "head_index", range(original)))]
    if module.bias_k is not None:
        k = torch.cat([k, module.bias_k.expand(1, batch, -1)])
        v = torch.cat([v, module.bias_v.expand(1, batch, -1)])
        attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
        key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
    # (L, N, H*hd) -> (N, H, L, hd)
    q = q.reshape(target, batch, heads, head_dim).permute(1, 2, 0, 3)
    k = k.reshape(k.shape[0], batch, heads, head_dim).permute(1, 2, 0, 3)
    v = v.reshape(v.shape[0], batch, heads, head_dim).permute(1, 2, 0, 3)
    if module.add_zero_attn:
        k = torch.cat([k, k.new_zeros(batch, heads, 1, head_dim)], dim=2)
        v = torch.cat([v, v.new_zeros(batch, heads, 1, head_dim)], dim=2)
        attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
        key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
    source = k.shape[2]
    mask = None
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dim() == 4 else attn_mask.reshape(1, 1, target, source)
    if key_padding_mask is not None:
        padding = key_padding_mask.reshape(batch, 1, 1, source)
        mask = padding if mask is None else mask + padding
    if is_causal and mask is None:
        mask = torch.full((target, source), float("-inf"), dtype=dtype, device=q.device).triu(1)
    dropout = module.dropout if module.training else 0.0
    if not need_weights:
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return context, None, unbatched
    scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    context = F.dropout(weights, dropout, training=module.training) @ v
    return context, weights, unbatched


class HeadPrunedMultiheadAttention(nn.Module):
    """Drop-in ``nn.MultiheadAttention`` whose head count is independent of its width.

    Args:
        embed_dim: width of the query input and of the output.
        num_heads: number of heads kept.
        head_dim: width of one head.
        kdim, vdim: widths of key and value inputs (default ``embed_dim``).
        head_index: original index of every kept head (used to pick rows of 3-D attention masks).
    """

    _qkv_same_embed_dim = False  # keeps nn.TransformerEncoderLayer off its fused fast path

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, *, kdim: int | None = None,
                 vdim: int | None = None, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, batch_first: bool = False,
                 head_index: list[int] | None = None, packed: bool = True, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout, self.batch_first, self.add_zero_attn = dropout, batch_first, add_zero_attn
        self.head_index = list(range(num_heads)) if head_index is None else list(head_index)
        inner = num_heads * head_dim
        if packed:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(inner, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(inner, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(inner, self.vdim, **factory))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.zeros(1, 1, inner, **factory))
            self.bias_v = nn.Parameter(torch.zeros(1, 1, inner, **factory))
        else:
            self.bias_k = self.bias_v = None

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        context, weights, unbatched = attention_context(
            self, query, key, value, key_padding_mask, attn_mask, is_causal, need_weights)
        batch, _, target, _ = context.shape
        merged = context.permute(2, 0, 1, 3).reshape(target, batch, -1)  # (L, N, H*hd)
        out = self.out_proj(merged)
        if unbatched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None:
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if unbatched:
                weights = weights.squeeze(0)
        return out, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}"


def _head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)).reshape(-1)


class AttentionHandler(ModuleHandler):
    """Heads of ``nn.MultiheadAttention`` and :class:`HeadPrunedMultiheadAttention`.

    The model width (``embed_dim``) stays fixed; its channels are frozen.
    """

    module_types = (nn.MultiheadAttention, HeadPrunedMultiheadAttention)

    def axes(self, module):
        return {"heads": module.num_heads}

    def propagate(self, ctx, call: ModuleCall):
        for flows in (*call.flows, *call.kwarg_flows.values()):
            ctx.freeze_all(flows, f"{call.path}: attention input width (embed_dim) is kept")
        ctx.producer_axis(call.path, "heads", call.module.num_heads)
        return ({}, {}) if isinstance(call.output, tuple) else {}

    def incoming(self, module, axis):
        heads = module.num_heads

        def by_head(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(heads, -1)

        if module.in_proj_weight is not None:
            return [WeightView("in_proj_weight", lambda t: t.reshape(3, heads, -1).transpose(0, 1).reshape(heads, -1))]
        return [WeightView(name, by_head) for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight")]

    def outgoing(self, module, axis):
        heads, head_dim = module.num_heads, module.head_dim
        return [WeightView("out_proj.weight",
                           lambda t: t.reshape(t.shape[0], heads, head_dim).transpose(0, 1).reshape(heads, -1))]

    def observe(self, module, args, kwargs, output):
        names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
                 "average_attn_weights", "is_causal")
        bound = dict(zip(names, args))
        bound.update(kwargs)
        with torch.no_grad():
            context, _, _ = attention_context(
                module, bound["query"], bound["key"], bound["value"], bound.get("key_padding_mask"),
                bound.get("attn_mask"), bound.get("is_causal", False))
        return {"heads": (context, 1)}

    def mask(self, module, axis, removed):
        module.out_proj.weight.data[:, _head_rows(removed, module.head_dim)] = 0

    def prune(self, module, keep):
        reference = module.out_proj.weight
        heads = keep["heads"].to(reference.device)
        head_dim = module.head_dim
        rows = _head_rows(heads, head_dim)
        packed = module.in_proj_weight is not None
        original = getattr(module, "head_index", list(range(module.num_heads)))
        new = HeadPrunedMultiheadAttention(
            module.embed_dim, len(heads), head_dim, kdim=module.kdim, vdim=module.vdim,
            dropout=module.dropout, bias=module.in_proj_bias is not None,
            add_bias_kv=module.bias_k is not None, add_zero_attn=module.add_zero_attn,
            batch_first=module.batch_first, head_index=[original[i] for i in heads.tolist()],
            packed=packed, device=reference.device, dtype=reference.dtype)
        inner = module.num_heads * head_dim
        three = torch.cat([rows, rows + inner, rows + 2 * inner])
        with torch.no_grad():
            if packed:
                new.in_proj_weight.copy_(module.in_proj_weight[three])
            else:
                for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                    getattr(new, name).copy_(getattr(module, name)[rows])
            if module.in_proj_bias is not None:
                new.in_proj_bias.copy_(module.in_proj_bias[three])
                new.out_proj.bias.copy_(module.out_proj.bias)
            new.out_proj.weight.copy_(module.out_proj.weight[:, rows])
            if module.bias_k is not None:
                new.bias_k.copy_(module.bias_k[..., rows])
                new.bias_v.copy_(module.bias_v[..., rows])
        new.train(module.training)
        for name, param in new.named_parameters():
            param.requires_grad_(module.get_parameter(name).requires_grad if name != "in_proj_weight" or packed else True)
        return new


def leave_nested_fast_path(model: nn.Module) -> None:
    """Turn off ``nn.TransformerEncoder``'s nested-tensor path where its first layer lost heads.

    The encoder decides at construction to pack padded batches into nested tensors, which only
    the fused layer kernel reads; a :class:`HeadPrunedMultiheadAttention` takes padded tensors.
    Outputs at padded positions then hold values instead of zeros (they are padding either way).
    """
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoder) and len(module.layers) and \
                isinstance(getattr(module.layers[0], "self_attn", None), HeadPrunedMultiheadAttention):
            module.use_nested_tensor = False

