"""The pruning loop: score -> select -> mask -> validate -> accept (surgery) or roll back.

Example:
    >>> from neuroprune.data import load_digits
    >>> from neuroprune.task import ClassificationTask
    >>> from neuroprune.zoo import build_model
    >>> result = prune(build_model("mlp"), ClassificationTask(load_digits()),
    ...                PruneConfig(criterion="magnitude", ratio=0.5, tolerance=1.0, progress=False, latency_runs=1))
    >>> [(layer["name"], layer["width_after"]) for layer in result.report["layers"]]
    [('fc1', 64), ('fc2', 32)]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from .config import PruneConfig
from .errors import NoPrunableLayerError
from .adapters import adapter_for
from .graph.groups import DependencyGraph
from .io import save
from .plan import PruningPlan
from .recover.finetune import finetune
from .recover.reconstruct import reconstruct
from .report.metrics import measure_model
from .scoring import ScoringInput, get_criterion, score
from .selection import counts_for_ratio, counts_for_threshold, select_units
from .stats import collect_statistics
from .surgery.apply import apply_keep
from .surgery.masks import apply_masks


@dataclass
class PruneResult:
    """The pruned model, the plan that replays it, and the report."""

    model: nn.Module
    plan: PruningPlan
    report: dict[str, Any]

    def save(self, folder, *, overwrite: bool = False) -> None:
        """Write the model, plan and report to ``folder`` (see :func:`neuroprune.io.save`)."""
        save(folder, self.model, self.plan, self.report, overwrite=overwrite)


def score_groups(model: nn.Module, graph: DependencyGraph, task, config: PruneConfig, desc: str = "scoring"):
    """Scores of every group under ``config.criterion`` (one statistics pass when needed)."""
    options = dict(config.criterion_options)
    if config.criterion == "random":
        options.setdefault("seed", config.seed)
    needs = get_criterion(config.criterion).needs(options)
    stats = None
    if needs.activations or needs.gradients:
        stats = collect_statistics(model, graph, task.calibration_batches(), task.loss,
                                   activations=needs.activations, gradients=needs.gradients,
                                   per_weight=needs.per_weight, threshold=config.activation_threshold,
                                   progress=config.progress, desc=desc, token_mask=getattr(task, "token_mask", None))
    return score(ScoringInput(model, graph, stats), config.criterion, options)


def _step_counts(graph, scores, original, config: PruneConfig, target: float | None) -> dict[str, int]:
    if config.threshold is not None:
        return counts_for_threshold(graph, scores, config.threshold, min_width=config.min_width, round_to=config.round_to)
    return counts_for_ratio(graph, scores, original, target, scope=config.scope, min_width=config.min_width,
                            round_to=config.round_to)


def _measure(model: nn.Module, task, config: PruneConfig, batch_sizes=(1, 64)):
    return measure_model(model, task.make_input, accuracy=task.evaluate(model, "test"),
                         batch_sizes=batch_sizes, runs=config.latency_runs, warmup=min(5, config.latency_runs)).to_dict()


def _no_prunable_message(graph: DependencyGraph) -> str:
    reasons = "; ".join(f"{name}: {', '.join(r) or 'fixed'}" for name, r in graph.frozen.items())
    return "the model has no prunable layer" + (f" (fixed: {reasons})" if reasons else "")


def prune(model: nn.Module, task, config: PruneConfig | None = None) -> PruneResult:
    """Prune ``model`` on ``task`` as ``config`` says; the caller's model is not modified.

    Each of ``config.steps`` steps scores the current model, selects the neurons to remove so that
    the cumulative target is met, masks them and measures the validation metric. If it dropped by
    more than ``tolerance`` against the unpruned model, the step is rolled back (weights restored
    bit for bit) and retried with half as many neurons; otherwise the neurons are removed for real
    and the model is optionally fine-tuned. Every attempt is recorded in the report.
    """
    config = config or PruneConfig()
    work = copy.deepcopy(model)
    if hasattr(task, "bind"):
        task.bind(work)
    example = task.example_input()
    adapter = adapter_for(work)
    graph = adapter.discover(work, example, ignore=config.ignore)
    if not graph.groups:
        raise NoPrunableLayerError(_no_prunable_message(graph))
    original = {g.name: g.size for g in graph.groups}
    fixed = graph.frozen
    before = _measure(work, task, config)
    reference = task.evaluate(work, "val")
    plan = PruningPlan(adapter=adapter.name)
    steps: list[dict[str, Any]] = []
    for step in range(1, config.steps + 1):
        target = None if config.ratio is None else config.ratio * step / config.steps
        if step > 1:
            graph = adapter.discover(work, example, ignore=config.ignore)
        scores = score_groups(work, graph, task, config, desc=f"scoring step {step}")
        counts = _step_counts(graph, scores, original, config, target)
        for attempt in range(1, config.max_retries + 2):
            removal = select_units(graph, scores, counts)
            removed = sum(len(units) for units in removal.values())
            record = {"step": step, "attempt": attempt, "target_ratio": target, "removed": removed}
            if removed == 0:
                steps.append({**record, "accuracy": None, "accepted": False, "reason": "nothing to remove"})
                break
            keep = graph.keep_indices(removal)
            teacher = copy.deepcopy(work) if config.reconstruct else None
            handle = apply_masks(work, keep)
            try:
                if teacher is not None:
                    reconstruct(work, teacher, keep, task.calibration_batches(), task.loss, progress=config.progress)
                metric = task.evaluate(work, "val")
            except BaseException:
                handle.remove()
                raise
            drop = reference - metric
            accepted = drop <= config.tolerance
            verdict = "<=" if accepted else ">"
            steps.append({**record, "accuracy": metric, "drop": drop, "accepted": accepted,
                          "reason": f"validation drop {drop:+.4f} {verdict} tolerance {config.tolerance}"})
            if accepted:
                handle.commit()
                work = apply_keep(work, keep)
                adapter.after_surgery(work)
                plan = plan.compose(keep, graph.module_types, graph.axis_sizes)
                if config.finetune_epochs:
                    finetune(work, task, epochs=config.finetune_epochs, learning_rate=config.learning_rate,
                             progress=config.progress, desc=f"fine-tuning step {step}")
                break
            handle.remove()
            counts = {name: n // 2 for name, n in counts.items()}
    final_graph = adapter.discover(work, example, ignore=config.ignore)
    widths = {g.name: g.size for g in final_graph.groups}
    layers = [{"name": name, "width_before": size, "width_after": widths.get(name, size)} for name, size in original.items()]
    report = {
        "metric": task.metric_name,
        "reference_val": reference,
        "before": before,
        "after": _measure(work, task, config),
        "steps": steps,
        "layers": layers,
        "fixed_layers": fixed,
        "config": config.to_dict(),
    }
    return PruneResult(work, plan, report)
