"""Capture a model's forward as a ``torch.fx`` graph, stopping at layers neuroprune knows.

Why torch.fx: it records module calls by their qualified names (the names plans, reports and
errors use), keeps RNN and attention layers as single nodes with known weight layouts, and needs no
backward pass. Its limit is Python control flow that depends on tensor values; such a module can
be left alone with ``ignore=[path]``, which makes it an opaque leaf.

Example:
    >>> import torch.nn as nn
    >>> graph = trace_model(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    >>> [n.op for n in graph.graph.nodes]
    ['placeholder', 'call_module', 'call_module', 'output']
"""

from __future__ import annotations

import keyword
from collections.abc import Iterable

import torch.fx as fx
import torch.nn as nn

from neuroprune.core.errors import UnsupportedModuleError
from neuroprune.torch.layers.registry import handler_for
from neuroprune.torch.graph.torch_blocks import traceable_forward

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class PruningTracer(fx.Tracer):
    """Leaves: layers with a handler, ignored paths, and other built-in ``torch.nn`` layers."""

    def __init__(self, ignore: Iterable[str] = ()):
        super().__init__()
        self.ignore = set(ignore)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.ignore:
            return True
        handler = handler_for(m)
        if handler is not None and not handler.traced_through:
            return True
        if traceable_forward(m) is not None:
            return False
        if isinstance(m, _CONTAINERS):
            return False
        return type(m).__module__.startswith(("torch.nn", "torch.ao.nn"))

    def call_module(self, m: nn.Module, forward, args, kwargs):
        """Torch's transformer blocks are traced through their plain (non-fused) computation."""
        plain = traceable_forward(m)
        if plain is not None and not self.is_leaf_module(m, self.path_of_module(m)):
            forward = plain
        return super().call_module(m, forward, args, kwargs)


def trace_model(model: nn.Module, ignore: Iterable[str] = ()) -> fx.GraphModule:
    """Trace ``model``; a failure names the module being traced and how to leave it alone."""
    reserved = sorted(name for name, _ in model.named_modules() if any(keyword.iskeyword(part) for part in name.split(".")))
    if reserved:
        raise UnsupportedModuleError(
            f"cannot trace the model: module names {', '.join(repr(n) for n in reserved)} are Python keywords, which "
            "torch.fx cannot write as code; rename those attributes (e.g. 'if' -> 'if_')")
    tracer = PruningTracer(ignore)
    try:
        graph = tracer.trace(model)
    except Exception as error:  # fx raises many types; all mean "cannot trace this code"
        stack = list(getattr(tracer, "module_stack", {}) or {})
        path = next((p for p in reversed(stack) if p), "")
        where = f"module {path!r} ({type(model.get_submodule(path)).__name__})" if path else "the model's forward"
        hint = f"pass ignore=[{path!r}] to leave it unpruned" if path else "make the forward traceable by torch.fx"
        raise UnsupportedModuleError(
            f"cannot trace {where}: {type(error).__name__}: {error}. Control flow that depends on "
            f"tensor values cannot be followed; {hint}", module=path) from error
    try:
        return fx.GraphModule(model, graph, class_name=type(model).__name__)
    except SyntaxError as error:  # names fx cannot turn into Python code
        raise UnsupportedModuleError(f"cannot trace the model: torch.fx cannot write its forward as code "
                                     f"({error.msg}); rename modules whose names are not Python identifiers") from error
