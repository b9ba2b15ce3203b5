"""Prune and report: budget search (if asked), the pruning loop, the report, the saved folder, explanation.

This is what ``neuroprune prune`` does after parsing its arguments, as one library call. Output
is written by :mod:`neuroprune.workflows.outputs` only; messages go to the
:class:`~neuroprune.workflows.listener.Listener`.

Example:
    >>> from neuroprune.core.config import PruneConfig
    >>> from neuroprune.workflows.prepare import classifier_and_task
    >>> model, task = classifier_and_task("zoo:mlp", train_epochs=1, progress=False)
    >>> config = PruneConfig(criterion="magnitude", ratio=0.5, tolerance=1.0, progress=False, latency_runs=1)
    >>> result = prune_and_report(model, task, config)
    >>> result.report["data"]["spec"], result.report["layers"][0]["width_after"]
    ('digits', 64)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from neuroprune.analysis.budget import Budget, search_budget
from neuroprune.analysis.explain import explain
from neuroprune.core.config import PruneConfig
from neuroprune.core.errors import NeuropruneError
from neuroprune.core.loop import PruneResult, prune
from neuroprune.core.target import budget_target
from neuroprune.data import DataSplits
from neuroprune.workflows.listener import Listener
from neuroprune.workflows.outputs import Outputs, discard_checkpoint, save_result, save_scores


def data_entry(task: Any, data_spec: str | None = None) -> dict[str, Any]:
    """The report's ``"data"`` entry: spec, whether it was standardised, split sizes."""
    data = getattr(task, "data", None)
    if isinstance(data, DataSplits):
        return data.describe()
    sizes = task.split_sizes() if hasattr(task, "split_sizes") else {}
    return {"spec": data_spec, "standardized": False, **sizes}


def prune_and_report(model: Any, task: Any, config: PruneConfig, *, budget: Budget | None = None,
                     checkpoint: str | None = None, resume: bool = False, discard_checkpoint_after: bool = False,
                     outputs: Outputs | None = None, explain_csv: str | None = None, data_spec: str | None = None,
                     finish: Callable[[PruneResult], None] | None = None,
                     listener: Listener | None = None) -> PruneResult:
    """Prune ``model`` on ``task``, complete the report, save it, and explain the decisions if asked.

    Args:
        budget: search per-layer ratios for this budget first (:func:`~neuroprune.analysis.budget.search_budget`).
        checkpoint, resume: the loop's checkpoint folder, and whether to continue it.
        discard_checkpoint_after: remove the checkpoint once the result is saved (a default one).
        outputs: where to write (nothing written without it).
        explain_csv: after the result is safe, score every neuron under each criterion and write
            them with the decisions here; the report gains the score figures.
        data_spec: the data's spec for the report where the task does not describe its data.
        finish: may add to the report before it is shown and saved.
        listener: told of the budget found, the finished report and the saved outputs.
    """
    listener = listener or Listener()
    outputs = outputs or Outputs()
    extra: dict[str, Any] = {"data": data_entry(task, data_spec)}
    if budget is not None:
        found = search_budget(model, task, config, budget, progress=config.progress)
        listener.note(f"budget search ({budget.describe()}): achieved {found.achieved}; per-layer ratios "
                      + ", ".join(f"{name} {ratio:.2f}" for name, ratio in found.ratios.items()))
        config = found.config(config)
        extra |= {"budget": {"target": budget.describe(), "ratios": found.ratios, "achieved": found.achieved},
                  "sensitivity": found.sensitivity["layers"]}
    result = prune(model, task, config, checkpoint=checkpoint, resume=resume)
    result.report.update(extra)
    if budget is not None:
        result.report["target"] = budget_target(result.report["target"], budget, result.report, found.achieved)
    if finish is not None:
        finish(result)
    listener.report_ready(result)
    save_result(result, outputs)
    listener.saved(outputs)
    if discard_checkpoint_after:
        discard_checkpoint(checkpoint)  # the default checkpoint has served its purpose
    if explain_csv:  # after the result is safe: a failing explanation cannot lose it
        explain_result(model, task, result, config, outputs, explain_csv)
    return result


def explain_result(model: Any, task: Any, result: PruneResult, config: PruneConfig, outputs: Outputs,
                   path: str) -> None:
    """Score every neuron of ``model`` under each criterion, add the scores to the report, save it again
    and write the scores with the decisions to ``path`` (CSV)."""
    try:
        scores, removed = explain(model, task, result.plan, activation_threshold=config.activation_threshold,
                                  progress=config.progress)
    except NeuropruneError as error:
        kept = "; ".join(outputs.kept) or "nothing"
        error.args = (f"{error} (--explain failed after the run; kept: {kept})",)
        raise
    result.report["scores"] = scores
    save_result(result, outputs, again=True)  # now with the score figures
    save_scores(path, scores, removed, outputs)
