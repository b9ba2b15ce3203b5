"""Fine-tuning: a few epochs of Adam on the task's training data.

Example:
    >>> import torch.nn as nn
    >>> from neuroprune.data import load_digits
    >>> from neuroprune.tasks.classification import ClassificationTask
    >>> model = nn.Sequential(nn.Linear(64, 10))
    >>> losses = finetune(model, ClassificationTask(load_digits()), epochs=1, progress=False)
    >>> len(losses)
    1
"""

from __future__ import annotations

from contextlib import closing

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from neuroprune.torch.distributed import is_writer
from neuroprune.torch.modes import training_mode
from neuroprune.torch.recover.data_parallel import DataParallel
from neuroprune.torch.recover.precision import MasterWeights
from neuroprune.torch.recover.training import training_step


def finetune(model: nn.Module, task, *, epochs: int, learning_rate: float = 1e-3, progress: bool = True,
             desc: str = "fine-tuning", teacher: nn.Module | None = None, distill_weight: float = 0.0,
             temperature: float = 4.0, sharding: str | None = None) -> list[float]:
    """Train ``model`` in place for ``epochs`` epochs; returns the mean loss of every epoch.

    With a ``teacher`` (the unpruned model) and ``distill_weight`` > 0, the task's
    ``distillation_loss`` blends its own loss with matching the teacher. Training runs in
    :func:`~neuroprune.torch.modes.training_mode` (submodules the user froze, in eval mode under a
    parent in training mode, stay frozen); afterwards every submodule has its own mode back. Every
    parameter keeps its dtype: float16/bfloat16 parameters are trained through float32 master
    copies (:mod:`~neuroprune.torch.recover.precision`).

    In a process group of several ranks, each rank trains on a slice of every batch under DDP
    (``sharding="ddp"``) or FSDP2 (``"fsdp"``), or on the whole batch (``"none"``); ``None``: the one set by
    :func:`~neuroprune.torch.recover.data_parallel.sharded_as` (default ``"ddp"``); see
    :mod:`~neuroprune.torch.recover.data_parallel`. The optimizer is built anew on every call.
    """
    distill = teacher is not None and distill_weight > 0
    if distill:
        teacher.eval()
    if epochs <= 0 or not any(p.requires_grad for p in model.parameters()):
        return []
    if distill:
        def loss_fn(net, batch):
            return task.distillation_loss(net, teacher, batch, distill_weight, temperature)
    else:
        loss_fn = task.loss
    history = []
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress or not is_writer(), leave=False)
    with closing(bar), training_mode(model), DataParallel(model, sharding) as replica:
        masters = MasterWeights(replica.parameters())
        optimizer = torch.optim.Adam(masters.optimized, lr=learning_rate)
        for epoch in bar:
            total, count = 0.0, 0
            for batch in task.train_batches(epoch):
                loss, value = replica.loss(loss_fn, batch)
                value = training_step(loss, optimizer, masters, value=value, what="fine-tuning loss",
                                      where=f"in epoch {epoch + 1}")
                total, count = total + value, count + 1
            history.append(total / max(count, 1))
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history
