"""Recurrent layers (LSTM, GRU, RNN): hidden units and input features.

A hidden unit owns one row per gate (4 for an LSTM, 3 for a GRU, 1 for an RNN) in the input and
recurrent weights of its layer and direction, and one column of the recurrent weights.
``nn.LSTM`` has a single ``hidden_size`` for all layers and directions, so unit ``p`` is removed
from every layer and direction at once.

Masking sets every gate row of a removed unit to zero: its state then stays exactly zero (an
LSTM's cell is halved each step from zero, a GRU's hidden state likewise), which is what removal
computes.

Example:
    >>> import torch, torch.nn as nn
    >>> lstm = RecurrentHandler().prune(nn.LSTM(3, 8), {"hidden": torch.arange(5)})
    >>> (lstm.hidden_size, tuple(lstm.weight_ih_l0.shape))
    (5, (20, 3))
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn

from neuroprune.core.errors import UnsupportedModuleError
from neuroprune.torch.layers.base import ModuleCall, ModuleHandler, WeightView, slice_parameter

_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def _gates(module: nn.RNNBase) -> int:
    for cls, gates in _GATES.items():
        if isinstance(module, cls):
            return gates
    raise UnsupportedModuleError(f"unknown recurrent layer {type(module).__name__}")


def _layers(module: nn.RNNBase) -> Iterator[tuple[int, str]]:
    suffixes = ["", "_reverse"] if module.bidirectional else [""]
    for layer in range(module.num_layers):
        for suffix in suffixes:
            yield layer, suffix


def _gate_rows(gates: int, hidden: int, units: torch.Tensor) -> torch.Tensor:
    """Row indices of ``units`` in every gate block of a ``(gates * hidden, …)`` weight."""
    return (torch.arange(gates, device=units.device)[:, None] * hidden + units[None, :]).reshape(-1)


class RecurrentHandler(ModuleHandler):
    """``nn.LSTM`` (without ``proj_size``), ``nn.GRU`` and ``nn.RNN``, any depth and direction."""

    module_types = (nn.LSTM, nn.GRU, nn.RNN)

    def axes(self, module):
        return {"input": module.input_size, "hidden": module.hidden_size}

    def propagate(self, ctx, call: ModuleCall):
        module = call.module
        if getattr(module, "proj_size", 0):
            raise UnsupportedModuleError(
                f"{call.path}: LSTM with proj_size={module.proj_size} is not supported; "
                "supported recurrent layers: LSTM, GRU and RNN without projections "
                f"(pass ignore=[{call.path!r}] to leave it alone)"
            )
        x = call.args[0]
        if not isinstance(x, torch.Tensor):
            raise UnsupportedModuleError(f"{call.path}: packed sequences are not supported; pass a padded tensor")
        flows = dict(call.flows[0]) if isinstance(call.flows[0], dict) else {}
        in_ids = flows.pop(x.dim() - 1, None)
        if in_ids is not None:
            ctx.bind_axis(call.path, "input", in_ids)
        for dim, ids in flows.items():
            ctx.freeze(ids, f"{call.path}: channels along the time or batch dimension of a recurrent layer")
        for extra in call.flows[1:]:
            ctx.freeze_all(extra, f"{call.path}: initial state")
        hidden = ctx.producer_axis(call.path, "hidden", module.hidden_size)
        directions = 2 if module.bidirectional else 1
        output, state = call.output
        out_flows = {output.dim() - 1: ctx.concat_ids([hidden] * directions)}
        if isinstance(module, nn.LSTM):
            h_n, c_n = state
            return (out_flows, ({h_n.dim() - 1: hidden}, {c_n.dim() - 1: hidden}))
        return (out_flows, {state.dim() - 1: hidden})

    def incoming(self, module, axis):
        if axis != "hidden":
            return []
        gates, hidden = _gates(module), module.hidden_size

        def by_unit(t: torch.Tensor) -> torch.Tensor:
            # (gates*H, cols) -> (H, gates*cols): row = unit, all its gate rows side by side
            return t.reshape(gates, hidden, -1).transpose(0, 1).reshape(hidden, -1)

        views = []
        for layer, suffix in _layers(module):
            if layer == 0:
                views.append(WeightView(f"weight_ih_l0{suffix}", by_unit,
                                        input_columns=lambda f: f.repeat(gates), input_axis="input"))
            else:
                views.append(WeightView(f"weight_ih_l{layer}{suffix}", by_unit))
            views.append(WeightView(f"weight_hh_l{layer}{suffix}", by_unit))
        return views

    def outgoing(self, module, axis):
        hidden = module.hidden_size
        directions = 2 if module.bidirectional else 1
        if axis == "input":
            return [WeightView(f"weight_ih_l0{suffix}", lambda t: t.t())
                    for layer, suffix in _layers(module) if layer == 0]
        if axis != "hidden":
            return []

        def next_layer_columns(t: torch.Tensor) -> torch.Tensor:
            # (rows, D*H) -> (H, D*rows): row = unit, its column in every direction's half
            return t.t().reshape(directions, hidden, -1).transpose(0, 1).reshape(hidden, -1)

        views = []
        for layer, suffix in _layers(module):
            views.append(WeightView(f"weight_hh_l{layer}{suffix}", lambda t: t.t()))
            if layer > 0:
                views.append(WeightView(f"weight_ih_l{layer}{suffix}", next_layer_columns))
        return views

    def observe(self, module, args, kwargs, output):
        x = args[0] if args else kwargs.get("input")
        return {"input": (x, -1)} if isinstance(x, torch.Tensor) else {}

    def mask(self, module, axis, removed):
        if axis == "input":
            for layer, suffix in _layers(module):
                if layer == 0:
                    getattr(module, f"weight_ih_l0{suffix}").data[:, removed] = 0
            return
        rows = _gate_rows(_gates(module), module.hidden_size, removed)
        for layer, suffix in _layers(module):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                tensor = getattr(module, f"{kind}_l{layer}{suffix}", None)
                if tensor is not None:
                    tensor.data[rows] = 0

    def prune(self, module, keep):
        gates, hidden = _gates(module), module.hidden_size
        directions = 2 if module.bidirectional else 1
        keep_hidden = keep.get("hidden", torch.arange(hidden, device=module.weight_ih_l0.device))
        keep_input = keep.get("input")
        rows = _gate_rows(gates, hidden, keep_hidden)
        next_columns = (torch.arange(directions, device=keep_hidden.device)[:, None] * hidden + keep_hidden[None, :]).reshape(-1)
        for layer, suffix in _layers(module):
            ih, hh = f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"
            slice_parameter(module, ih, rows, 0)
            if layer > 0:
                slice_parameter(module, ih, next_columns, 1)
            elif keep_input is not None:
                slice_parameter(module, ih, keep_input, 1)
            slice_parameter(module, hh, rows, 0)
            slice_parameter(module, hh, keep_hidden, 1)
            for bias in (f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"):
                if getattr(module, bias, None) is not None:
                    slice_parameter(module, bias, rows, 0)
        module.hidden_size = len(keep_hidden)
        if keep_input is not None:
            module.input_size = len(keep_input)
        module._init_flat_weights()
        return module
