"""Distillation: train the pruned model to reproduce the unpruned one, within a time budget.

The task supplies the objective as ``task.distill_loss(model, batch)`` (for
:class:`~neuroprune.tasks.text.TextTask`: MSE of normalised sentence embeddings, optionally plus
hidden states, against the teacher) and the data as ``task.train_batches(epoch)``; a task without
``distill_loss`` is trained on its ``loss``. Training stops after ``epochs`` epochs or once
``max_seconds`` have passed, whichever comes first. AdamW with a short linear warm-up and a
cosine decay over the budget (steps or seconds, whichever runs out first); dropout stays off (the
model is kept in eval mode), so the student copies the teacher's deterministic outputs.
Embedding tables are frozen by default: pruning did not touch them, and their dense gradients
and optimizer updates would cost as much as the rest of a small encoder. In a process group of
several ranks each rank takes a slice of every batch under DDP or FSDP2
(:mod:`~neuroprune.torch.recover.data_parallel`); the time budget is judged on the ranks' mean
elapsed time, so all stop at the same step.

Example:
    >>> import torch, torch.nn as nn
    >>> class Task:
    ...     def train_batches(self, epoch):
    ...         return [torch.randn(8, 4) for _ in range(3)]
    ...     def distill_loss(self, model, x):
    ...         return (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
    >>> result = distill(nn.Linear(4, 1), Task(), epochs=2, progress=False)
    >>> (result.steps, result.stopped)
    (6, 'epochs')
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from neuroprune.core.errors import ConfigError
from neuroprune.core.tasks import capabilities_of
from neuroprune.torch.distributed import is_writer
from neuroprune.torch.recover.data_parallel import DataParallel
from neuroprune.torch.recover.training import training_step


@dataclass
class DistillResult:
    """What a distillation run did: mean loss per (possibly partial) epoch, steps, time, why it stopped."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    stopped: str = "epochs"  # "epochs" or "time"


def _learning_rate(peak: float, step: int, warmup: int, fraction: float) -> float:
    scale = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return peak * scale * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))))


def distill(model: nn.Module, task, *, epochs: int = 1, max_seconds: float | None = None, learning_rate: float = 5e-5,
            weight_decay: float = 0.0, warmup_steps: int = 20, train_embeddings: bool = False,
            progress: bool = True, desc: str = "distilling", sharding: str | None = None) -> DistillResult:
    """Train ``model`` in place on ``task.distill_loss`` for ``epochs`` epochs or ``max_seconds``.

    Args:
        model: the pruned model (changed in place; left in eval mode).
        task: provides ``train_batches(epoch)`` and ``distill_loss(model, batch)`` (or ``loss``).
        epochs: most epochs to run.
        max_seconds: time budget (wall clock, checked after every step); ``None`` for no limit.
        learning_rate: peak AdamW learning rate.
        train_embeddings: also train ``nn.Embedding`` tables.
        sharding: ``"ddp"``, ``"fsdp"`` or ``"none"``: how a process group of several ranks trains
            (``None``: as :func:`~neuroprune.torch.recover.data_parallel.sharded_as` set, default ``"ddp"``).
    """
    if epochs < 0 or (max_seconds is not None and max_seconds <= 0) or learning_rate <= 0:
        raise ConfigError([f"distillation needs epochs >= 0, max_seconds > 0 and learning_rate > 0; got {epochs}, "
                           f"{max_seconds}, {learning_rate}"])
    result = DistillResult()
    frozen = [] if train_embeddings else [p for m in model.modules() if isinstance(m, nn.Embedding)
                                          for p in m.parameters() if p.requires_grad]
    if epochs == 0 or not any(p.requires_grad and all(p is not f for f in frozen) for p in model.parameters()):
        return result
    loss_fn = task.distill_loss if "distill_loss" in capabilities_of(task) else task.loss
    model.eval()
    for p in frozen:
        p.requires_grad_(False)  # no gradient is even computed for them (nor synchronised)
    start = time.perf_counter()
    per_epoch: int | None = None
    bar = tqdm(desc=desc, unit="step", disable=not progress or not is_writer(), leave=False)
    optimizer = None
    try:
        with DataParallel(model, sharding) as replica:
            optimizer = torch.optim.AdamW(replica.parameters(), lr=learning_rate, weight_decay=weight_decay)
            for epoch in range(epochs):
                total, count = 0.0, 0
                batches = task.train_batches(epoch)
                if per_epoch is None and hasattr(batches, "__len__"):
                    per_epoch = len(batches)
                    bar.total = per_epoch * epochs
                for batch in batches:
                    elapsed = replica.mean(time.perf_counter() - start) if max_seconds else 0.0
                    fraction = elapsed / max_seconds if max_seconds else 0.0
                    if per_epoch:
                        fraction = max(fraction, result.steps / (per_epoch * epochs))
                    for group in optimizer.param_groups:
                        group["lr"] = _learning_rate(learning_rate, result.steps, warmup_steps, fraction)
                    loss, value = replica.loss(loss_fn, batch)
                    value = training_step(loss, optimizer, value=value, what="distillation loss",
                                          where=f"at step {result.steps + 1}")
                    total, count = total + value, count + 1
                    result.steps += 1
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4g}", refresh=False)
                    if max_seconds is not None and replica.mean(time.perf_counter() - start) >= max_seconds:
                        result.stopped = "time"
                        break
                if count:
                    result.losses.append(total / count)
                if per_epoch is None:
                    per_epoch = max(count, 1)
                if result.stopped == "time":
                    break
    finally:
        bar.close()
        for p in frozen:
            p.requires_grad_(True)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        result.seconds = time.perf_counter() - start
    return result
