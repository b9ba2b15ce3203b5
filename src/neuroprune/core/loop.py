"""The pruning loop: score -> select -> mask -> validate -> accept (surgery) or roll back.

A state machine over :class:`~neuroprune.core.loop_state.LoopState`, written against two protocols
only: the model is reached through its :class:`~neuroprune.core.backend.Backend` (discover, mask,
apply_keep, reconstruct, recover, measure, checkpoints) and the problem through
:class:`~neuroprune.core.tasks.Task` and the capabilities it declares. No framework is imported
here; every decision (limits, units removed, accept / roll back) passes ``backend.agree`` so that
many processes stay in step.

Example:
    >>> from neuroprune.data import load_digits
    >>> from neuroprune.tasks.classification import ClassificationTask
    >>> from neuroprune.models.zoo import build_model
    >>> result = prune(build_model("mlp"), ClassificationTask(load_digits()),
    ...                PruneConfig(criterion="magnitude", ratio=0.5, tolerance=1.0, progress=False, latency_runs=1))
    >>> [(layer["name"], layer["width_after"]) for layer in result.report["layers"]]
    [('fc1', 64), ('fc2', 32)]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from neuroprune.core.backend import Keep, backend_for
from neuroprune.core.config import PruneConfig
from neuroprune.core.errors import NoPrunableLayerError
from neuroprune.core.groups import DependencyGraph
from neuroprune.core.loop_state import LoopState
from neuroprune.core.plan import PruningPlan
from neuroprune.core.policy import GroupSettings, resolve_policies
from neuroprune.core.quality import lower_is_better, quality_drop
from neuroprune.core.remainder import layer_entries
from neuroprune.core.result import PruneResult
from neuroprune.core.scoring_pass import score_groups
from neuroprune.core.selection import counts_for_ratio, counts_for_threshold, select_units
from neuroprune.core.target import target_report
from neuroprune.core.tasks import bind_task

__all__ = ["PruneResult", "initial_schedule", "prune", "score_groups", "step_counts"]


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


def _no_prunable_message(graph: DependencyGraph) -> str:
    reasons = "; ".join(f"{name}: {', '.join(r) or 'fixed'}" for name, r in graph.frozen.items())
    return "the model has no prunable layer" + (f" (fixed: {reasons})" if reasons else "")


def initial_schedule(config: PruneConfig) -> list[float]:
    """Fractions of the target reached after each scheduled step: ``k / steps`` ("auto": ``[1.0]``)."""
    n = config.scheduled_steps
    return [k / n for k in range(1, n + 1)]


def _attempt_counts(graph: DependencyGraph, scores, state: LoopState, config: PruneConfig,
                    settings: dict[str, GroupSettings]) -> dict[str, int]:
    """Units each group loses in the next attempt: up to ``state.pending[0]`` of the target (a
    threshold target: the threshold's counts, halved once per rollback in a row)."""
    counts = step_counts(graph, scores, state.original, config, settings, state.pending[0])
    if config.threshold is not None:
        counts = {name: n >> state.fails for name, n in counts.items()}
    return counts


def _attempt_masked(backend, work: Any, keep: Keep, state: LoopState, task, config: PruneConfig, teacher: Any,
                    step: int) -> tuple[Any, float, int]:
    """Judge before recovery (or with nothing to train): mask, reconstruct, validate; on acceptance
    remove the neurons for real and fine-tune. Returns (model or None if rolled back, metric, epochs).

    Without reconstruction nothing is copied: the masked model is only evaluated, and removing the
    masks gives back every zeroed slice bit for bit. A reconstruction refits whole layers against
    the model as it was, so it works on a copy (``work`` stays as it was, the copy is dropped on a
    roll-back)."""
    trial = backend.clone(work) if config.reconstruct else work
    handle = backend.mask(trial, keep)
    try:
        if config.reconstruct:
            backend.reconstruct(trial, work, keep, task, config)
        metric = backend.agree(task.evaluate(trial, "val"))
    except BaseException:
        handle.remove()
        raise
    if not backend.agree(_within_tolerance(state, metric, task, config)):
        handle.remove()  # every zeroed slice back bit for bit (a reconstructed copy is dropped)
        return None, metric, 0
    handle.commit()
    trial = backend.apply_keep(trial, keep)  # the loop's own copy
    return trial, metric, backend.recover(trial, task, config, teacher, f"fine-tuning step {step}")


def _attempt_recovered(backend, work: Any, keep: Keep, task, config: PruneConfig, teacher: Any, step: int,
                       attempt: int) -> tuple[Any, float, int, Any]:
    """Judge after recovery: on a copy, mask, reconstruct, remove, fine-tune, then validate. ``work``
    is not touched; the snapshot gives back the random state if the attempt is rolled back."""
    snapshot = backend.snapshot()
    trial = backend.clone(work)
    handle = backend.mask(trial, keep)
    if config.reconstruct:
        backend.reconstruct(trial, work, keep, task, config)
    handle.commit()
    trial = backend.apply_keep(trial, keep)
    epochs = backend.recover(trial, task, config, teacher, f"fine-tuning step {step}.{attempt}")
    return trial, backend.agree(task.evaluate(trial, "val")), epochs, snapshot


def _within_tolerance(state: LoopState, metric: float, task, config: PruneConfig) -> bool:
    return quality_drop(state.reference, metric, lower_is_better=lower_is_better(task)) <= config.tolerance


def _limit_reached(state: LoopState, config: PruneConfig, started: float) -> str | None:
    attempts = sum(1 for record in state.steps if record.get("removed"))
    if attempts >= config.attempt_limit:
        return f"attempt limit reached ({attempts} attempts; max_attempts={config.attempt_limit})"
    if config.max_seconds is not None and state.seconds + time.perf_counter() - started >= config.max_seconds:
        return f"time limit reached ({config.max_seconds:g} s; max_seconds)"
    return None


def _run_step(work: Any, step: int, state: LoopState, task, config: PruneConfig, backend, example: Any,
              settings: dict[str, GroupSettings], teacher: Any, started: float | None = None) -> Any:
    """One step: score, then attempt ``state.pending[0]``; a rolled-back attempt is retried halfway
    between what was delivered and that target, until one is accepted or a limit stops the loop.

    Every decision (the limits, the units removed, the verdict) goes through ``backend.agree``, so
    that many processes running the loop together take the same path."""
    started = time.perf_counter() if started is None else started
    graph = backend.discover(work, example, ignore=config.ignore, ignore_untraceable=config.ignore_untraceable)
    # a group that only appears after surgery (a width that a re-traced attention forward no
    # longer ties, see neuroprune.torch.layers.heads) has no policy: it is left alone in this run
    graph.groups = [g for g in graph.groups if g.name in state.original]
    scores = score_groups(work, graph, task, config, settings, desc=f"scoring step {step}", backend=backend)
    judge_after = config.judge == "after" and config.finetune_epochs > 0
    for attempt in range(1, config.max_retries + 2):
        state.stopped = backend.agree(_limit_reached(state, config, started))
        if state.stopped:
            return work
        fraction = state.pending[0]
        removal = backend.agree(select_units(graph, scores, _attempt_counts(graph, scores, state, config, settings)))
        removed = sum(len(units) for units in removal.values())
        target = None if config.ratio is None else config.ratio * fraction
        record = {"step": step, "attempt": attempt, "target_ratio": target, "removed": removed}
        if removed == 0:
            state.steps.append({**record, "accuracy": None, "accepted": False, "reason": "nothing to remove"})
            state.pending.pop(0)
            if state.fails:  # a retry too small to remove anything: the target is out of reach
                state.stopped = f"step {step}: the smallest retry removes no neuron"
            state.fails = 0
            return work
        keep = graph.keep_indices(removal)
        if judge_after:
            trial, metric, epochs, snapshot = _attempt_recovered(backend, work, keep, task, config, teacher, step,
                                                                 attempt)
        else:
            trial, metric, epochs = _attempt_masked(backend, work, keep, state, task, config, teacher, step)
            snapshot = None
        drop = quality_drop(state.reference, metric, lower_is_better=lower_is_better(task))
        accepted = backend.agree(drop <= config.tolerance)
        verdict = "<=" if accepted else ">"
        judged = f" after {epochs} epoch{'s' if epochs != 1 else ''} of fine-tuning" if judge_after else ""
        state.steps.append({**record, "accuracy": metric, "drop": drop, "accepted": accepted,
                            "finetune_epochs": epochs, "judged": f"{config.judge} recovery",
                            "reason": f"validation drop {drop:+.4f}{judged} {verdict} tolerance {config.tolerance}"})
        if accepted:
            state.plan = state.plan.compose(keep, graph.module_types, graph.axis_sizes)
            state.done = state.pending.pop(0)
            state.fails = 0
            return trial
        if snapshot is not None:
            snapshot.restore()  # the trial copy is dropped; the random state goes back too
        state.fails += 1
        if state.fails > config.max_retries:
            state.stopped = (f"step {step}: {state.fails} attempts in a row rolled back "
                             f"(max_retries={config.max_retries})")
            return work
        state.pending.insert(0, state.done + (fraction - state.done) / 2)
    return work


def _finetune_summary(config: PruneConfig, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The fine-tuning budget as spent: per attempt, in all, and on attempts that were rolled back."""
    spent = [record.get("finetune_epochs", 0) for record in steps]
    wasted = [record.get("finetune_epochs", 0) for record in steps if not record.get("accepted")]
    return {"judge": config.judge, "epochs_per_attempt": config.finetune_epochs, "epochs_total": sum(spent),
            "epochs_rolled_back": sum(wasted), "attempts_trained": sum(1 for e in spent if e)}


def prune(model: Any, task, config: PruneConfig | None = None, *, checkpoint: str | os.PathLike | None = None,
          resume: bool = False, on_step: Callable[[int, Any], None] | None = None) -> PruneResult:
    """Prune ``model`` on ``task`` as ``config`` says; the caller's model is not modified.

    Each step scores the current model and selects the neurons to remove so that the step's
    cumulative share of the target is met (``steps=N``: ``k / N`` after step k; ``"auto"``: all of
    it at once). With ``judge="after"`` and fine-tuning on, an attempt is made on a copy: masked,
    reconstructed (if asked), removed, fine-tuned, then validated; with ``judge="before"`` (or no
    fine-tuning) it is validated right after masking and reconstruction, and fine-tuned only once
    accepted. An attempt whose validation metric dropped by more than ``tolerance`` against the
    unpruned model is rolled back (weights and random state restored bit for bit) and retried
    halfway between what was delivered and the target; once a retry is accepted, the next step
    aims at the target again, until it is reached or a limit stops the loop (``max_retries``
    rollbacks in a row, ``max_attempts``, ``max_seconds``, or nothing left to remove). Every
    attempt is recorded in ``report["steps"]``; ``report["target"]`` says asked vs delivered.

    Args:
        checkpoint: folder written atomically after every step; with ``resume=True`` a run
            continues from it (after a crash or Ctrl-C) and ends with the same model as an
            uninterrupted run. Resuming needs the same weights, data and settings.
        on_step: called as ``on_step(step, model)`` after each step (and its checkpoint).

    The model's framework is reached only through its backend (:func:`~neuroprune.core.backend.backend_for`)
    and the task only through :class:`~neuroprune.core.tasks.Task` and its declared capabilities.
    """
    backend = backend_for(model)
    with backend.collective():  # under torchrun: one job over the ranks; a rank's failure is raised on all
        return _prune(backend, model, task, config or PruneConfig(), checkpoint, resume, on_step)


def _prune(backend, model: Any, task, config: PruneConfig, checkpoint, resume: bool, on_step) -> PruneResult:
    work = backend.clone(model)
    bind_task(task, work)
    example = task.example_input()
    graph = backend.discover(work, example, ignore=config.ignore, ignore_untraceable=config.ignore_untraceable)
    if not graph.groups:
        raise NoPrunableLayerError(_no_prunable_message(graph))
    settings = resolve_policies(graph, config)
    state = None
    fingerprint = backend.fingerprint(model, task) if checkpoint is not None else None
    if resume:  # without a checkpoint, or with one of other weights, data or settings: CheckpointError
        work, state = backend.load_checkpoint(checkpoint, model, config, fingerprint)
    elif checkpoint is not None:
        backend.check_checkpoint(checkpoint)  # a folder that is not a checkpoint is never replaced
    if state is None:
        reference = backend.agree(task.evaluate(work, "val"))
        state = LoopState(0, PruningPlan(adapter=backend.name), reference, {g.name: g.size for g in graph.groups},
                          graph.frozen, backend.measure(work, task, config), [])
    if not state.pending and state.step == 0 and state.stopped is None:
        state.pending = initial_schedule(config)
    teacher = backend.clone(model) if config.distill_weight > 0 and config.finetune_epochs else None
    while state.pending and state.stopped is None:
        started = time.perf_counter()
        state.stopped = backend.agree(_limit_reached(state, config, started))
        if state.stopped:
            break
        work = _run_step(work, state.step + 1, state, task, config, backend, example, settings, teacher, started)
        state.seconds += time.perf_counter() - started
        state.step += 1
        if checkpoint is not None:
            backend.save_checkpoint(checkpoint, work, state, config, fingerprint)
        if on_step is not None:
            on_step(state.step, work)
    final_graph = backend.discover(work, example, ignore=config.ignore, ignore_untraceable=config.ignore_untraceable)
    widths = {g.name: g.size for g in final_graph.groups}
    rolled_back = any(not s.get("accepted") and s.get("reason") != "nothing to remove" for s in state.steps)
    layers = layer_entries(graph, widths, settings, config, rolled_back=rolled_back)
    report = {
        "metric": task.metric_name,
        "reference_val": state.reference,
        "before": state.before,
        "after": backend.measure(work, task, config),
        "steps": state.steps,
        "target": target_report(config, settings, state.original, widths, state.steps,
                                completed=not state.pending and state.stopped is None, stopped=state.stopped),
        "finetune": _finetune_summary(config, state.steps),
        "layers": layers,
        "fixed_layers": state.fixed,
        "frozen_modules": dict(graph.frozen_modules),
        "config": config.to_dict(),
        **dict(zip(("rank", "world_size"), backend.world())),
    }
    return PruneResult(work, state.plan, report)
