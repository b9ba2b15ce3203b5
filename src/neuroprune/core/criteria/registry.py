"""The criterion registry and the common scoring entry point.

A criterion declares which statistics it needs and turns statistics and weights into scores per
group: numpy float64 arrays on the host, one entry per unit (O(neurons)). Weights are read through
the backend seam (:meth:`ScoringInput.weight_rows`), never from a framework's module objects.

Example:
    >>> get_criterion("magnitude").needs({})
    Needs(activations=False, gradients=False, per_weight=False, gram=False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from neuroprune.core.backend import WeightRows, backend_for
from neuroprune.core.criteria.arrays import to_host
from neuroprune.core.errors import ConfigError, NoSignalError, NonFiniteError, UnknownNameError
from neuroprune.core.groups import DependencyGraph


@dataclass(frozen=True)
class Needs:
    """Which statistics a criterion reads."""

    activations: bool = False
    gradients: bool = False
    per_weight: bool = False
    gram: bool = False  # Gram matrices of the inputs of the Linear layers that read a group (``obs``)

    def __or__(self, other: Needs) -> Needs:
        return Needs(self.activations or other.activations, self.gradients or other.gradients,
                     self.per_weight or other.per_weight, self.gram or other.gram)


@dataclass
class ScoringInput:
    """What a criterion may read: the model, its groups, the calibration statistics and the backend
    that reads the model's weights (``None``: the one :func:`~neuroprune.core.backend.backend_for`
    picks for ``model``, looked up when a criterion first reads a weight)."""

    model: Any
    graph: DependencyGraph
    stats: Any  # a Statistics of the calibration pass, or None for weight-only criteria
    backend: Any = None

    def weight_rows(self, path: str, axis: str, *, outgoing: bool = False) -> list[WeightRows]:
        """The weights computing (with ``outgoing`` also reading) the units of ``path``'s ``axis``."""
        if self.backend is None:
            self.backend = backend_for(self.model)
        return self.backend.weight_rows(self.model, path, axis, outgoing=outgoing)


class Criterion:
    """Base class: subclasses set ``name``, ``options`` (allowed option names) and override two methods."""

    name: str = ""
    options: tuple[str, ...] = ()

    def needs(self, options: dict[str, Any]) -> Needs:
        return Needs()

    def score(self, data: ScoringInput, options: dict[str, Any]) -> dict[str, np.ndarray]:
        """One score per unit of every group (numpy float64; any array the host can read is accepted)."""
        raise NotImplementedError

    def check_options(self, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(self.options) or "none"
            raise ConfigError([f"criterion {self.name!r} has no option {', '.join(unknown)}; options: {allowed}"])


_CRITERIA: dict[str, Criterion] = {}


def register_criterion(criterion: Criterion) -> Criterion:
    """Add a criterion under its name; a name may be registered once."""
    if criterion.name in _CRITERIA:
        raise ConfigError([f"criterion {criterion.name!r} is already registered"])
    _CRITERIA[criterion.name] = criterion
    return criterion


def get_criterion(name: str) -> Criterion:
    if name not in _CRITERIA:
        raise UnknownNameError("criterion", name, _CRITERIA)
    return _CRITERIA[name]


def criterion_names() -> list[str]:
    return sorted(_CRITERIA)


def score(data: ScoringInput, name: str, options: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Scores of every group under criterion ``name``.

    Raises :class:`NonFiniteError` for NaN or infinite scores and :class:`NoSignalError` when a
    criterion gives all prunable neurons of a group (two or more) the same score, e.g. Taylor
    scores that are all zero: the selection would otherwise remove neurons by index order.

    Example:
        >>> import torch, torch.nn as nn
        >>> from neuroprune.torch.graph.discover import discover
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> scores = score(ScoringInput(model, discover(model, torch.randn(1, 4)), None), "magnitude")
        >>> scores["0"].shape, scores["0"].dtype
        ((8,), dtype('float64'))
    """
    options = dict(options or {})
    criterion = get_criterion(name)
    criterion.check_options(options)
    scores = {group: to_host(values) for group, values in criterion.score(data, options).items()}
    for group, values in scores.items():
        if not bool(np.isfinite(values).all()):
            raise NonFiniteError(f"criterion {name!r} gave non-finite scores for group {group!r}")
        _check_signal(data, name, options, group, values)
    return scores


def _check_signal(data: ScoringInput, name: str, options: dict[str, Any], group: str, values: np.ndarray) -> None:
    """Refuse scores that are equal for all prunable units of a group (they would prune by index)."""
    prunable = values
    for candidate in data.graph.groups:
        if candidate.name == group:
            prunable = values[candidate.prunable]
            break
    if prunable.size < 2 or bool(prunable.max() > prunable.min()):
        return
    hint = ("the loss gives no gradient there (e.g. a distillation loss that is zero on the unpruned model, or "
            "layers the loss does not depend on)" if get_criterion(name).needs(options).gradients else
            "every neuron looks the same to it (e.g. all active, or identical weights)")
    raise NoSignalError(f"criterion {name!r} gives all {prunable.size} neurons of group {group!r} the same score "
                        f"({float(prunable[0]):.4g}), so it cannot rank them and pruning would go by index order; "
                        f"{hint}. Choose another criterion: {', '.join(criterion_names())}")
