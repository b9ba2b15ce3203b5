"""The head count of hand-written attention modules, kept in step with their pruned projections.

A module like timm's ``Attention`` splits its ``qkv`` projection into heads with
``reshape(B, N, 3, self.num_heads, self.head_dim)``. Discovery (:mod:`neuroprune.torch.graph.attention_ops`)
makes each head a unit and records the module itself under the axis ``heads``; the projections
lose their rows and columns through their own handlers, and this handler brings the module's
attributes in line: the head count (``num_heads``, ``n_heads``, ``nhead``, ``n_head``, ``heads``
or ``num_attention_heads``) and widths that are a multiple of it (``attn_dim``,
``all_head_size``, ``inner_dim``). ``head_dim`` and the softmax scale are never changed: whole
heads are removed. Plans record the module like any layer, so :func:`neuroprune.load` replays it.

A forward that merges the heads with a size read from another tensor's shape
(``x.transpose(1, 2).reshape(B, N, C)`` with ``B, N, C = x.shape``, as in older timm releases)
would still ask for the old width: the module then gets its forward re-traced with torch.fx (in
eval mode, keyword arguments at their defaults) and that size replaced by ``-1``.

Unlike other handlers this one serves modules by attribute, not by type, and such modules are
traced through, never leaves.

Example:
    >>> import torch, torch.nn as nn
    >>> class Attn(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.num_heads, self.attn_dim = 4, 8
    ...     def forward(self, x):
    ...         return x
    >>> HeadCountHandler().prune(Attn(), {"heads": torch.tensor([0, 2])}).attn_dim
    4
"""

from __future__ import annotations

import copy
import types

import torch
import torch.nn as nn

from neuroprune.torch.layers.base import ModuleHandler


def head_count_attribute(module: nn.Module) -> str | None:
    """The name of ``module``'s head-count attribute (a positive int), or ``None``."""
    for name in HeadCountHandler.COUNT_NAMES:
        value = module.__dict__.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return name
    return None


class HeadCountHandler(ModuleHandler):
    """Axis ``heads`` of a module that computes attention in its own forward."""

    COUNT_NAMES = ("num_heads", "n_heads", "nhead", "n_head", "heads", "num_attention_heads")
    WIDTH_NAMES = ("attn_dim", "all_head_size", "inner_dim")
    traced_through = True

    def serves(self, module: nn.Module) -> bool:
        """Modules outside ``torch`` with a head-count attribute."""
        return not type(module).__module__.startswith("torch.") and head_count_attribute(module) is not None

    def axes(self, module):
        return {"heads": getattr(module, head_count_attribute(module))}

    def propagate(self, ctx, call):  # never a leaf: discovery traces through the forward
        raise NotImplementedError

    def prune(self, module, keep):
        name = head_count_attribute(module)
        old, new = getattr(module, name), len(keep["heads"])
        setattr(module, name, new)
        for width in self.WIDTH_NAMES:
            value = module.__dict__.get(width)
            if isinstance(value, int) and not isinstance(value, bool) and value % old == 0:
                setattr(module, width, value // old * new)
        graph = _trace_alone(module)
        if _free_merge_sizes(module, graph):
            _install_forward(module, graph)
        return module

    def rewrite_problem(self, module: nn.Module) -> str | None:
        """Why the forward could not be re-traced after pruning, or ``None`` when it can."""
        try:
            graph = _trace_alone(copy.copy(module))  # fx stores constants on the traced module
        except Exception as error:  # fx raises many types
            return f"its forward cannot be traced on its own to follow the new head count ({type(error).__name__}: {error})"
        for node in graph.nodes:
            if node.op == "get_attr" and not _resolves(module, node.target):
                return "its forward creates constant tensors, so it cannot be re-traced after pruning"
        return None


def _resolves(module: nn.Module, target: str) -> bool:
    obj = module
    for part in target.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _trace_alone(module: nn.Module):
    """The class forward of ``module`` as an fx graph, in eval mode, keyword defaults fixed."""
    import inspect

    from neuroprune.torch.graph.trace import PruningTracer
    from neuroprune.torch.modes import evaluation_mode

    forward = type(module).forward
    concrete = {name: p.default for name, p in inspect.signature(forward).parameters.items()
                if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}
    with evaluation_mode(module):
        tracer = PruningTracer()
        return tracer.trace(module, concrete_args=concrete or None) if concrete else tracer.trace(module)


_MERGES = {"reshape", "view", torch.reshape}
_PASS = {"contiguous", "float", "to", "type_as", "clone"}


def _free_merge_sizes(module: nn.Module, graph) -> bool:
    """Replace sizes read from shapes by ``-1`` in the reshapes that feed a Linear; any changed?"""
    changed = False
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(module.get_submodule(node.target), nn.Linear):
            continue
        source = node.args[0] if node.args else None
        while hasattr(source, "op") and (
                (source.op == "call_method" and source.target in _PASS)
                or (source.op == "call_module" and isinstance(module.get_submodule(source.target),
                                                              (nn.Identity, nn.Dropout)))):
            source = source.args[0]
        if not hasattr(source, "op") or source.target not in _MERGES:
            continue
        sizes = list(source.args[1:])
        packed = len(sizes) == 1 and isinstance(sizes[0], (tuple, list))
        if packed:
            sizes = list(sizes[0])
        if not sizes or not hasattr(sizes[-1], "op") or -1 in [s for s in sizes if isinstance(s, int)]:
            continue
        sizes[-1] = -1
        source.args = (source.args[0], tuple(sizes)) if packed else (source.args[0], *sizes)
        changed = True
    return changed


def _install_forward(module: nn.Module, graph) -> None:
    """Run ``graph`` as ``module``'s forward (bound to the module, so later surgery is seen)."""
    import torch.fx as fx

    code = fx.GraphModule(module, graph)
    module.forward = types.MethodType(type(code).forward, module)
