"""Train/eval mode switches that give every submodule back its own mode.

``model.train(flag)`` sets one flag on every submodule, so switching a model to eval mode and
back with ``model.train(was_training)`` puts a BatchNorm the user froze in eval mode back into
training mode. These context managers record each submodule's own ``training`` flag and
restore exactly that.

Example:
    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    >>> _ = model[1].eval()  # the user froze the BatchNorm
    >>> with evaluation_mode(model):
    ...     model.training, model[1].training
    (False, False)
    >>> model.training, model[1].training
    (True, False)
    >>> with training_mode(model):
    ...     model.training, model[1].training
    (True, False)

:func:`traceable_eval_mode` adds what a FLOP counter or an exporter needs on top of
:func:`evaluation_mode`: no gradients and ``nn.MultiheadAttention``'s fused fast path off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn


def module_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every submodule (``model`` included) with its own ``training`` flag."""
    return [(module, module.training) for module in model.modules()]


def restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Set each module's ``training`` flag back to what :func:`module_modes` recorded."""
    for module, training in modes:
        module.training = training


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside; each submodule's own mode restored after (also on error)."""
    modes = module_modes(model)
    try:
        model.eval()
        yield model
    finally:
        restore_modes(modes)


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """Submodules the user froze: in eval mode while their parent is in training mode."""
    frozen = []
    for parent in model.modules():
        if parent.training:
            frozen.extend(child for child in parent.children() if not child.training)
    return frozen


@contextmanager
def training_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Training mode inside, except for submodules the user froze (:func:`frozen_modules`), which
    stay in eval mode with everything below them; each submodule's own mode restored after."""
    modes = module_modes(model)
    frozen = frozen_modules(model)
    try:
        model.train()
        for module in frozen:
            module.eval()
        yield model
    finally:
        restore_modes(modes)


@contextmanager
def traceable_eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """:func:`evaluation_mode`, no gradients, and ``nn.MultiheadAttention``'s fused fast path off.

    In eval mode without gradients ``nn.MultiheadAttention`` calls the fused
    ``aten::_native_multi_head_attention``, which neither ``FlopCounterMode`` nor the ONNX exporter
    can follow; the regular path computes the same thing in plain operations. The fast-path
    setting is global, so it is restored afterwards (also on error).

    Example:
        >>> model = nn.MultiheadAttention(4, 2)
        >>> with traceable_eval_mode(model):
        ...     model.training, torch.is_grad_enabled()
        (False, False)
        >>> model.training
        True
    """
    mha = getattr(torch.backends, "mha", None)
    fast_path = mha.get_fastpath_enabled() if mha is not None else None
    with evaluation_mode(model):
        try:
            if mha is not None:
                mha.set_fastpath_enabled(False)
            with torch.no_grad():
                yield model
        finally:
            if mha is not None:
                mha.set_fastpath_enabled(fast_path)
