"""Hide neurons without changing any shape, and bring them back bit for bit.

Masking zeroes the weights that read a removed neuron (and, for recurrent layers and
LayerNorm, emulates the smaller layer), so a masked model computes what the physically pruned
model computes. The affected parameters are snapshotted first; :meth:`MaskHandle.remove` restores
them exactly.

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> before = model[2].weight.clone()
    >>> with apply_masks(model, {"0": {"out": torch.tensor([0, 1])}, "2": {"in": torch.tensor([0, 1])}}):
    ...     bool((model[2].weight[:, 2:] == 0).all())
    True
    >>> torch.equal(model[2].weight, before)
    True
"""

from __future__ import annotations

import torch
import torch.nn as nn

from neuroprune.core.backend import Keep
from neuroprune.core.errors import PlanError
from neuroprune.torch.layers.registry import handler_for
from neuroprune.torch.recover.rollback import ChangedSlices
from neuroprune.torch.surgery import keep_as_tensors
from neuroprune.torch.teacher import untouched_original


def _removed(size: int, kept: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool, device=kept.device)
    mask[kept] = False
    return torch.nonzero(mask).flatten()


class MaskHandle:
    """Masks in force on a model; lift them with :meth:`remove` (or leave the ``with`` block)."""

    def __init__(self, model: nn.Module, keep: Keep, *, originals: str = "tensors"):
        if originals not in ("tensors", "masked"):
            raise PlanError(f"originals must be 'tensors' or 'masked', got {originals!r}")
        self._snapshot: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._changes = ChangedSlices()
        self._hooks: list = []
        self._masked: list[tuple[nn.Module, str, torch.Tensor]] = []
        keep = keep_as_tensors(keep)
        modules = {path: model.get_submodule(path) for path in keep}
        source = untouched_original(model) if originals == "masked" else None
        if originals == "tensors":
            for module in modules.values():
                for tensor in list(module.parameters()) + list(module.buffers()):
                    self._snapshot.append((tensor, tensor.detach().clone()))
        try:
            for path, axes in keep.items():
                module = modules[path]
                handler = handler_for(module)
                sizes = handler.axes(module)
                masked = []
                for axis, kept in axes.items():
                    if axis not in sizes:
                        raise PlanError(f"{path}: no axis {axis!r}; axes: {', '.join(sizes)}")
                    removed = _removed(sizes[axis], kept).to(_device_of(module))
                    if len(removed):
                        masked.append((module, axis, removed))
                        self._hooks += handler.mask_hooks(module, axis, removed)
                self._masked += masked
                if originals == "masked":  # keep only the slices masking zeroes, one module at a time
                    self._changes.record(_tensors(module), lambda masked=masked: self._zero(masked),
                                         None if source is None else _tensors(source.get_submodule(path)))
            self.reapply()
        except Exception:
            self.remove()
            raise

    @staticmethod
    def _zero(masked) -> None:
        with torch.no_grad():
            for module, axis, removed in masked:
                handler_for(module).mask(module, axis, removed)

    def reapply(self) -> None:
        """Zero the masked weights again (call after an optimizer step during masked training)."""
        self._zero(self._masked)

    def remove(self) -> None:
        """Restore every snapshotted tensor (or masked slice) exactly and drop the hooks."""
        with torch.no_grad():
            for tensor, saved in self._snapshot:
                tensor.copy_(saved)
        self._changes.restore()
        for hook in self._hooks:
            hook.remove()
        self._snapshot, self._hooks, self._masked = [], [], []

    def commit(self) -> None:
        """Keep the masked (and possibly re-fitted) weights; drop hooks and snapshot."""
        for hook in self._hooks:
            hook.remove()
        self._changes.clear()
        self._snapshot, self._hooks, self._masked = [], [], []

    def __enter__(self) -> MaskHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return list(module.parameters()) + list(module.buffers())


def _device_of(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def apply_masks(model: nn.Module, keep: Keep, *, originals: str = "tensors") -> MaskHandle:
    """Mask ``model`` in place so that it behaves as if only the ``keep`` positions existed.

    ``originals`` says what :meth:`MaskHandle.remove` gives back: ``"tensors"`` (every tensor of a
    masked module, whatever changed it meanwhile) or ``"masked"`` (only the slices masking zeroed: a
    fraction of the memory, exact when nothing else writes to those tensors before ``remove``, as
    when the masked model is only evaluated; on an untouched clone, nothing: the slices are read
    back from the model it was cloned from, see :func:`~neuroprune.torch.teacher.untouched_original`).
    """
    return MaskHandle(model, keep, originals=originals)
