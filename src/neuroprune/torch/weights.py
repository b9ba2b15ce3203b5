"""Weights of a torch model as the core's criteria read them: rows of one axis (the seam's view).

The torch side of :meth:`neuroprune.core.backend.Backend.weight_rows`, built from the layer
handlers' ``incoming`` / ``outgoing`` views. Rows stay torch tensors on the model's device
(detached, in the parameter's dtype), so criteria reduce them there; ``input_columns`` is a numpy
index array (column ``c`` of the rows reads unit ``input_columns[c]`` of ``input_axis``).

Example:
    >>> import torch.nn as nn
    >>> rows = weight_rows(nn.Sequential(nn.Linear(3, 2)), "0", "out")
    >>> [(r.name, tuple(r.rows.shape), r.input_axis, r.input_columns.tolist()) for r in rows]
    [('weight', (2, 3), 'in', [0, 1, 2])]
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from neuroprune.core.backend import WeightRows
from neuroprune.torch.layers.registry import handler_for


def weight_rows(model: nn.Module, path: str, axis: str, outgoing: bool = False) -> list[WeightRows]:
    """The weights computing (and with ``outgoing`` also reading) ``path``'s units of ``axis``:
    the incoming ones first, then the outgoing ones, each ``units x entries``."""
    module = model.get_submodule(path)
    handler = handler_for(module)
    if handler is None:
        return []
    views = handler.incoming(module, axis) + (handler.outgoing(module, axis) if outgoing else [])
    sizes = handler.axes(module)
    rows = []
    for view in views:
        columns = None
        if view.input_columns is not None and view.input_axis in sizes:
            columns = view.input_columns(torch.arange(sizes[view.input_axis])).numpy().astype(np.int64)
        rows.append(WeightRows(view.name, view.rows(module.get_parameter(view.name).detach()),
                               view.input_axis if columns is not None else None, columns))
    return rows


def reads_like_linear(module: nn.Module) -> bool:
    """True for layers computing ``x @ W^T + b`` on their last dimension: ``nn.Linear`` (and
    subclasses) and Hugging Face's ``Conv1D`` (GPT-2 and kin, weight stored ``(in, out)``)."""
    kind = type(module)
    return isinstance(module, nn.Linear) or (kind.__name__ == "Conv1D" and kind.__module__.startswith("transformers."))
