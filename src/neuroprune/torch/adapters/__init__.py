"""Deprecated: model adapters became backends (:mod:`neuroprune.torch.backend`, :mod:`neuroprune.core.backend`).

``ModelAdapter`` is :class:`~neuroprune.torch.backend.TorchBackend`; ``adapter_for``,
``get_adapter`` and ``register_adapter`` call :func:`~neuroprune.core.backend.backend_for`,
:func:`~neuroprune.core.backend.get_backend` and :func:`~neuroprune.core.backend.register_backend`
with a :class:`DeprecationWarning`. They go in the next release.

Example:
    >>> import warnings, torch.nn as nn
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", DeprecationWarning)
    ...     adapter_for(nn.Linear(2, 2)).name
    'fx'
"""

from __future__ import annotations

import warnings
from typing import Any

from neuroprune.core import backend as _backend
from neuroprune.torch.backend import TorchBackend

ModelAdapter = TorchBackend


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"neuroprune.torch.adapters.{old} is deprecated; use neuroprune.core.backend.{new}",
                  DeprecationWarning, stacklevel=3)


def register_adapter(adapter: Any) -> None:
    """Deprecated: :func:`neuroprune.core.backend.register_backend` (which refuses a duplicate name)."""
    _deprecated("register_adapter", "register_backend")
    _backend.register_backend(adapter)


def get_adapter(name: str) -> Any:
    """Deprecated: :func:`neuroprune.core.backend.get_backend`."""
    _deprecated("get_adapter", "get_backend")
    return _backend.get_backend(name)


def adapter_for(model: Any) -> Any:
    """Deprecated: :func:`neuroprune.core.backend.backend_for`."""
    _deprecated("adapter_for", "backend_for")
    return _backend.backend_for(model)
