"""Discover the neuron groups of a model by following channels through one forward pass.

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> graph = discover(model, torch.randn(1, 4))
    >>> [(g.name, g.size) for g in graph.groups]
    [('0', 8)]
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from neuroprune.core.components import component_labels
from neuroprune.core.errors import DataMismatchError, NeuropruneError, UnsupportedModelError, UnsupportedModuleError
from neuroprune.torch.modes import evaluation_mode
from neuroprune.torch.layers.base import ModuleCall
from neuroprune.torch.layers.registry import handler_for, supported_layer_names
from neuroprune.torch.graph.context import FlowContext
from neuroprune.core.groups import DependencyGraph, Group, GroupMember
from neuroprune.torch.graph.ops import OpCall, rule_for
from neuroprune.torch.graph.sizes import note_untouched
from neuroprune.torch.graph.trace import trace_model


def _map_flows(arg: Any, flows: dict) -> Any:
    """Replace every fx Node in ``arg`` by its flows (non-node leaves become ``None``)."""
    if isinstance(arg, fx.Node):
        return flows.get(arg)
    if isinstance(arg, (tuple, list)):
        return type(arg)(_map_flows(a, flows) for a in arg)
    if isinstance(arg, dict):
        return {k: _map_flows(v, flows) for k, v in arg.items()}
    return None


def _has_flows(structure: Any) -> bool:
    if isinstance(structure, dict):
        return any(isinstance(v, np.ndarray) for v in structure.values()) or any(
            _has_flows(v) for v in structure.values() if not isinstance(v, np.ndarray))
    if isinstance(structure, (tuple, list)):
        return any(_has_flows(v) for v in structure)
    return False


def _module_of(node: fx.Node) -> str | None:
    """The module whose forward holds ``node`` (``None`` at top level); a second call of the
    same module is recorded as ``path@1`` in fx's module stack."""
    path = _node_path(node)
    return None if path == "<top level>" else re.sub(r"@\d+$", "", path)


def _node_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [p for p in stack if p]
    return paths[-1] if paths else "<top level>"


class _FlowInterpreter(fx.Interpreter):
    """Runs the traced graph on real inputs and follows channel ids alongside."""

    def __init__(self, module: fx.GraphModule, ctx: FlowContext, ignore: set[str], frozen: dict[str, str]):
        super().__init__(module)
        self.ctx, self.ignore, self.frozen_modules = ctx, ignore | set(frozen), frozen
        self.flows: dict[fx.Node, Any] = {}
        ctx.node_flows, ctx.node_ndims = self.flows, {}  # for rules that look at where a size came from

    def run_node(self, n: fx.Node) -> Any:
        try:
            value = super().run_node(n)
        except (RuntimeError, ValueError, TypeError, IndexError) as error:  # the model's own computation failed
            if isinstance(error, NeuropruneError):
                raise
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            where = n.target if n.op == "call_module" else _node_path(n)
            raise DataMismatchError(f"the example inputs do not fit the model: running {where} on them raised "
                                    f"{type(error).__name__}: {reason}; pass one batch of the shape and dtype the "
                                    "model takes") from error
        if isinstance(value, torch.Tensor):
            self.ctx.node_ndims[n] = value.dim()
        self.flows[n] = self._flows_for(n, value)
        return value

    def _flows_for(self, n: fx.Node, value: Any) -> Any:
        if n.op in ("placeholder", "get_attr"):
            return {} if isinstance(value, torch.Tensor) else None
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        flows = _map_flows(n.args, self.flows)
        kwarg_flows = _map_flows(n.kwargs, self.flows)
        if n.op == "output":
            self.ctx.freeze_all(flows, "model output")
            return None
        if n.op == "call_module":
            return self._module_flows(n, args, kwargs, flows, kwarg_flows, value)
        touched = _has_flows(flows) or _has_flows(kwarg_flows)
        if not touched:
            note_untouched(self.ctx, n, value)
            return {} if isinstance(value, torch.Tensor) else None
        where = f"{_node_path(n)} ({n.op} {getattr(n.target, '__name__', n.target)})"
        if _is_record(value) or _is_record(args[0] if args else None):
            return _record_flows(self.ctx, where, n, args, kwargs, flows, kwarg_flows, value)
        rule = rule_for(n.op, n.target)
        if rule is None:
            if not isinstance(value, (torch.Tensor, tuple, list)):
                return None  # shape queries and other non-tensor results
            raise UnsupportedModuleError(
                f"{where}: operation {getattr(n.target, '__name__', n.target)!r} on prunable channels is not "
                f"supported. Supported layers: {', '.join(supported_layer_names())}; plus elementwise, "
                "broadcasting, concatenation, chunk, reshaping, pooling and reductions. Pass "
                f"ignore=[{_node_path(n)!r}] to leave that module alone",
                module=_module_of(n))
        if not getattr(rule, "grid_aware", False):
            flows, kwarg_flows = self.ctx.freeze_grids((flows, kwarg_flows), f"{where}: a channel split across dimensions")
        try:
            return rule(self.ctx, OpCall(where, n.op, n.target, tuple(args), kwargs, tuple(flows), kwarg_flows, value,
                                         path=_node_path(n), node=n))
        except UnsupportedModuleError as error:
            if error.module is None and _module_of(n) is not None:
                raise UnsupportedModuleError(str(error), module=_module_of(n)) from error
            raise

    def _module_flows(self, n, args, kwargs, flows, kwarg_flows, value):
        path = n.target
        module = self.module.get_submodule(path)
        touched = _has_flows(flows) or _has_flows(kwarg_flows)
        if path in self.ignore:
            why = f"frozen, {self.frozen_modules[path]}" if path in self.frozen_modules else "ignored"
            self.ctx.freeze_all((flows, kwarg_flows), f"{path}: {why}")
            return _empty_like(value)
        handler = handler_for(module)
        if handler is None:
            if not touched:
                return _empty_like(value)
            raise UnsupportedModuleError(
                f"{path}: layer type {type(module).__name__} is not supported; supported: "
                f"{', '.join(supported_layer_names())}. Pass ignore=[{path!r}] to leave it alone", module=path)
        if not handler.grid_aware:
            flows, kwarg_flows = self.ctx.freeze_grids((flows, kwarg_flows), f"{path}: a channel split across dimensions")
        call = ModuleCall(path, module, tuple(args), kwargs, tuple(flows), kwarg_flows, value)
        try:
            return handler.propagate(self.ctx, call)
        except UnsupportedModuleError as error:
            if error.module is None:
                raise UnsupportedModuleError(str(error), module=path) from error
            raise


def _is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def _is_record(value: Any) -> bool:
    """A dataclass instance, a named tuple or a mapping (a structured output, e.g. HF ``ModelOutput``)."""
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)) or isinstance(value, Mapping) or \
        _is_namedtuple(value)


def _record_items(value: Any) -> dict:
    if isinstance(value, Mapping):
        return dict(value.items())
    if _is_namedtuple(value):
        return value._asdict()
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}


def _record_flows(ctx: FlowContext, where: str, n: fx.Node, args, kwargs, flows, kwarg_flows, value) -> Any:
    """Building a record (dataclass, ``ModelOutput``, dict) from tensors, or reading a field of one.

    A record's flows are a dict of field name -> flows, found by matching each field to the
    argument tensor it *is*; reading a field (``out.logits``, ``out["logits"]``) returns its flows.
    Channels passed into anything else that returns a record are fixed.
    """
    if args and _is_record(args[0]) and len(args) > 1 and n.target in (getattr, operator.getitem):
        record, key = flows[0], args[1]
        if _is_namedtuple(args[0]) and isinstance(record, tuple):
            if isinstance(key, str) and key in type(args[0])._fields:
                return record[type(args[0])._fields.index(key)]
            if isinstance(key, int):
                return record[key]
        if isinstance(record, dict) and isinstance(key, str):
            return record.get(key, _empty_like(value))
    if not _is_record(value):
        ctx.freeze_all((flows, kwarg_flows), f"{where}: channels read from a record by an unknown operation")
        return _empty_like(value)
    sources = [(a, f) for a, f in zip(args, flows)] + [(kwargs[k], f) for k, f in kwarg_flows.items()]
    by_identity = {id(a): f for a, f in sources if isinstance(a, torch.Tensor) and f}
    result, used = {}, set()
    for name, field_value in _record_items(value).items():
        if isinstance(field_value, torch.Tensor) and id(field_value) in by_identity:
            result[name] = by_identity[id(field_value)]
            used.add(id(field_value))
        elif _is_record(field_value):
            result[name] = None
        else:
            result[name] = _empty_like(field_value)
    for a, f in sources:
        if id(a) not in used:
            ctx.freeze_all(f, f"{where}: channels passed into a record that does not hold them as they are")
    return tuple(result.values()) if _is_namedtuple(value) else result


def _empty_like(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {}
    if isinstance(value, (tuple, list)):
        return tuple(_empty_like(v) for v in value)
    return None


def _shared_parameter_paths(model: nn.Module, paths: Iterable[str]) -> set[str]:
    owners: dict[int, set[str]] = {}
    for path in paths:
        for param in model.get_submodule(path).parameters(recurse=False):
            owners.setdefault(id(param), set()).add(path)
    return {p for group in owners.values() if len(group) > 1 for p in group}


def _unit_order(ctx: FlowContext, unit: np.ndarray):
    """Number the units produced by some layer, in order of first appearance along the producers.

    Returns the sorted unit labels, their group, their index within the group, and for every
    group its producers and size.
    """
    sequence = np.concatenate([unit[ctx.axes[key]] for key in ctx.producers])
    labels, first, local = np.unique(sequence, return_index=True, return_inverse=True)
    # consecutive positions of one producer axis share a group
    starts = np.cumsum([0] + [len(ctx.axes[key]) for key in ctx.producers])
    same_axis = np.ones(len(sequence) - 1, dtype=bool)
    same_axis[starts[1:-1] - 1] = False
    rows, cols = local[:-1][same_axis], local[1:][same_axis]
    n = len(labels)
    raw_group = component_labels(n, rows, cols)
    # renumber groups and units by first appearance
    order = np.argsort(first, kind="stable")
    group_number: dict[int, int] = {}
    group_of = np.empty(n, dtype=np.int64)
    index_in_group = np.empty(n, dtype=np.int64)
    sizes: list[int] = []
    for label_index in order:
        g = group_number.setdefault(int(raw_group[label_index]), len(group_number))
        if g == len(sizes):
            sizes.append(0)
        group_of[label_index], index_in_group[label_index] = g, sizes[g]
        sizes[g] += 1
    producers: dict[int, list[tuple[str, str]]] = {}
    for key, start in zip(ctx.producers, starts[:-1]):
        producers.setdefault(int(group_of[local[start]]), []).append(key)
    return labels, group_of, index_in_group, producers, sizes


def _refuse_unhandled_parameters(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModuleError` naming the modules that hold their own parameters but
    have no handler (a custom layer computing with raw parameters), the likely reason that no
    neuron was found."""
    unhandled = [(path, type(module).__name__) for path, module in model.named_modules()
                 if handler_for(module) is None and any(True for _ in module.parameters(recurse=False))]
    if unhandled:
        where = ", ".join(f"{path or '(the model)'} ({name})" for path, name in unhandled[:5])
        more = f" and {len(unhandled) - 5} more" if len(unhandled) > 5 else ""
        raise UnsupportedModuleError(
            f"no layer neuroprune knows computes neurons in this model; these modules compute with parameters of "
            f"their own but have no handler: {where}{more}. Supported layers: {', '.join(supported_layer_names())}. "
            "Register a handler for your layer (docs/architecture.md, 'Add a layer handler')",
            module=unhandled[0][0])


def build_groups(model: nn.Module, ctx: FlowContext) -> DependencyGraph:
    """Turn ids, couplings and frozen ids into :class:`Group` objects."""
    ctx.freeze_unsettled_splits()
    unit = ctx.unit_labels()
    paths = {path for path, _ in ctx.axes}
    for path in _shared_parameter_paths(model, paths):
        for (p, axis), ids in list(ctx.axes.items()):
            if p == path:
                ctx.freeze(ids, f"{path}: parameters shared with another layer")
    if not ctx.producers:  # no layer with a handler computes neurons: nothing is prunable
        _refuse_unhandled_parameters(model)
        return DependencyGraph([], {}, {}, {})
    labels, group_of, index_in_group, producers, sizes = _unit_order(ctx, unit)

    frozen = np.zeros(len(labels), dtype=bool)
    reasons: dict[int, set[str]] = {}
    for ids, reason in ctx.frozen:
        hit = np.unique(unit[ids])
        where = np.searchsorted(labels, hit).clip(max=len(labels) - 1)
        matched = where[labels[where] == hit]
        frozen[matched] = True
        for g in np.unique(group_of[matched]):
            reasons.setdefault(int(g), set()).add(reason)

    members: dict[int, list[GroupMember]] = {g: [] for g in range(len(sizes))}
    for (path, axis), ids in ctx.axes.items():
        here = unit[ids]
        where = np.searchsorted(labels, here).clip(max=len(labels) - 1)
        known = labels[where] == here
        groups_here = np.where(known, group_of[where], -1)
        for g in np.unique(groups_here[groups_here >= 0]):
            unit_of = np.where(groups_here == g, index_in_group[where], -1).astype(np.int64)
            members[int(g)].append(GroupMember(path, axis, unit_of))

    groups, fixed = [], {}
    for g, size in enumerate(sizes):
        path, axis = producers[g][0]
        name = path if axis in ("out", "dim") else f"{path}:{axis}"
        prunable = np.ones(size, dtype=bool)
        in_group = np.nonzero(group_of == g)[0]
        prunable[index_in_group[in_group]] = ~frozen[in_group]
        why = sorted(reasons.get(g, set()))
        if not prunable.any():
            fixed[name] = why
            continue
        groups.append(Group(name, size, members[g], prunable, producers[g], why))

    module_types, axis_sizes = {}, {}
    for path in paths:
        module = model.get_submodule(path)
        module_types[path] = type(module).__name__
        axis_sizes[path] = handler_for(module).axes(module)
    return DependencyGraph(groups, fixed, module_types, axis_sizes)


def discover(model: nn.Module, example_inputs: Any, *, ignore: Iterable[str] = (),
             ignore_untraceable: bool = False) -> DependencyGraph:
    """Find which neurons of ``model`` can be removed and what each removal touches.

    Args:
        model: any ``nn.Module`` traceable by torch.fx (see :mod:`neuroprune.torch.graph.trace`).
        example_inputs: one input batch (a tensor, or a tuple of positional inputs).
        ignore: module paths to leave alone; they become opaque and their channels fixed.
        ignore_untraceable: instead of raising :class:`UnsupportedModuleError` for a module
            that cannot be traced or followed (value-dependent control flow, an unknown layer
            or operation on prunable channels), freeze that module as if it were ignored and go
            on; :attr:`DependencyGraph.frozen_modules` says which and why. A problem in the
            model's own forward (not in a submodule) still raises.

    The model's parameters, buffers and train/eval modes are left as they were.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"discover needs a torch.nn.Module, got {type(model).__qualname__}")
    ignore = set(ignore)
    unknown = sorted(p for p in ignore if p not in dict(model.named_modules()))
    if unknown:
        raise UnsupportedModuleError(f"ignore names modules the model does not have: {', '.join(unknown)}")
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    frozen: dict[str, str] = {}
    while True:
        try:
            graph = _discover_once(model, inputs, ignore, frozen)
        except UnsupportedModuleError as error:
            path = error.module
            if not ignore_untraceable or path is None or path in ignore or path in frozen:
                raise
            frozen[path] = _short_reason(error)
            continue
        graph.frozen_modules = dict(frozen)
        return graph


def _short_reason(error: UnsupportedModuleError) -> str:
    """The first sentence of an error, for the report ("cannot trace …: TraceError: …")."""
    text = str(error).splitlines()[0]
    cut = text.find(". ")
    return text if cut < 0 else text[:cut]


def _discover_once(model: nn.Module, inputs: tuple, ignore: set[str], frozen: dict[str, str]) -> DependencyGraph:
    graph_module = trace_model(model, ignore | set(frozen))
    ctx = FlowContext()
    ctx.model = model
    with evaluation_mode(model), torch.no_grad():
        _FlowInterpreter(graph_module, ctx, ignore, frozen).run(*inputs)
    return build_groups(model, ctx)
