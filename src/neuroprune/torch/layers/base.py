"""The contract every layer handler fulfils.

A handler describes how one layer type takes part in pruning: which *axes* of neurons it has
(``"out"`` rows of a Linear, ``"heads"`` of an attention block, …), how channels flow through it
(for dependency discovery), which weights feed and read each axis (for scoring), how to hide
neurons without changing shapes (masks) and how to remove them for real (surgery).

Handlers are stateless; one instance serves every module of its type.

Example:
    >>> import torch.nn as nn
    >>> from neuroprune.torch.layers.registry import handler_for
    >>> handler_for(nn.Linear(4, 3)).axes(nn.Linear(4, 3))
    {'in': 4, 'out': 3}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

#: Maps a tensor shaped like a parameter to a 2-D tensor whose row ``p`` holds the entries that
#: belong to axis position ``p``.
RowView = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class WeightView:
    """Entries of parameter ``name`` grouped by axis position (see :data:`RowView`)."""

    name: str
    rows: RowView
    #: For incoming weights: maps per-input-feature values (e.g. activation frequencies of the
    #: layer's input axis ``input_axis``) to the columns of ``rows``; ``None`` where the columns
    #: are not input features.
    input_columns: Callable[[torch.Tensor], torch.Tensor] | None = None
    input_axis: str | None = None


@dataclass
class ModuleCall:
    """One call of a module as seen by dependency discovery.

    ``flows`` mirror ``args``: for every tensor argument, a dict mapping a tensor dimension to the
    channel ids found along it (an empty dict when nothing prunable runs along any dimension).
    """

    path: str
    module: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    flows: tuple[Any, ...]
    kwarg_flows: dict[str, Any]
    output: Any


class ModuleHandler:
    """Base class: a layer type that neither has prunable axes nor mixes channels."""

    #: Module classes this handler serves (subclasses included unless a closer handler exists).
    module_types: tuple[type[nn.Module], ...] = ()
    #: ``True`` for handlers of modules whose forward discovery traces through (not a leaf).
    traced_through = False
    #: ``True`` for handlers whose ``propagate`` takes grid flows (see ``neuroprune.torch.graph.context``).
    grid_aware = False

    def axes(self, module: nn.Module) -> dict[str, int]:
        """Prunable axes of ``module`` and their sizes."""
        return {}

    def propagate(self, ctx, call: ModuleCall) -> Any:
        """Record the module's axes in ``ctx`` and return the channel flows of its output."""
        raise NotImplementedError

    def incoming(self, module: nn.Module, axis: str) -> list[WeightView]:
        """Weights that compute the neurons of ``axis`` (rows of a Linear, filters of a conv)."""
        return []

    def outgoing(self, module: nn.Module, axis: str) -> list[WeightView]:
        """Weights that read the neurons of ``axis`` (columns of a consuming Linear)."""
        return []

    def observe(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> dict[str, tuple[torch.Tensor, int]]:
        """Activations seen at each axis during a forward call: ``{axis: (tensor, channel_dim)}``."""
        return {}

    def mask(self, module: nn.Module, axis: str, removed: torch.Tensor) -> None:
        """Zero the weights that make positions ``removed`` of ``axis`` matter, in place.

        Idempotent (masks are re-applied after optimizer steps); the caller restores the
        parameters from its snapshot when the mask is lifted.
        """

    def mask_hooks(self, module: nn.Module, axis: str, removed: torch.Tensor) -> list[Any]:
        """Forward hooks that emulate the smaller layer where zeroing weights is not enough."""
        return []

    def prune(self, module: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
        """Remove neurons for real; ``keep`` maps an axis to the sorted positions to keep.

        May modify ``module`` in place and return it, or return a replacement module.
        """
        raise NotImplementedError


def slice_parameter(module: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    """Replace parameter or buffer ``name`` of ``module`` by its slice along ``dim``.

    Keeps the dtype, device and ``requires_grad`` flag.

    Example:
        >>> lin = nn.Linear(4, 3)
        >>> slice_parameter(lin, "weight", torch.tensor([0, 2]), 0)
        >>> tuple(lin.weight.shape)
        (2, 4)
    """
    tensor = getattr(module, name)
    if tensor is None:
        return
    index = index.to(tensor.device)
    new = tensor.detach().index_select(dim, index).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, new)


def flow_at(flows: Any, dim: int):
    """Channel ids along ``dim`` of a flow dict, or ``None``."""
    if isinstance(flows, dict):
        return flows.get(dim)
    return None


def positive_dim(dim: int, ndim: int) -> int:
    """``dim`` as a non-negative index into a tensor of ``ndim`` dimensions."""
    return dim + ndim if dim < 0 else dim
