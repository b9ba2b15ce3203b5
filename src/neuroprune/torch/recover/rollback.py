"""Everything a rolled-back attempt must give back: weights, optimiser state and random state.

The pruning loop tries an attempt (mask, reconstruct, surgery, fine-tune) on a *copy* of its
model, so the model itself is never touched; what the copy cannot protect is process-wide state,
above all the random-number generators that dropout and shuffling draw from. A
:class:`Snapshot` records them (and, when given, a model's parameters and buffers and an
optimiser's state) and :meth:`Snapshot.restore` puts every one back bit for bit, so a rolled-back
attempt leaves no trace.

Example:
    >>> import torch
    >>> snapshot = Snapshot.take()
    >>> first = torch.rand(3)
    >>> snapshot.restore()
    >>> torch.equal(torch.rand(3), first)
    True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return copy.deepcopy(value)


@dataclass
class Snapshot:
    """Random state of torch (CPU and every initialised CUDA device), optionally a model's
    tensors and an optimiser's state, as they were when :meth:`take` ran."""

    cpu_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None = None
    model: nn.Module | None = None
    tensors: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    optimizer_state: dict[str, Any] | None = None

    @classmethod
    def take(cls, model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None) -> Snapshot:
        """Record the random state, and ``model``'s parameters and buffers and ``optimizer``'s state."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        tensors = []
        if model is not None:
            tensors = [(t, t.detach().clone()) for t in list(model.parameters()) + list(model.buffers())]
        state = _clone(optimizer.state_dict()) if optimizer is not None else None
        return cls(torch.get_rng_state(), cuda, model, tensors, optimizer, state)

    def restore(self) -> None:
        """Put everything recorded back exactly as it was."""
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        with torch.no_grad():
            for tensor, saved in self.tensors:
                tensor.copy_(saved)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(_clone(self.optimizer_state))
