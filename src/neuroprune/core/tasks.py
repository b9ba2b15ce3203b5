"""What the pruning loop needs from a problem, and what a task declares it can do beyond that.

A task gives batches, a loss and a quality measure (:class:`Task`). Optional abilities are
*declared*, not guessed: a task lists them in ``capabilities`` (a frozenset of names from
:data:`CAPABILITIES`), and the loop and the backends ask :func:`capabilities_of` instead of
probing for methods.

Example:
    >>> class Tiny:
    ...     metric_name, lower_is_better = "accuracy", False
    ...     capabilities = frozenset({"binds_to_model"})
    ...     def bind(self, model): return self
    >>> sorted(capabilities_of(Tiny()))
    ['binds_to_model']
    >>> bind_task(Tiny(), model=None) is not None
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from neuroprune.core.errors import ConfigError

#: the optional abilities a task may declare, and the method each one promises
CAPABILITIES = {
    "binds_to_model": "task.bind(model): called once with the loop's copy of the unpruned model before "
                      "anything else (e.g. to compute a teacher's targets or to follow the model's device)",
    "own_recovery": "task.finetune(model, epochs=, learning_rate=, progress=, desc=): the task recovers "
                    "quality itself (e.g. distillation) instead of the backend's fine-tuning",
    "token_mask": "task.token_mask(batch): which positions of a batch are real tokens (statistics and "
                  "reconstruction skip padding)",
    "distill_loss": "task.distill_loss(model, batch): the loss used by distillation recovery",
    "fingerprint": "task.fingerprint(): a text that changes with the data (checkpoints refuse other data)",
}
_METHODS = {"binds_to_model": "bind", "own_recovery": "finetune", "token_mask": "token_mask",
            "distill_loss": "distill_loss", "fingerprint": "fingerprint"}


@runtime_checkable
class Task(Protocol):
    """The interface :func:`neuroprune.prune` uses (model and batch types are the backend's)."""

    metric_name: str
    lower_is_better: bool  # False: accuracy-like (absolute drop); True: perplexity-like (relative rise)

    def example_input(self) -> Any: ...
    def make_input(self, batch_size: int) -> Any: ...
    def calibration_batches(self) -> list[Any]: ...
    def train_batches(self, epoch: int) -> Iterable[Any]: ...
    def loss(self, model: Any, batch: Any) -> Any: ...
    def evaluate(self, model: Any, split: str) -> float: ...


def capabilities_of(task: Any) -> frozenset[str]:
    """The abilities ``task`` declares in ``capabilities``.

    For one release, a task that has a capability's method without declaring it (a task written
    before capabilities were declared, or a subclass that adds ``finetune``) still gets it, with a
    :class:`DeprecationWarning` once per class; this is the only place that looks for methods.
    """
    declared = getattr(task, "capabilities", None)
    unknown = sorted(set(declared or ()) - set(CAPABILITIES))
    if unknown:
        raise ConfigError([f"{type(task).__name__}.capabilities names {', '.join(map(repr, unknown))}; "
                           f"known capabilities: {', '.join(CAPABILITIES)}"])
    declared = frozenset(declared or ())
    found = frozenset(name for name, method in _METHODS.items() if callable(getattr(task, method, None)))
    undeclared = found - declared
    if undeclared and type(task) not in _WARNED:
        _WARNED.add(type(task))
        warnings.warn(f"{type(task).__name__} has {', '.join(sorted(_METHODS[n] for n in undeclared))} but does not "
                      f"declare {', '.join(sorted(undeclared))} in its capabilities; add "
                      f"`capabilities = frozenset({sorted(declared | undeclared)})` (undeclared methods will be "
                      "ignored in the next release)", DeprecationWarning, stacklevel=3)
    return declared | undeclared


_WARNED: set[type] = set()


def bind_task(task: Any, model: Any) -> Any:
    """``task.bind(model)`` for a task that declares ``binds_to_model``; returns the task."""
    if "binds_to_model" in capabilities_of(task):
        task.bind(model)
    return task


def token_mask_of(task: Any):
    """The task's ``token_mask`` function if it declares one, else ``None``."""
    return task.token_mask if "token_mask" in capabilities_of(task) else None
