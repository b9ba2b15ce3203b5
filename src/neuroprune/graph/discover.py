"""Discover the neuron groups of a model by following channels through one forward pass.

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> graph = discover(model, torch.randn(1, 4))
    >>> [(g.name, g.size) for g in graph.groups]
    [('0', 8)]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sparse
import torch
import torch.fx as fx
import torch.nn as nn
from scipy.sparse.csgraph import connected_components

from ..errors import UnsupportedModuleError
from ..surgery.base import ModuleCall
from ..surgery.registry import handler_for, supported_layer_names
from .context import FlowContext
from .groups import DependencyGraph, Group, GroupMember
from .ops import OpCall, rule_for
from .trace import trace_model


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


def _node_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [p for p in stack if p]
    return paths[-1] if paths else "<top level>"


class _FlowInterpreter(fx.Interpreter):
    """Runs the traced graph on real inputs and follows channel ids alongside."""

    def __init__(self, module: fx.GraphModule, ctx: FlowContext, ignore: set[str]):
        super().__init__(module)
        self.ctx, self.ignore = ctx, ignore
        self.flows: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
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
            return {} if isinstance(value, torch.Tensor) else None
        where = f"{_node_path(n)} ({n.op} {getattr(n.target, '__name__', n.target)})"
        rule = rule_for(n.op, n.target)
        if rule is None:
            if not isinstance(value, (torch.Tensor, tuple, list)):
                return None  # shape queries and other non-tensor results
            raise UnsupportedModuleError(
                f"{where}: operation {getattr(n.target, '__name__', n.target)!r} on prunable channels is not "
                f"supported. Supported layers: {', '.join(supported_layer_names())}; plus elementwise, "
                "broadcasting, concatenation, chunk, reshaping, pooling and reductions. Pass "
                f"ignore=[{_node_path(n)!r}] to leave that module alone")
        return rule(self.ctx, OpCall(where, n.op, n.target, tuple(args), kwargs, tuple(flows), kwarg_flows, value))

    def _module_flows(self, n, args, kwargs, flows, kwarg_flows, value):
        path = n.target
        module = self.module.get_submodule(path)
        touched = _has_flows(flows) or _has_flows(kwarg_flows)
        if path in self.ignore:
            self.ctx.freeze_all((flows, kwarg_flows), f"{path}: ignored")
            return _empty_like(value)
        handler = handler_for(module)
        if handler is None:
            if not touched:
                return _empty_like(value)
            raise UnsupportedModuleError(
                f"{path}: layer type {type(module).__name__} is not supported; supported: "
                f"{', '.join(supported_layer_names())}. Pass ignore=[{path!r}] to leave it alone")
        call = ModuleCall(path, module, tuple(args), kwargs, tuple(flows), kwarg_flows, value)
        return handler.propagate(self.ctx, call)


def _empty_like(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {}
    if isinstance(value, (tuple, list)):
        return tuple(_empty_like(v) for v in value)
    return None


def _components(ctx: FlowContext) -> np.ndarray:
    """Connected component label of every channel id under the couplings."""
    n = ctx.next_id
    if ctx.edges:
        rows = np.concatenate([a for a, _ in ctx.edges])
        cols = np.concatenate([b for _, b in ctx.edges])
    else:
        rows = cols = np.zeros(0, dtype=np.int64)
    matrix = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return connected_components(matrix, directed=False)[1]


def _shared_parameter_paths(model: nn.Module, paths: Iterable[str]) -> set[str]:
    owners: dict[int, set[str]] = {}
    for path in paths:
        for param in model.get_submodule(path).parameters(recurse=False):
            owners.setdefault(id(param), set()).add(path)
    return {p for group in owners.values() if len(group) > 1 for p in group}


def build_groups(model: nn.Module, ctx: FlowContext) -> DependencyGraph:
    """Turn ids, couplings and frozen ids into :class:`Group` objects."""
    unit = _components(ctx)
    frozen_units: dict[int, list[str]] = {}
    paths = {path for path, _ in ctx.axes}
    for path in _shared_parameter_paths(model, paths):
        for (p, axis), ids in ctx.axes.items():
            if p == path:
                ctx.freeze(ids, f"{path}: parameters shared with another layer")
    for ids, reason in ctx.frozen:
        for label in np.unique(unit[ids]):
            frozen_units.setdefault(int(label), []).append(reason)

    # Units computed by the same producer belong to one group.
    labels = sorted({int(u) for key in ctx.producers for u in unit[ctx.axes[key]]})
    index_of = {label: i for i, label in enumerate(labels)}
    rows, cols = [], []
    for key in ctx.producers:
        local = np.array([index_of[int(u)] for u in unit[ctx.axes[key]]])
        rows.append(local[:-1])
        cols.append(local[1:])
    n = len(labels)
    rows_a = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    cols_a = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    group_of = connected_components(
        sparse.coo_matrix((np.ones(len(rows_a)), (rows_a, cols_a)), shape=(n, n)), directed=False)[1]

    # Order units and groups by first appearance along the producers, in forward order.
    group_units: dict[int, list[int]] = {}
    group_producers: dict[int, list[tuple[str, str]]] = {}
    for key in ctx.producers:
        for u in unit[ctx.axes[key]]:
            g = int(group_of[index_of[int(u)]])
            units = group_units.setdefault(g, [])
            if int(u) not in units:
                units.append(int(u))
        g = int(group_of[index_of[int(unit[ctx.axes[key][0]])]])
        group_producers.setdefault(g, []).append(key)
    position_in_group = {u: (g, i) for g, units in group_units.items() for i, u in enumerate(units)}

    members: dict[int, list[GroupMember]] = {g: [] for g in group_units}
    for (path, axis), ids in ctx.axes.items():
        labels_here = unit[ids]
        for g in {position_in_group[int(u)][0] for u in labels_here if int(u) in position_in_group}:
            unit_of = np.array([position_in_group[int(u)][1] if position_in_group.get(int(u), (None,))[0] == g else -1
                                for u in labels_here], dtype=np.int64)
            members[g].append(GroupMember(path, axis, unit_of))

    groups, frozen = [], {}
    for g, units in group_units.items():
        path, axis = group_producers[g][0]
        name = path if axis in ("out", "dim") else f"{path}:{axis}"
        prunable = np.array([u not in frozen_units for u in units])
        reasons = sorted({r for u in units for r in frozen_units.get(u, [])})
        if prunable.sum() == 0:
            frozen[name] = reasons
            continue
        groups.append(Group(name, len(units), members[g], prunable, group_producers[g], reasons))

    module_types, axis_sizes = {}, {}
    for path in paths:
        module = model.get_submodule(path)
        module_types[path] = type(module).__name__
        axis_sizes[path] = handler_for(module).axes(module)
    return DependencyGraph(groups, frozen, module_types, axis_sizes)


def discover(model: nn.Module, example_inputs: Any, *, ignore: Iterable[str] = ()) -> DependencyGraph:
    """Find which neurons of ``model`` can be removed and what each removal touches.

    Args:
        model: any ``nn.Module`` traceable by torch.fx (see :mod:`neuroprune.graph.trace`).
        example_inputs: one input batch (a tensor, or a tuple of positional inputs).
        ignore: module paths to leave alone; they become opaque and their channels fixed.

    The model's parameters, buffers and train/eval modes are left as they were.
    """
    ignore = set(ignore)
    unknown = sorted(p for p in ignore if p not in dict(model.named_modules()))
    if unknown:
        raise UnsupportedModuleError(f"ignore names modules the model does not have: {', '.join(unknown)}")
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    graph_module = trace_model(model, ignore)
    modes = {name: m.training for name, m in model.named_modules()}
    ctx = FlowContext()
    try:
        model.eval()
        with torch.no_grad():
            _FlowInterpreter(graph_module, ctx, ignore).run(*inputs)
    finally:
        for name, m in model.named_modules():
            m.training = modes[name]
    return build_groups(model, ctx)
