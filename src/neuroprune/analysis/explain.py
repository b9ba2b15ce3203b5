"""Why this neuron: every neuron's score under each criterion, and what was decided.

Example:
    >>> from neuroprune.data import load_digits
    >>> from neuroprune.tasks.classification import ClassificationTask
    >>> from neuroprune.models.zoo import build_model
    >>> from neuroprune.core.config import PruneConfig
    >>> from neuroprune.core.loop import prune
    >>> task, model = ClassificationTask(load_digits()), build_model("mlp")
    >>> result = prune(model, task, PruneConfig(criterion="magnitude", ratio=0.5, tolerance=1.0, progress=False, latency_runs=1))
    >>> scores, removed = explain(model, task, result.plan, criteria=["magnitude", "random"], progress=False)
    >>> (len(scores["magnitude"]["fc1"]), len(removed["fc1"]))
    (128, 64)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from neuroprune.core.backend import backend_for
from neuroprune.core.errors import ConfigError
from neuroprune.core.plan import PruningPlan
from neuroprune.core.criteria import ScoringInput, criterion_names, get_criterion, score
from neuroprune.core.criteria.registry import Needs
from neuroprune.core.tasks import bind_task


def explain(model: Any, task, plan: PruningPlan, *, criteria: Sequence[str] | None = None,
            activation_threshold: float = 0.0, progress: bool = True) -> tuple[dict, dict]:
    """Scores of the *original* model's neurons and the neurons ``plan`` removed.

    Returns:
        ``(scores, removed)``: ``scores[criterion][layer]`` lists one score per neuron;
        ``removed[layer]`` lists the indices of removed neurons. Without ``criteria``, every
        registered criterion that can score the model (``obs`` needs Linear readers) is used.
    """
    explicit = bool(criteria)
    criteria = list(criteria or criterion_names())
    backend = backend_for(model)
    work = backend.clone(model)
    bind_task(task, work)
    graph = backend.discover(work, task.example_input())
    needs = Needs()
    for name in criteria:
        needs = needs | get_criterion(name).needs({})
    stats = backend.collect_statistics(work, graph, task, needs, threshold=activation_threshold, progress=progress,
                                       desc="explaining")
    data = ScoringInput(work, graph, stats)
    scores = {}
    for name in criteria:
        try:
            scores[name] = {g: values.tolist() for g, values in score(data, name).items()}
        except ConfigError as error:
            if explicit:
                raise
            warnings.warn(f"--explain: criterion {name!r} left out: {error}", stacklevel=2)
    removed = {}
    for group in graph.groups:
        path, axis = group.producers[0]
        member = next(m for m in group.members if (m.path, m.axis) == (path, axis))
        kept = plan.modules.get(path, {}).get("axes", {}).get(axis, {}).get("keep")
        if kept is None:
            removed[group.name] = []
            continue
        first_position = {int(u): p for p, u in reversed(list(enumerate(member.unit_of))) if u >= 0}
        kept_set = set(kept)
        removed[group.name] = [u for u in range(group.size) if first_position.get(u) not in kept_set]
    return scores, removed
