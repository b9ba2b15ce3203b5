"""Sensitivity analysis: validation quality of each layer as a function of the fraction removed.

Cheap: every point is a masked evaluation (no surgery, no training), one layer at a time.

Example:
    >>> from neuroprune.data import load_digits
    >>> from neuroprune.tasks.classification import ClassificationTask
    >>> from neuroprune.models.zoo import build_model
    >>> curves = analyse_sensitivity(build_model("mlp"), ClassificationTask(load_digits()), ratios=(0.5,), progress=False)
    >>> sorted(curves["layers"])
    ['fc1', 'fc2']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from neuroprune.core.backend import backend_for, masked
from neuroprune.core.config import PruneConfig
from neuroprune.core.errors import ConfigError, NoPrunableLayerError
from neuroprune.core.policy import resolve_policies
from neuroprune.core.scoring_pass import score_groups
from neuroprune.core.selection import lowest_units
from neuroprune.core.tasks import bind_task

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def analyse_sensitivity(model: Any, task, config: PruneConfig | None = None, *,
                        ratios: Sequence[float] = DEFAULT_RATIOS, progress: bool = True) -> dict[str, Any]:
    """Validation metric per layer at each fraction of its neurons removed (lowest scores first).

    Returns:
        ``{"metric": name, "reference": unpruned value, "layers": {group: {"ratios": [...], "metric": [...]}}}``
    """
    config = config or PruneConfig(progress=progress)
    bad = [r for r in ratios if not (0 < r < 1)]
    if bad or not ratios:
        raise ConfigError([f"sensitivity ratios must lie in (0, 1), got {list(ratios)}"])
    backend = backend_for(model)
    work = backend.clone(model)
    bind_task(task, work)
    graph = backend.discover(work, task.example_input(), ignore=config.ignore,
                            ignore_untraceable=config.ignore_untraceable)
    if not graph.groups:
        raise NoPrunableLayerError("the model has no prunable layer")
    settings = resolve_policies(graph, config)
    scores = score_groups(work, graph, task, config, settings, desc="scoring", backend=backend)
    reference = task.evaluate(work, "val")
    groups = [g for g in graph.groups if not settings[g.name].ignore]
    bar = tqdm(total=len(groups) * len(ratios), desc="sensitivity", disable=not progress or backend.world()[0] != 0, leave=False)
    layers = {}
    for group in groups:
        values = []
        for ratio in ratios:
            count = min(math.floor(ratio * group.size + 1e-9), group.prunable_count, group.size - 1)
            units = lowest_units(group, scores[group.name], count)
            with masked(backend, work, graph.keep_indices({group.name: units})):
                values.append(task.evaluate(work, "val"))
            bar.update()
        layers[group.name] = {"ratios": list(ratios), "metric": values}
    bar.close()
    return {"metric": task.metric_name, "reference": reference, "layers": layers}


def format_sensitivity(result: dict[str, Any]) -> str:
    """A text table: one row per layer, one column per ratio (metric drop in points)."""
    ratios = next(iter(result["layers"].values()))["ratios"] if result["layers"] else []
    name_width = max([len("layer")] + [len(n) for n in result["layers"]])
    header = "layer".ljust(name_width) + "".join(f"{r:>8.0%}" for r in ratios)
    lines = [f"sensitivity: {result['metric']} drop (points) vs fraction removed; unpruned "
             f"{result['reference']:.4f}", header, "-" * len(header)]
    for name, curve in result["layers"].items():
        drops = "".join(f"{100 * (result['reference'] - m):>8.1f}" for m in curve["metric"])
        lines.append(name.ljust(name_width) + drops)
    return "\n".join(lines)
