"""The frozen teacher a task distils from, without a second copy of the weights when one exists.

The pruning loop works on a copy of the caller's model (the caller's is never modified) and binds
the task to that copy before touching it. A task that keeps a teacher (``LMTask``, ``TextTask``
with hidden-state distillation) asks :func:`frozen_teacher` for one: when the model it is given is
such an untouched copy and the model it was copied from is untouched too, the teacher is a view
of the original that shares its tensors (new module objects in eval mode, no new weights);
otherwise it is a deep copy, as before. :func:`remember_clone` is how the backend's ``clone``
records where a copy came from; a tensor's in-place version counter tells "untouched".
:func:`untouched_original` serves masks the same way: a mask on an untouched copy keeps no
values to restore, it reads them back from the original.

Example:
    >>> import torch, torch.nn as nn
    >>> original = nn.Linear(4, 2)
    >>> work = copy.deepcopy(original)
    >>> remember_clone(work, original)
    >>> teacher = frozen_teacher(work)
    >>> teacher.weight is original.weight, teacher.training, original.training
    (True, False, True)
    >>> with torch.no_grad():
    ...     _ = work.weight.mul_(2)  # touched: the next teacher is a copy of its own
    >>> frozen_teacher(work).weight is original.weight
    False
"""

from __future__ import annotations

import copy
import weakref

import torch.nn as nn

_CLONES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stamp(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """Which tensors the model holds and how often each was written in place."""
    return tuple((id(t), t._version) for t in list(model.parameters()) + list(model.buffers()))


def remember_clone(clone: nn.Module, source: nn.Module) -> None:
    """Record that ``clone`` was just deep-copied from ``source`` (both untouched since)."""
    _CLONES[clone] = (weakref.ref(source), _stamp(source), _stamp(clone))


def untouched_original(model: nn.Module) -> nn.Module | None:
    """The model ``model`` was cloned from, when neither was written to since (else ``None``)."""
    entry = _CLONES.get(model)
    if entry is not None:
        source = entry[0]()
        if source is not None and _stamp(source) == entry[1] and _stamp(model) == entry[2]:
            return source
    return None


def _view(source: nn.Module) -> nn.Module:
    """New module objects over ``source``'s own tensors, in eval mode (``source``'s modes untouched)."""
    shared = {id(t): t for t in list(source.parameters()) + list(source.buffers())}
    return copy.deepcopy(source, memo=shared).eval()


def frozen_teacher(model: nn.Module) -> nn.Module:
    """An eval-mode teacher with ``model``'s weights, to run under ``torch.no_grad`` (see the module
    docstring): a view of the original when ``model`` is an untouched clone of an untouched model,
    else a deep copy with gradients off."""
    source = untouched_original(model)
    return _view(source) if source is not None else copy.deepcopy(model).eval().requires_grad_(False)


__all__ = ["frozen_teacher", "remember_clone", "untouched_original"]
