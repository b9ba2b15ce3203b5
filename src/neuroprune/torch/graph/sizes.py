"""Where the sizes of a view or reshape come from, and what that ties together.

``x.view(B, groups, C // groups, H, W)`` gives one size as a number (``groups``), others read
from shapes. A number does not follow pruning; a size read from a shape does, but ties the width
it was read from to the channels it sizes: ``reshape(B, N, C)`` with ``C`` read from the input
of an attention block breaks as soon as that input loses channels and the heads do not.

Example:
    >>> import torch, torch.nn as nn
    >>> from neuroprune import discover
    >>> class Merge(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 2)
    ...     def forward(self, x):
    ...         B, C = self.a(x).shape
    ...         return self.c(self.b(x).reshape(B, C))
    >>> discover(Merge(), torch.randn(2, 4)).frozen["a"]
    ['<top level> (call_method reshape): this width is read from the shape to size other channels']
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
import torch.fx

from neuroprune.torch.graph.context import FlowContext, key_dims

_RESHAPES = ("view", "reshape", torch.reshape)
_SIZE_ARITHMETIC = {operator.floordiv, operator.mul, operator.add, operator.sub, operator.truediv, int}


def _sizes(node: torch.fx.Node) -> list:
    sizes = list(node.args[1:])
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = list(sizes[0])
    return sizes


def size_kinds(node: Any, target: Any, output: Any) -> list[str] | None:
    """For a view/reshape node: how the code gives each output size ("number", "shape", "infer")."""
    if node is None or target not in _RESHAPES or not isinstance(output, torch.Tensor):
        return None
    sizes = _sizes(node)
    if len(sizes) != output.dim() or any(not isinstance(s, (int, torch.fx.Node)) for s in sizes):
        return None
    return ["shape" if isinstance(s, torch.fx.Node) else "infer" if s == -1 else "number" for s in sizes]


def shape_sources(node: Any, seen: set | None = None) -> list[tuple[Any, int]]:
    """(tensor node, dimension) pairs an int computed in the graph was read from."""
    seen = set() if seen is None else seen
    if not isinstance(node, torch.fx.Node) or node in seen:
        return []
    seen.add(node)
    if node.op == "call_method" and node.target == "size" and len(node.args) > 1:
        return [(node.args[0], node.args[1])]
    if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], int):
        shape = node.args[0]
        if isinstance(shape, torch.fx.Node) and (
                (shape.op == "call_method" and shape.target == "size" and len(shape.args) == 1)
                or (shape.op == "call_function" and shape.target is getattr and shape.args[1] == "shape")):
            return [(shape.args[0], node.args[1])]
    if node.op == "call_function" and node.target in _SIZE_ARITHMETIC:
        return [source for arg in node.args for source in shape_sources(arg, seen)]
    return []


def freeze_borrowed_widths(ctx: FlowContext, where: str, node: Any, target: Any, out: dict) -> None:
    """Fix the channels whose width a view/reshape borrows to size *other* channels (or channels
    that cannot be pruned): the two widths would disagree after pruning."""
    if node is None or target not in _RESHAPES:
        return
    for position, size in enumerate(_sizes(node)):
        if not isinstance(size, torch.fx.Node):
            continue
        landing = [set(np.asarray(ids).ravel()) for key, ids in out.items() if position in key_dims(key)]
        for source, dim in shape_sources(size):
            flows = ctx.node_flows.get(source)
            if not isinstance(flows, dict) or source not in ctx.node_ndims:
                continue
            dim = dim % ctx.node_ndims[source]
            for key, ids in flows.items():
                if dim in key_dims(key) and (not landing or set(np.asarray(ids).ravel()) != landing[0]):
                    ctx.freeze(ids, f"{where}: this width is read from the shape to size other channels")


def note_untouched(ctx: FlowContext, node: Any, output: Any) -> None:
    """A call no prunable channel reaches may still size itself with a prunable width."""
    if node.target in _RESHAPES:
        path = next(reversed(node.meta.get("nn_module_stack") or {"<top level>": None}))
        freeze_borrowed_widths(ctx, f"{path} ({node.op} {node.target})", node, node.target, {})
