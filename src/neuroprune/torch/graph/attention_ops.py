"""Channels through matrix products and attention: where attention heads become units.

Hand-written attention splits a projection's channels into heads (``reshape(B, N, 3, heads,
head_dim)``), which discovery follows as a *grid* of ids (see :mod:`neuroprune.torch.graph.context`).
At a matrix product (``q @ k.transpose(-2, -1)``, ``attn @ v``) or at
``F.scaled_dot_product_attention`` the grid's axis on a batch dimension is the head axis: every
channel of one head becomes one unit (head_dim is never pruned, so the softmax scale holds), and
head ``h`` of q, k and v is coupled. The module running the attention must carry its head count
in an attribute (``num_heads``, ...; see :mod:`neuroprune.torch.layers.heads`), which surgery updates;
otherwise the heads are fixed, with the reason. Channels summed over by a product without a head
axis are fixed.

Example:
    >>> import torch, torch.nn as nn
    >>> from neuroprune import discover
    >>> class Attn(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.num_heads, self.qkv, self.proj = 2, nn.Linear(8, 24), nn.Linear(8, 8)
    ...     def forward(self, x):
    ...         B, N, C = x.shape
    ...         q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, 4).permute(2, 0, 3, 1, 4).unbind(0)
    ...         x = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    ...         return self.proj(x.transpose(1, 2).reshape(B, N, self.num_heads * 4))
    >>> graph = discover(nn.Sequential(Attn(), nn.Linear(8, 2)), torch.randn(1, 3, 8))
    >>> [(g.name, g.size, sorted({(m.path, m.axis) for m in g.members})) for g in graph.groups][0]
    ('0.qkv', 2, [('0', 'heads'), ('0.proj', 'in'), ('0.qkv', 'out')])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from neuroprune.torch.graph.context import FlowContext, key_dims, make_key


def _flows(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _grid(ids: np.ndarray, shape, dims: tuple[int, ...]) -> np.ndarray:
    return np.asarray(ids).reshape([shape[d] for d in dims])


def collapse_heads(ctx: FlowContext, grid: np.ndarray, axis: int) -> np.ndarray:
    """Couple every id of each slice along ``axis`` (one head); return one id per head."""
    ctx.couple_along_others(grid, axis)
    ctx.settle(grid)
    return np.moveaxis(grid, axis, 0).reshape(grid.shape[axis], -1)[:, 0].copy()


def bind_heads(ctx: FlowContext, call, heads: np.ndarray) -> None:
    """Make ``heads`` the ``heads`` axis of the module running the attention, or fix them."""
    from neuroprune.torch.layers.heads import HeadCountHandler, head_count_attribute
    from neuroprune.torch.layers.registry import handler_for

    path = call.path
    if not path or path == "<top level>" or ctx.model is None:
        ctx.freeze(heads, f"{call.where}: attention heads split in the model's own forward are kept "
                          "(run the attention in a submodule with a num_heads attribute)")
        return
    module = ctx.model.get_submodule(path)
    if not isinstance(handler_for(module), HeadCountHandler):
        ctx.freeze(heads, f"{path}: {type(module).__name__} splits {len(heads)} attention heads but has no "
                          f"head-count attribute to update after pruning (one of {', '.join(HeadCountHandler.COUNT_NAMES)}); "
                          "its heads are kept")
        return
    name = head_count_attribute(module)
    if getattr(module, name) != len(heads):
        ctx.freeze(heads, f"{path}: {type(module).__name__}.{name} is {getattr(module, name)} but its forward "
                          f"splits {len(heads)} heads; its heads are kept")
        return
    problem = HeadCountHandler().rewrite_problem(module)
    if problem:
        ctx.freeze(heads, f"{path}: {problem}; its heads are kept")
        return
    ctx.bind_axis(path, "heads", heads)


class _Side:
    """One operand of a product: its shape, flows and where each of its dimensions goes."""

    def __init__(self, shape: tuple, flows: dict, out_of: list[int | None]):
        self.shape, self.flows, self.out_of = shape, flows, out_of

    def size_at(self, out_dim: int) -> int:
        """This operand's size along output dimension ``out_dim`` (1 where it has none)."""
        return next((self.shape[d] for d, o in enumerate(self.out_of) if o == out_dim), 1)


def _matmul_sides(a: tuple[tuple, dict], b: tuple[tuple, dict], out_nd: int) -> list[_Side]:
    """``A @ B`` for A shaped ``(..., n, k)`` and B ``(..., k, m)``, broadcasting batch dims."""
    (shape_a, flows_a), (shape_b, flows_b) = a, b
    out_a = [d + out_nd - len(shape_a) for d in range(len(shape_a) - 2)] + [out_nd - 2, None]
    out_b = [d + out_nd - len(shape_b) for d in range(len(shape_b) - 2)] + [None, out_nd - 1]
    return [_Side(shape_a, flows_a, out_a), _Side(shape_b, flows_b, out_b)]


def _product_flows(ctx: FlowContext, call, sides: list[_Side], batch_dims: set[int]) -> dict:
    """Flows of a product: ``batch_dims`` are output dimensions every operand runs along (heads
    live there); an operand dimension mapped to ``None`` is summed over."""
    heads_at: dict[int, list[tuple[int, np.ndarray]]] = {}
    carried: dict[Any, np.ndarray] = {}
    for index, side in enumerate(sides):
        for key, ids in side.flows.items():
            dims = key_dims(key)
            mapped = [side.out_of[d] for d in dims]
            batch = [i for i, d in enumerate(mapped) if d in batch_dims]
            contracted = None in mapped
            if len(batch) > 1:
                ctx.freeze(ids, f"{call.where}: channels spread over several batch dimensions of a product")
            elif not batch:
                if contracted:
                    ctx.freeze(ids, f"{call.where}: channels summed over by a matrix product")
                else:
                    carried[make_key(mapped)] = ids
            else:
                heads = collapse_heads(ctx, _grid(ids, side.shape, dims), batch[0])
                heads_at.setdefault(mapped[batch[0]], []).append((index, heads))
                if not contracted and len(dims) > 1:
                    carried[make_key(mapped)] = ids
    result: dict[Any, np.ndarray] = {}
    for d, entries in heads_at.items():
        present = {i for i, _ in entries}
        fixed = any(i not in present and side.size_at(d) > 1 for i, side in enumerate(sides))
        for _, other in entries[1:]:
            ctx.couple(entries[0][1], other)
        spanning = [k for k in carried if d in key_dims(k)]
        if fixed:
            ctx.freeze(entries[0][1], f"{call.where}: heads combined with a tensor that has none")
            for k in spanning:
                carried.pop(k)
            continue
        bind_heads(ctx, call, entries[0][1])  # channels on a batch dimension of a product are heads
        if not spanning:
            result[d] = entries[0][1]
    result.update(carried)
    return result


def matmul_rule(ctx: FlowContext, call) -> Any:
    """``a @ b``, ``torch.matmul``, ``bmm``: heads on batch dimensions, channels summed over fixed."""
    a, b = call.args[0], call.args[1]
    flows_a, flows_b = _flows(call.flows[0]), _flows(call.flows[1] if len(call.flows) > 1 else None)
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dim() < 2 or b.dim() < 2:
        for flows in (flows_a, flows_b):
            ctx.freeze_all(flows, f"{call.where}: matrix product with a vector")
        return {} if isinstance(call.output, torch.Tensor) else None
    out_nd = call.output.dim()
    sides = _matmul_sides((tuple(a.shape), flows_a), (tuple(b.shape), flows_b), out_nd)
    return _product_flows(ctx, call, sides, set(range(out_nd - 2)))


matmul_rule.grid_aware = True


def einsum_rule(ctx: FlowContext, call) -> Any:
    """``torch.einsum`` of two operands (as in torchvision MaxViT): letters in both operands and
    the output are batch dimensions (heads), letters missing from the output are summed over."""
    equation, operands = call.args[0], list(call.args[1:])
    flows = list(call.flows[1:])
    if len(operands) == 1 and isinstance(operands[0], (tuple, list)):
        operands = list(operands[0])
        flows = list(flows[0]) if flows and isinstance(flows[0], (tuple, list)) else [None] * len(operands)
    equation = equation.replace(" ", "")
    inputs, _, output = equation.partition("->")
    terms = inputs.split(",")
    simple = ("->" in equation and "." not in equation and len(terms) == 2 == len(operands)
              and all(isinstance(t, torch.Tensor) and t.dim() == len(term) for t, term in zip(operands, terms)))
    if not simple:
        for f in flows:
            ctx.freeze_all(f, f"{call.where}: einsum {equation!r} is not followed (two operands, explicit output)")
        return {} if isinstance(call.output, torch.Tensor) else None
    sides = [_Side(tuple(t.shape), _flows(f), [output.index(c) if c in output else None for c in term])
             for t, f, term in zip(operands, flows, terms)]
    batch = {output.index(c) for c in output if c in terms[0] and c in terms[1]}
    return _product_flows(ctx, call, sides, batch)


einsum_rule.grid_aware = True


def _swap_last_two(flows: dict, shape: tuple) -> tuple[tuple, dict]:
    """Shape and flows of ``t.transpose(-2, -1)``."""
    nd = len(shape)
    swap = {nd - 1: nd - 2, nd - 2: nd - 1}
    out = {}
    for key, ids in flows.items():
        dims = key_dims(key)
        grid = _grid(ids, shape, dims)
        moved = [swap.get(d, d) for d in dims]
        order = np.argsort(moved)
        out[make_key([moved[i] for i in order])] = np.transpose(grid, order) if grid.ndim > 1 else grid
    new_shape = list(shape)
    new_shape[-1], new_shape[-2] = shape[-2], shape[-1]
    return tuple(new_shape), out


def sdpa_rule(ctx: FlowContext, call) -> Any:
    """``F.scaled_dot_product_attention``: ``softmax(q @ k^T + mask) @ v`` for flows."""
    names = ("query", "key", "value", "attn_mask")
    values = [call.arg(i, n) for i, n in enumerate(names)]
    flows = [_flows(call.flows[i]) if i < len(call.flows) else _flows(call.kwarg_flows.get(n))
             for i, n in enumerate(names)]
    q, k, v, mask = values
    if call.kwargs.get("enable_gqa") or q.dim() < 2 or k.dim() < 2:
        for f in flows:
            ctx.freeze_all(f, f"{call.where}: grouped-query attention keeps its heads")
        return {}
    k_shape, k_flows = _swap_last_two(flows[1], tuple(k.shape))
    batch = tuple(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]))
    scores_shape = batch + (q.shape[-2], k.shape[-2])
    scores = _product_flows(ctx, call, _matmul_sides((tuple(q.shape), flows[0]), (k_shape, k_flows), len(scores_shape)),
                            set(range(len(scores_shape) - 2)))
    if isinstance(mask, torch.Tensor):
        ctx.freeze_all(flows[3], f"{call.where}: channels used as an attention mask")
        shift = len(scores_shape) - mask.dim()
        for key in list(scores):
            if any(d - shift >= 0 and mask.shape[d - shift] > 1 for d in key_dims(key)):
                ctx.freeze(scores.pop(key), f"{call.where}: an attention mask that differs between heads")
    for key in [key for key in scores if len(scores_shape) - 1 in key_dims(key)]:
        ctx.freeze(scores.pop(key), f"{call.where}: values across the channels depend on each other")
    out_nd = call.output.dim()
    return _product_flows(ctx, call, _matmul_sides((scores_shape, scores), (tuple(v.shape), flows[2]), out_nd),
                          set(range(out_nd - 2)))


sdpa_rule.grid_aware = True


def opaque_attention_rule(ctx: FlowContext, call) -> Any:
    """An attention function that takes its weights as arguments (torchvision's
    ``shifted_window_attention``): its input width and heads are kept, its output is fixed."""
    for flows in (*call.flows, *call.kwarg_flows.values()):
        ctx.freeze_all(flows, f"{call.where}: the input width of an attention function is kept")
    return {} if isinstance(call.output, torch.Tensor) else None
