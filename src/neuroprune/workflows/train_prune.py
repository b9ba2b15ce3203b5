"""Train while gradually pruning: the engine of ``neuroprune train-prune``.

Between ``start_epoch`` and ``end_epoch`` the masked fraction of every layer follows a schedule
(:class:`~neuroprune.analysis.gradual.GradualPruner`); after the last epoch the masked neurons are
removed and the result carries a report in the loop's format (summary, one step per epoch,
layer widths), so it is shown, saved and reloaded like any other.

Example:
    >>> from neuroprune.models.zoo import build_model
    >>> from neuroprune.tasks.classification import ClassificationTask
    >>> from neuroprune.data import load_digits
    >>> task = ClassificationTask(load_digits())
    >>> result = train_prune(build_model("mlp"), task, ratio=0.5, epochs=2)
    >>> [layer["width_after"] for layer in result.report["layers"]]
    [64, 32]
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from neuroprune.analysis.gradual import GradualPruner
from neuroprune.core.errors import ConfigError
from neuroprune.core.loop import PruneResult
from neuroprune.torch.metrics import measure_model
from neuroprune.torch.modes import training_mode
from neuroprune.torch.recover.training import training_step
from neuroprune.workflows.listener import Listener


def epoch_window(epochs: int, start_epoch: int | None = None, end_epoch: int | None = None) -> tuple[int, int]:
    """The epochs between which the masks grow: by default from 10 % to 70 % of the training.

    Example:
        >>> epoch_window(30)
        (3, 21)
    """
    start = start_epoch if start_epoch is not None else max(0, epochs // 10)
    end = end_epoch if end_epoch is not None else max(start + 1, int(epochs * 0.7))
    if epochs < 1 or not 0 <= start < end <= epochs:
        raise ConfigError([f"need 0 <= --start-epoch < --end-epoch <= --epochs, got {start}, {end}, {epochs}"])
    return start, end


def train_prune(model: nn.Module, task: Any, *, ratio: float = 0.5, epochs: int = 30, start_epoch: int | None = None,
                end_epoch: int | None = None, schedule: str = "agp", criterion: str = "magnitude",
                learning_rate: float = 1e-3, listener: Listener | None = None) -> PruneResult:
    """Train ``model`` (Adam) for ``epochs`` on ``task`` while masking up to ``ratio`` of every layer, then
    remove the masked neurons.

    The model is masked in place while it trains; the returned result holds the smaller model, its
    plan and the report. ``listener.epoch_done`` hears of every epoch.
    """
    listener = listener or Listener()
    start, end = epoch_window(epochs, start_epoch, end_epoch)
    task.bind(model)
    per_epoch = math.ceil(len(task.data.x_train) / task.batch_size)
    pruner = GradualPruner(model, task.example_input(), ratio=ratio, start=start * per_epoch, end=end * per_epoch,
                           frequency=max(1, per_epoch // 4), schedule=schedule, criterion=criterion)
    before = measure_model(model, task.make_input, accuracy=None).to_dict()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    records, step = [], 0
    for epoch in range(epochs):
        with training_mode(model):
            for batch in task.train_batches(epoch):
                training_step(task.loss(model, batch), optimizer, what="training loss", where=f"in epoch {epoch + 1}")
                pruner.step(step)
                step += 1
        removed = sum(len(units) for units in pruner.masked.values())
        metric = task.evaluate(model, "val")
        records.append({"step": epoch + 1, "attempt": 1, "target_ratio": pruner.fraction, "removed": removed,
                        "accuracy": metric, "accepted": True, "reason": f"{schedule} schedule, epoch {epoch + 1}"})
        listener.epoch_done(records[-1], epochs, task.metric_name)
    small, plan = pruner.finalize()
    after = measure_model(small, task.make_input, accuracy=task.evaluate(small, "test")).to_dict()
    settings = {"mode": "train-prune", "ratio": ratio, "epochs": epochs, "start_epoch": start, "end_epoch": end,
                "schedule": schedule, "criterion": criterion, "lr": learning_rate}
    return PruneResult(small, plan, _report(pruner, task, before, after, records, settings))


def _report(pruner: GradualPruner, task: Any, before: dict, after: dict, steps: list[dict],
            settings: dict[str, Any]) -> dict[str, Any]:
    """The report of a gradual run, with the keys of the pruning loop's report that apply."""
    groups = pruner.graph.groups
    return {"metric": task.metric_name, "before": before, "after": after, "steps": steps,
            "layers": [{"name": g.name, "width_before": g.size, "width_after": g.size - len(pruner.masked[g.name])}
                       for g in groups],
            "fixed_layers": pruner.graph.frozen, "data": task.data.describe(), "config": settings}
