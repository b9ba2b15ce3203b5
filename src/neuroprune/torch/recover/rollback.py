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
    >>> weight = torch.randn(4, 3)
    >>> original = weight.clone()
    >>> changes = ChangedSlices()
    >>> changes.record([weight], lambda: weight[1:3].zero_())
    >>> changes.saved_elements()  # rows 1 and 2, not the whole tensor
    6
    >>> changes.restore()
    >>> torch.equal(weight, original)
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from neuroprune.core.errors import PlanError


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


_SAME_SIZE_INT = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as integers of the same width (so -0.0 differs from 0.0 and a NaN equals itself)."""
    if tensor.is_floating_point() and tensor.element_size() in _SAME_SIZE_INT:
        return tensor.view(_SAME_SIZE_INT[tensor.element_size()])
    return tensor


def _narrowest_slices(changed: torch.Tensor) -> tuple[int, torch.Tensor]:
    """The dimension along which the fewest slices hold every changed element, and those slices."""
    best: tuple[int, torch.Tensor] | None = None
    for dim in range(changed.dim()):
        touched = changed.movedim(dim, 0).reshape(changed.shape[dim], -1).any(dim=1)
        index = torch.nonzero(touched).flatten()
        if best is None or len(index) * changed.numel() // changed.shape[dim] < len(best[1]) * (
                changed.numel() // changed.shape[best[0]]):
            best = (dim, index)
    return best


class ChangedSlices:
    """What in-place edits changed, and nothing else: for each tensor, the old values of the fewest
    whole slices (rows, columns, channels) that hold every changed element, compared bit for bit.

    :meth:`restore` writes them back (last edit first), so the tensors are bit for bit as before
    the edits, provided nothing else wrote to them in between. Recording clones one edit's tensors
    at a time (transient), so the peak is one module's weights, not the model's. Where a tensor
    has an *original* (a bit-identical tensor elsewhere, such as the caller's model the working
    copy was cloned from), no values are kept at all: the slices are read back from it, and a
    restore refuses (``PlanError``) if the original was written to meanwhile.
    """

    def __init__(self) -> None:
        self._saved: list[tuple[torch.Tensor, int | None, torch.Tensor | None, Any]] = []

    def record(self, tensors: Sequence[torch.Tensor], edit: Callable[[], Any],
               originals: Sequence[torch.Tensor | None] | None = None) -> None:
        """Run ``edit`` (which changes ``tensors`` in place) and keep what it changed (or, where
        ``originals`` gives a bit-identical tensor, where to read it back from)."""
        originals = list(originals) if originals is not None else [None] * len(tensors)
        with torch.no_grad():
            before = [tensor.detach().clone() for tensor in tensors]
            try:
                edit()
            except BaseException:  # a half-done edit is undone whole
                for tensor, old in zip(tensors, before):
                    tensor.copy_(old)
                raise
            for tensor, old, original in zip(tensors, before, originals):
                changed = _bits(tensor.detach()) != _bits(old)
                if not bool(changed.any()):
                    continue
                if tensor.dim() == 0:
                    self._saved.append((tensor, None, None, old))
                    continue
                dim, index = _narrowest_slices(changed)
                if original is not None and original.shape == tensor.shape:
                    self._saved.append((tensor, dim, index, (original, original._version)))
                else:
                    self._saved.append((tensor, dim, index, old.index_select(dim, index)))

    def saved_elements(self) -> int:
        """Elements held (what the snapshot costs, in elements)."""
        return sum(values.numel() for *_, values in self._saved if isinstance(values, torch.Tensor))

    def restore(self) -> None:
        """Write every recorded slice back, last edit first; then hold nothing."""
        with torch.no_grad():
            for tensor, dim, index, values in reversed(self._saved):
                if isinstance(values, tuple):  # read back from the untouched original
                    original, version = values
                    if original._version != version:
                        raise PlanError("cannot restore masked weights: the model they were copied from was "
                                        "modified meanwhile; leave it unchanged until the masks are removed")
                    values = original.detach().index_select(dim, index)
                if dim is None:
                    tensor.copy_(values)
                else:
                    tensor.index_copy_(dim, index, values)
        self._saved = []

    def clear(self) -> None:
        self._saved = []
