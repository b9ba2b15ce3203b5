"""Model adapters: how neuron groups are found for a family of models and kept in sync after surgery.

The default adapter traces any ``nn.Module`` with torch.fx. Families whose code cannot be traced
or whose configuration must follow the new widths (Hugging Face transformers) bring their own.

Example:
    >>> import torch.nn as nn
    >>> adapter_for(nn.Linear(2, 2)).name
    'fx'
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import torch.nn as nn

from neuroprune.core.errors import DuplicateNameError, UnknownNameError
from neuroprune.torch.graph.discover import discover
from neuroprune.core.groups import DependencyGraph


class ModelAdapter:
    """Default behaviour: discovery by tracing; nothing to update after surgery."""

    name = "fx"

    def matches(self, model: nn.Module) -> bool:
        return True

    def discover(self, model: nn.Module, example_inputs: Any, ignore: Iterable[str] = (), *,
                 ignore_untraceable: bool = False) -> DependencyGraph:
        return discover(model, example_inputs, ignore=ignore, ignore_untraceable=ignore_untraceable)

    def after_surgery(self, model: nn.Module) -> None:
        """Bring attributes and configuration in line with the new tensor shapes."""


_ADAPTERS: dict[str, ModelAdapter] = {"fx": ModelAdapter()}


def register_adapter(adapter: ModelAdapter, *, replace: bool = False) -> None:
    """Make ``adapter`` available by name and for the models it ``matches``; a name is registered
    once unless ``replace=True``."""
    if adapter.name in _ADAPTERS and not replace:
        raise DuplicateNameError("model adapter", adapter.name)
    _ADAPTERS[adapter.name] = adapter


def _load_optional_adapters() -> None:
    if "transformers" in sys.modules and "hf" not in _ADAPTERS:
        try:
            import neuroprune.hf.adapter  # noqa: F401  (registers itself)
        except ImportError:
            pass


def get_adapter(name: str) -> ModelAdapter:
    if name not in _ADAPTERS:
        if name == "hf":
            import neuroprune.hf.adapter  # noqa: F401
        _load_optional_adapters()
    if name not in _ADAPTERS:
        raise UnknownNameError("model adapter", name, _ADAPTERS)
    return _ADAPTERS[name]


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The most specific adapter that accepts ``model`` (the fx adapter otherwise)."""
    _load_optional_adapters()
    for name, adapter in _ADAPTERS.items():
        if name != "fx" and adapter.matches(model):
            return adapter
    return _ADAPTERS["fx"]
