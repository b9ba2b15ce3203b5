"""One scoring pass: the statistics every chosen criterion needs, collected once, then the scores.

Used by the pruning loop, the budget search and sensitivity analysis; the backend collects the
statistics, the core's criteria turn them into one score per unit.

Example:
    >>> import torch
    >>> from neuroprune.core.backend import backend_for
    >>> from neuroprune.core.config import PruneConfig
    >>> from neuroprune.data import load_digits
    >>> from neuroprune.models.zoo import build_model
    >>> from neuroprune.tasks.classification import ClassificationTask
    >>> model, task = build_model("mlp"), ClassificationTask(load_digits())
    >>> graph = backend_for(model).discover(model, task.example_input())
    >>> scores = score_groups(model, graph, task, PruneConfig(criterion="magnitude", progress=False))
    >>> {name: len(values) for name, values in scores.items()}
    {'fc1': 128, 'fc2': 64}
"""

from __future__ import annotations

from typing import Any

from neuroprune.core.backend import backend_for
from neuroprune.core.config import PruneConfig
from neuroprune.core.criteria import ScoringInput, get_criterion, score
from neuroprune.core.criteria.registry import Needs
from neuroprune.core.groups import DependencyGraph
from neuroprune.core.policy import GroupSettings


def criterion_options(config: PruneConfig, name: str) -> dict[str, Any]:
    """The options of criterion ``name`` under ``config`` (``random`` is seeded with ``config.seed``)."""
    options = dict(config.criterion_options) if name == config.criterion else {}
    if name == "random":
        options.setdefault("seed", config.seed)
    return options


def score_groups(model: Any, graph: DependencyGraph, task, config: PruneConfig,
                 settings: dict[str, GroupSettings] | None = None, desc: str = "scoring", *,
                 backend: Any = None) -> dict[str, Any]:
    """Scores of every group under its criterion (one statistics pass for all criteria)."""
    backend = backend or backend_for(model)
    chosen = {g.name: (settings[g.name].criterion if settings else config.criterion) for g in graph.groups}
    criteria = sorted(set(chosen.values()))
    needs = Needs()
    for name in criteria:
        needs = needs | get_criterion(name).needs(criterion_options(config, name))
    stats = backend.collect_statistics(model, graph, task, needs, threshold=config.activation_threshold,
                                       progress=config.progress, desc=desc)
    data = ScoringInput(model, graph, stats)
    by_criterion = {name: score(data, name, criterion_options(config, name)) for name in criteria}
    return {group: by_criterion[name][group] for group, name in chosen.items()}
