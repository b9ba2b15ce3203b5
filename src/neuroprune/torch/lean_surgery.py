"""In-place surgery that never holds the old and the new weights of the whole model at once.

:func:`neuroprune.torch.surgery.apply_keep` with ``inplace=True`` builds every pruned layer before
it swaps any in (a failure leaves the model as it was), so for a moment the model's touched
weights exist twice: the old ones and the pruned ones. On the pruning loop's own working copy
that guarantee buys nothing (a failure discards the copy) and costs up to a model's worth of
memory. :func:`apply_keep_streaming` checks the whole plan first, then prunes and swaps one layer
at a time (parents first, each built from the layer as it was, exactly as the all-at-once path
builds them), so the old weights of a layer are freed as soon as its pruned version is in.

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> same = apply_keep_streaming(model, {"0": {"out": torch.tensor([1, 3])}, "2": {"in": torch.tensor([1, 3])}})
    >>> same is model, model[0].out_features, model[2].in_features
    (True, 2, 2)
"""

from __future__ import annotations

import copy

import torch.nn as nn

from neuroprune.core.backend import Keep
from neuroprune.torch.layers.attention import leave_nested_fast_path
from neuroprune.torch.layers.registry import handler_for
from neuroprune.torch.surgery import keep_as_tensors, set_submodule, validate_keep


def apply_keep_streaming(model: nn.Module, keep: Keep) -> nn.Module:
    """Prune ``model`` in place layer by layer (see the module docstring); returns ``model``.

    The plan is validated before anything changes; an error while building a layer (out of
    memory) leaves the layers before it pruned."""
    keep = keep_as_tensors(keep, "cpu")
    validate_keep(model, keep)
    originals = {path: model.get_submodule(path) for path in keep}
    for path in sorted(keep, key=lambda p: p.count(".")):  # parents first, as the all-at-once path
        module = copy.deepcopy(originals.pop(path))
        pruned = handler_for(module).prune(module, {a: k.cpu() for a, k in keep[path].items()})
        set_submodule(model, path, pruned)
        del module, pruned
    leave_nested_fast_path(model)
    return model


__all__ = ["apply_keep_streaming"]
