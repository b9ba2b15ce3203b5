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
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .adapters import adapter_for, get_adapter
from .config import PruneConfig
from .errors import NoPrunableLayerError
from .checkpoint import LoopState, checkpoint_exists, load_checkpoint, save_checkpoint
from .graph.groups import DependencyGraph
from .io import save
from .plan import PruningPlan
from .quality import lower_is_better, quality_drop
from .recover.finetune import finetune
from .recover.reconstruct import reconstruct
from .policy import GroupSettings, resolve_policies
from .report.html import report_files
from .report.metrics import measure_model
from .scoring import ScoringInput, get_criterion, score
from .scoring.registry import Needs
from .selection import counts_for_ratio, counts_for_threshold, select_units
from .stats import statistics_for
from .surgery.apply import apply_keep
from .surgery.masks import apply_masks


@dataclass
class PruneResult:
    """The pruned model, the plan that replays it, and the report."""

    model: nn.Module
    plan: PruningPlan
    report: dict[str, Any]

    def save(self, folder, *, overwrite: bool = False, html: bool = True) -> None:
        """Write the model, plan and report to ``folder`` (see :func:`neuroprune.io.save`), with
        ``report.html`` and the report's figures as PNGs unless ``html=False``."""
        extra_files = getattr(get_adapter(self.plan.adapter), "extra_files", None)  # e.g. the hf config.json
        extra = dict(extra_files(self.model)) if extra_files else {}
        if html:
            extra.update(report_files(self.report))
        save(folder, self.model, self.plan, self.report, overwrite=overwrite, extra=extra)


def _criterion_options(config: PruneConfig, name: str) -> dict[str, Any]:
    options = dict(config.criterion_options) if name == config.criterion else {}
    if name == "random":
        options.setdefault("seed", config.seed)
    return options


def score_groups(model: nn.Module, graph: DependencyGraph, task, config: PruneConfig,
                 settings: dict[str, GroupSettings] | None = None, desc: str = "scoring") -> dict[str, torch.Tensor]:
    """Scores of every group under its criterion (one statistics pass for all criteria)."""
    chosen = {g.name: (settings[g.name].criterion if settings else config.criterion) for g in graph.groups}
    criteria = sorted(set(chosen.values()))
    needs = Needs()
    for name in criteria:
        needs = needs | get_criterion(name).needs(_criterion_options(config, name))
    stats = statistics_for(needs, model, graph, task, threshold=config.activation_threshold,
                           progress=config.progress, desc=desc)
    data = ScoringInput(model, graph, stats)
    by_criterion = {name: score(data, name, _criterion_options(config, name)) for name in criteria}
    return {group: by_criterion[name][group] for group, name in chosen.items()}


def step_counts(graph: DependencyGraph, scores, original: dict[str, int], config: PruneConfig,
                settings: dict[str, GroupSettings], fraction: float) -> dict[str, int]:
    """Units each group loses in a step that reaches ``fraction`` of the run's target."""
    skip = {name for name, s in settings.items() if s.ignore}
    min_widths = {name: s.min_width for name, s in settings.items()}
    if config.threshold is not None:
        return counts_for_threshold(graph, scores, config.threshold, min_width=config.min_width,
                                    round_to=config.round_to, min_widths=min_widths, skip=skip)
    ratios = {name: s.ratio * fraction for name, s in settings.items() if s.ratio is not None}
    return counts_for_ratio(graph, scores, original, config.ratio * fraction, scope=config.scope,
                            min_width=config.min_width, round_to=config.round_to, ratios=ratios,
                            min_widths=min_widths, skip=skip)


def _measure(model: nn.Module, task, config: PruneConfig, batch_sizes=(1, 64)):
    return measure_model(model, task.make_input, accuracy=task.evaluate(model, "test"),
                         batch_sizes=batch_sizes, runs=config.latency_runs, warmup=min(5, config.latency_runs)).to_dict()


def _no_prunable_message(graph: DependencyGraph) -> str:
    reasons = "; ".join(f"{name}: {', '.join(r) or 'fixed'}" for name, r in graph.frozen.items())
    return "the model has no prunable layer" + (f" (fixed: {reasons})" if reasons else "")


def _run_step(work: nn.Module, step: int, state: LoopState, task, config: PruneConfig, adapter,
              example: Any, settings: dict[str, GroupSettings], teacher: nn.Module | None) -> nn.Module:
    """One step: score, select, then mask-validate-accept or roll back and retry with half."""
    graph = adapter.discover(work, example, ignore=config.ignore)
    # a group that only appears after surgery (a width that a re-traced attention forward no
    # longer ties, see neuroprune.surgery.heads) has no policy: it is left alone in this run
    graph.groups = [g for g in graph.groups if g.name in state.original]
    fraction = step / config.steps
    target = None if config.ratio is None else config.ratio * fraction
    scores = score_groups(work, graph, task, config, settings, desc=f"scoring step {step}")
    counts = step_counts(graph, scores, state.original, config, settings, fraction)
    for attempt in range(1, config.max_retries + 2):
        removal = select_units(graph, scores, counts)
        removed = sum(len(units) for units in removal.values())
        record = {"step": step, "attempt": attempt, "target_ratio": target, "removed": removed}
        if removed == 0:
            state.steps.append({**record, "accuracy": None, "accepted": False, "reason": "nothing to remove"})
            return work
        keep = graph.keep_indices(removal)
        before_step = copy.deepcopy(work) if config.reconstruct else None
        handle = apply_masks(work, keep)
        try:
            if before_step is not None:
                sums = adapter.residual_sums(work) if hasattr(adapter, "residual_sums") else None  # hf adapter
                reconstruct(work, before_step, keep, task.calibration_batches(), task.loss, progress=config.progress,
                            token_mask=getattr(task, "token_mask", None), residual_sums=sums)
            metric = task.evaluate(work, "val")
        except BaseException:
            handle.remove()
            raise
        drop = quality_drop(state.reference, metric, lower_is_better=lower_is_better(task))
        accepted = drop <= config.tolerance
        verdict = "<=" if accepted else ">"
        state.steps.append({**record, "accuracy": metric, "drop": drop, "accepted": accepted,
                            "reason": f"validation drop {drop:+.4f} {verdict} tolerance {config.tolerance}"})
        if accepted:
            handle.commit()
            work = apply_keep(work, keep, inplace=True)  # work is the loop's own copy
            adapter.after_surgery(work)
            state.plan = state.plan.compose(keep, graph.module_types, graph.axis_sizes)
            if config.finetune_epochs:
                options = dict(epochs=config.finetune_epochs, learning_rate=config.learning_rate,
                               progress=config.progress, desc=f"fine-tuning step {step}")
                if hasattr(task, "finetune"):  # a task may bring its own recovery (TextTask: distillation)
                    task.finetune(work, **options)
                else:
                    finetune(work, task, **options, teacher=teacher, distill_weight=config.distill_weight,
                             temperature=config.distill_temperature)
            return work
        handle.remove()
        counts = {name: n // 2 for name, n in counts.items()}
    return work


def prune(model: nn.Module, task, config: PruneConfig | None = None, *, checkpoint: str | os.PathLike | None = None,
          resume: bool = False, on_step: Callable[[int, nn.Module], None] | None = None) -> PruneResult:
    """Prune ``model`` on ``task`` as ``config`` says; the caller's model is not modified.

    Each of ``config.steps`` steps scores the current model, selects the neurons to remove so that
    the cumulative target is met, masks them and measures the validation metric. If it dropped by
    more than ``tolerance`` against the unpruned model, the step is rolled back (weights restored
    bit for bit) and retried with half as many neurons; otherwise the neurons are removed for real
    and the model is optionally fine-tuned. Every attempt is recorded in the report.

    Args:
        checkpoint: folder written atomically after every step; with ``resume=True`` a run
            continues from it (after a crash or Ctrl-C) and ends with the same model as an
            uninterrupted run.
        on_step: called as ``on_step(step, model)`` after each step (and its checkpoint).
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
    settings = resolve_policies(graph, config)
    state = None
    if resume and checkpoint is not None and checkpoint_exists(checkpoint):
        work, state = load_checkpoint(checkpoint, model, config)
    if state is None:
        state = LoopState(0, PruningPlan(adapter=adapter.name), task.evaluate(work, "val"),
                          {g.name: g.size for g in graph.groups}, graph.frozen, _measure(work, task, config), [])
    teacher = copy.deepcopy(model).eval() if config.distill_weight > 0 and config.finetune_epochs else None
    for step in range(state.step + 1, config.steps + 1):
        work = _run_step(work, step, state, task, config, adapter, example, settings, teacher)
        state.step = step
        if checkpoint is not None:
            save_checkpoint(checkpoint, work, state, config)
        if on_step is not None:
            on_step(step, work)
    final_graph = adapter.discover(work, example, ignore=config.ignore)
    widths = {g.name: g.size for g in final_graph.groups}
    layers = [{"name": name, "width_before": size, "width_after": widths.get(name, size)}
              for name, size in state.original.items()]
    report = {
        "metric": task.metric_name,
        "reference_val": state.reference,
        "before": state.before,
        "after": _measure(work, task, config),
        "steps": state.steps,
        "layers": layers,
        "fixed_layers": state.fixed,
        "config": config.to_dict(),
    }
    return PruneResult(work, state.plan, report)
