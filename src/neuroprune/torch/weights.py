"""Weights of a torch model as the core's criteria read them: rows of one axis (the seam's view).

A minimal version for the backend seam; the criteria side (core-maths) owns the full one.

Example:
    >>> import torch.nn as nn
    >>> rows = weight_rows(nn.Linear(3, 2), "", "out")
    >>> [(r.name, tuple(r.rows.shape)) for r in rows]
    [('weight', (2, 3))]
"""

from __future__ import annotations

import torch.nn as nn

from neuroprune.core.backend import WeightRows
from neuroprune.torch.layers.registry import handler_for


def weight_rows(model: nn.Module, path: str, axis: str, outgoing: bool = False) -> list[WeightRows]:
    """The weights computing (and with ``outgoing`` also reading) ``path``'s units of ``axis``,
    each as a ``units x entries`` tensor on the model's device (detached)."""
    module = model.get_submodule(path)
    handler = handler_for(module)
    if handler is None:
        return []
    views = handler.incoming(module, axis) + (handler.outgoing(module, axis) if outgoing else [])
    return [WeightRows(view.name, view.rows(getattr(module, view.name).detach()), view.input_axis,
                       view.input_columns) for view in views]
