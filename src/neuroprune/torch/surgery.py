"""Physically remove neurons: new, smaller tensors and matching layer metadata.

Everything is checked before anything changes; with ``inplace=False`` (the default) the caller's
model is never touched, and with ``inplace=True`` the pruned layers are swapped in only once all
of them were built.

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> small = apply_keep(model, {"0": {"out": torch.tensor([1, 3])}, "2": {"in": torch.tensor([1, 3])}})
    >>> (small[0].out_features, model[0].out_features)
    (2, 4)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from neuroprune.core.backend import Keep
from neuroprune.core.errors import PlanError
from neuroprune.torch.layers.attention import leave_nested_fast_path
from neuroprune.torch.layers.registry import handler_for

#: keep positions as torch tensors, what the layer handlers take
TensorKeep = dict[str, dict[str, torch.Tensor]]


def keep_as_tensors(keep: Mapping[str, Mapping[str, Any]], device: torch.device | str | None = None) -> TensorKeep:
    """``keep`` (numpy arrays, lists or tensors, as :data:`~neuroprune.core.backend.Keep`) as int64 tensors."""
    return {path: {axis: torch.as_tensor(kept, dtype=torch.long, device=device) for axis, kept in axes.items()}
            for path, axes in keep.items()}


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``path``."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def validate_keep(model: nn.Module, keep: Keep) -> None:
    """Raise :class:`PlanError` unless every path, axis and index in ``keep`` fits ``model``."""
    keep = keep_as_tensors(keep)
    problems = []
    for path, axes in keep.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:
            problems.append(f"the model has no module {path!r}")
            continue
        handler = handler_for(module)
        sizes = handler.axes(module) if handler else {}
        for axis, kept in axes.items():
            if axis not in sizes:
                problems.append(f"{path} ({type(module).__name__}) has no prunable axis {axis!r}; "
                                f"axes: {', '.join(sizes) or 'none'}")
                continue
            if kept.numel() == 0:
                problems.append(f"{path}: axis {axis!r} would keep nothing")
            elif int(kept.min()) < 0 or int(kept.max()) >= sizes[axis]:
                problems.append(f"{path}: axis {axis!r} has {sizes[axis]} positions, plan keeps index {int(kept.max())}")
            elif not bool((kept[1:] > kept[:-1]).all()):
                problems.append(f"{path}: axis {axis!r} keep indices must be strictly increasing")
    if problems:
        raise PlanError("plan does not fit the model: " + "; ".join(problems))


def apply_keep(model: nn.Module, keep: Keep, *, inplace: bool = False) -> nn.Module:
    """Return ``model`` with only the ``keep`` positions of each listed module axis.

    Args:
        model: the model to prune.
        keep: module path -> axis -> sorted positions to keep.
        inplace: modify ``model`` itself instead of returning a pruned copy.
    """
    keep = keep_as_tensors(keep, "cpu")
    validate_keep(model, keep)
    if not inplace:
        work = copy.deepcopy(model)
        for path, axes in keep.items():
            module = work.get_submodule(path)
            new = handler_for(module).prune(module, {a: k.cpu() for a, k in axes.items()})
            if new is not module:
                set_submodule(work, path, new)
        leave_nested_fast_path(work)
        return work
    # build every pruned layer from a copy first, so a failure leaves the model as it was
    pruned = {}
    for path, axes in keep.items():
        module = copy.deepcopy(model.get_submodule(path))
        pruned[path] = handler_for(module).prune(module, {a: k.cpu() for a, k in axes.items()})
    # parents first: a pruned parent (a copy, with its old children) must not undo its children
    for path, module in sorted(pruned.items(), key=lambda item: item[0].count(".")):
        set_submodule(model, path, module)
    leave_nested_fast_path(model)
    return model
