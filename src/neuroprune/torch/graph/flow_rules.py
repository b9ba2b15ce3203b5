"""The flow rules: how channels flow through one function or tensor-method call of a traced forward.

Each rule receives the call (:class:`OpCall`: the real argument values, their channel flows and
the real output) and returns the output's flows. Which rule serves which function or method is
decided in :mod:`neuroprune.torch.graph.ops`; attention-shaped rules live in
:mod:`neuroprune.torch.graph.attention_ops`.

Example:
    >>> first_rule.__name__, getattr(first_rule, "grid_aware", False)
    ('first_rule', True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neuroprune.torch.graph.context import FlowContext, key_dims, make_key
from neuroprune.torch.graph.sizes import freeze_borrowed_widths, size_kinds

Rule = Callable[..., Any]


class OpCall:
    """A function or method call: its target, real arguments, their flows and the output."""

    def __init__(self, where: str, kind: str, target: Any, args: tuple, kwargs: dict, flows: tuple,
                 kwarg_flows: dict, output: Any, path: str = "", node: Any = None):
        self.where, self.kind, self.target, self.path, self.node = where, kind, target, path, node
        self.args, self.kwargs, self.flows, self.kwarg_flows, self.output = args, kwargs, flows, kwarg_flows, output

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        if name in self.kwargs:
            return self.kwargs[name]
        return self.args[index] if len(self.args) > index else default

    def run(self, *args: Any) -> Any:
        """Re-run the call with other positional arguments (same keyword arguments)."""
        if self.kind == "call_method":
            return getattr(args[0], self.target)(*args[1:], **self.kwargs)
        return self.target(*args, **self.kwargs)


def grid_aware(rule: Rule) -> Rule:
    """Mark ``rule`` as able to take grid flows (see :mod:`neuroprune.torch.graph.context`)."""
    rule.grid_aware = True
    return rule


def _flows_of(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


@grid_aware
def first_rule(ctx: FlowContext, call: OpCall) -> Any:
    """Elementwise on the first argument (activations, dropout, dtype casts, copies)."""
    return dict(_flows_of(call.flows[0])) if isinstance(call.output, torch.Tensor) else None


@grid_aware
def broadcast_rule(ctx: FlowContext, call: OpCall) -> Any:
    """Elementwise over several tensors with broadcasting (add, mul, where, …).

    Channels of two operands on the same dimensions are coupled (the residual rule); channels
    combined with a tensor that is not constant along them are fixed.
    """
    out = call.output
    if not isinstance(out, torch.Tensor):
        return None
    operands = [(v, _flows_of(f)) for v, f in zip(call.args, call.flows) if isinstance(v, torch.Tensor)]
    operands += [(v, _flows_of(call.kwarg_flows.get(k))) for k, v in call.kwargs.items() if isinstance(v, torch.Tensor)]
    # every operand's entries on the output's dimensions
    aligned = []
    for value, flows in operands:
        shift = out.dim() - value.dim()
        aligned.append((value, shift, {tuple(d + shift for d in key_dims(k)): ids for k, ids in flows.items()}))
    keys = {dims for _, _, entries in aligned for dims in entries}
    result: dict[Any, np.ndarray] = {}
    for dims in sorted(keys):
        carried, fixed = [], False
        for value, shift, entries in aligned:
            if dims in entries:
                carried.append(entries[dims])
                continue
            if any(set(dims) & set(other) for other in entries):
                fixed = True  # the same dimensions carry channels split another way
            elif any(d - shift >= 0 and value.shape[d - shift] > 1 for d in dims):
                fixed = True
        for other in carried[1:]:
            ctx.couple(carried[0], other)
        if fixed:
            ctx.freeze(carried[0], f"{call.where}: channels combined with a fixed tensor")
        else:
            result[make_key(dims)] = carried[0]
    return result


def cat_rule(ctx: FlowContext, call: OpCall) -> Any:
    tensors = list(call.arg(0, "tensors"))
    flows = [_flows_of(f) for f in call.flows[0]] if isinstance(call.flows[0], (list, tuple)) else [{}] * len(tensors)
    dim = _dim(call.arg(1, "dim", 0), tensors[0].dim())
    result: dict[int, np.ndarray] = {}
    for d in range(tensors[0].dim()):
        if d == dim:
            if any(d in f for f in flows):
                parts = []
                for value, f in zip(tensors, flows):
                    if d in f:
                        parts.append(f[d])
                    else:
                        filler = ctx.new_ids(value.shape[d])
                        ctx.freeze(filler, f"{call.where}: fixed part of a concatenation")
                        parts.append(filler)
                result[d] = np.concatenate(parts)
            continue
        carried = [f[d] for f in flows if d in f]
        if not carried:
            continue
        for other in carried[1:]:
            ctx.couple(carried[0], other)
        if len(carried) < len(flows):
            ctx.freeze(carried[0], f"{call.where}: channels concatenated with a fixed tensor")
        else:
            result[d] = carried[0]
    return result


def stack_rule(ctx: FlowContext, call: OpCall) -> Any:
    tensors = list(call.arg(0, "tensors"))
    flows = [_flows_of(f) for f in call.flows[0]]
    dim = _dim(call.arg(1, "dim", 0), tensors[0].dim() + 1)
    result = {}
    for d in range(tensors[0].dim()):
        carried = [f[d] for f in flows if d in f]
        if not carried:
            continue
        for other in carried[1:]:
            ctx.couple(carried[0], other)
        target = d if d < dim else d + 1
        if len(carried) < len(flows):
            ctx.freeze(carried[0], f"{call.where}: channels stacked with a fixed tensor")
        else:
            result[target] = carried[0]
    return result


@grid_aware
def rearrange_rule(ctx: FlowContext, call: OpCall) -> Any:
    """Views, reshapes, permutes, flatten, squeeze, indexing: followed with a probe."""
    value, flows = call.args[0], _flows_of(call.flows[0])
    if not flows:
        freeze_borrowed_widths(ctx, call.where, call.node, call.target, {})
        return {} if isinstance(call.output, torch.Tensor) else None
    if call.target is getattr and not isinstance(call.output, torch.Tensor):
        return None  # x.shape, x.ndim, x.dtype: reading a shape constrains no channel
    if call.kind == "call_function" and call.target is getattr:
        fn = lambda probe: getattr(probe, call.args[1])  # noqa: E731
    else:
        fn = lambda probe: call.run(probe, *call.args[1:])  # noqa: E731
    out = ctx.rearrange(call.where, fn, value, flows, call.output, size_kinds(call.node, call.target, call.output))
    freeze_borrowed_widths(ctx, call.where, call.node, call.target, out)
    return out


@grid_aware
def getitem_rule(ctx: FlowContext, call: OpCall) -> Any:
    container = call.args[0]
    if isinstance(container, torch.Tensor):
        return rearrange_rule(ctx, call)
    flows = call.flows[0]
    if isinstance(flows, (tuple, list)):
        return flows[call.args[1]]
    return None


def _reduced_dims(call: OpCall, ndim: int) -> set[int] | None:
    dim = call.arg(1, "dim")
    if dim is None:
        return None
    dims = dim if isinstance(dim, (tuple, list)) else [dim]
    return {_dim(d, ndim) for d in dims}


def reduce_rule(ctx: FlowContext, call: OpCall) -> Any:
    """mean/sum/amax/…: channels along reduced dimensions are mixed; others shift down."""
    if len(call.args) > 1 and isinstance(call.args[1], torch.Tensor):  # torch.max(a, b)
        return broadcast_rule(ctx, call)
    value, flows = call.args[0], _flows_of(call.flows[0])
    reduced = _reduced_dims(call, value.dim())
    keepdim = bool(call.arg(2, "keepdim", False))
    result = {}
    for dim, ids in flows.items():
        if reduced is None or dim in reduced:
            ctx.freeze(ids, f"{call.where}: reduction across the channels")
            continue
        shift = 0 if keepdim else sum(1 for r in reduced if r < dim)
        result[dim - shift] = ids
    if isinstance(call.output, tuple):  # max/min with dim return (values, indices)
        return (result, {})
    return result


@grid_aware
def across_dim_rule(ctx: FlowContext, call: OpCall) -> Any:
    """softmax, log_softmax, normalize: values along ``dim`` depend on each other."""
    value, flows = call.args[0], dict(_flows_of(call.flows[0]))
    default = 1 if call.target is F.normalize else None
    dim = call.arg(1, "dim", default)
    across = None if dim is None else _dim(dim, value.dim())
    for key in [k for k in flows if across is None or across in key_dims(k)]:
        ctx.freeze(flows.pop(key), f"{call.where}: values across the channels depend on each other")
    return flows


def split_rule(ctx: FlowContext, call: OpCall) -> Any:
    """chunk keeps equal pieces (pruned alike); split with fixed sizes freezes the channels."""
    value, flows = call.args[0], _flows_of(call.flows[0])
    pieces = call.output
    is_chunk = call.target in (torch.chunk, "chunk")
    default_dim = 0
    dim = _dim(call.arg(2, "dim", default_dim), value.dim())
    result = []
    offsets = np.cumsum([0] + [p.shape[dim] for p in pieces])
    equal = len({p.shape[dim] for p in pieces}) == 1
    if dim in flows and is_chunk and equal:
        first = flows[dim][offsets[0]:offsets[1]]
        for j in range(1, len(pieces)):
            ctx.couple(first, flows[dim][offsets[j]:offsets[j + 1]])
    elif dim in flows:
        ctx.freeze(flows[dim], f"{call.where}: split into pieces of fixed sizes")
    for j, _ in enumerate(pieces):
        piece = {d: ids for d, ids in flows.items() if d != dim}
        if dim in flows and is_chunk and equal:
            piece[dim] = flows[dim][offsets[j]:offsets[j + 1]]
        result.append(piece)
    return tuple(result)


@grid_aware
def unbind_rule(ctx: FlowContext, call: OpCall) -> Any:
    """unbind: a grid split along ``dim`` gives each piece its slice (q, k, v of a fused qkv)."""
    value, flows = call.args[0], _flows_of(call.flows[0])
    dim = _dim(call.arg(1, "dim", 0), value.dim())
    pieces = [{} for _ in call.output]
    for key, ids in flows.items():
        dims = key_dims(key)
        rest = make_key([d if d < dim else d - 1 for d in dims if d != dim]) if len(dims) > 1 else None
        if dim not in dims:
            for piece in pieces:
                piece[make_key([d if d < dim else d - 1 for d in dims])] = ids
        elif rest is None:
            ctx.freeze(ids, f"{call.where}: channels unbound into separate tensors")
        else:
            for j, piece in enumerate(pieces):
                piece[rest] = np.take(ids, j, axis=dims.index(dim))
    return tuple(pieces)


def roll_rule(ctx: FlowContext, call: OpCall) -> Any:
    """torch.roll: a cyclic shift; channels along the rolled dimensions are fixed."""
    value, flows = call.args[0], dict(_flows_of(call.flows[0]))
    dims = call.arg(2, "dims")
    rolled = set(range(value.dim())) if dims is None else {
        _dim(d, value.dim()) for d in (dims if isinstance(dims, (tuple, list)) else [dims])}
    for key in [k for k in flows if rolled & set(key_dims(k))]:
        ctx.freeze(flows.pop(key), f"{call.where}: channels rolled")
    return flows


def shape_rule(ctx: FlowContext, call: OpCall) -> Any:
    """``size()``, ``dim()``, ``numel()``, ``.shape``: reading a shape constrains no channel."""
    return None


def new_tensor_rule(ctx: FlowContext, call: OpCall) -> Any:
    """``new_empty``, ``zeros_like``, …: a new tensor that reads only the shape (and dtype)."""
    return {} if isinstance(call.output, torch.Tensor) else None


def spatial_rule(ctx: FlowContext, call: OpCall) -> Any:
    return ctx.spatial(call.where, _flows_of(call.flows[0]))


def pad_rule(ctx: FlowContext, call: OpCall) -> Any:
    value, flows = call.args[0], dict(_flows_of(call.flows[0]))
    padded = len(call.arg(1, "pad")) // 2
    for d in [d for d in flows if d >= value.dim() - padded]:
        ctx.freeze(flows.pop(d), f"{call.where}: padding along the channels")
    return flows


def returned_mask_rule(ctx: FlowContext, call: OpCall) -> Any:
    """timm's ``resolve_self_attn_mask(seq_len, attn, attn_mask, is_causal)``: a new mask shaped
    from ``attn``, or ``attn_mask`` itself."""
    mask = call.arg(2, "attn_mask")
    if mask is not None and call.output is mask:
        return _flows_of(call.flows[2] if len(call.flows) > 2 else call.kwarg_flows.get("attn_mask"))
    return {} if isinstance(call.output, torch.Tensor) else None
