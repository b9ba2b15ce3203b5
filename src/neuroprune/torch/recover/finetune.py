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
from neuroprune.torch.recover.precision import MasterWeights
from neuroprune.torch.recover.training import training_step


def finetune(model: nn.Module, task, *, epochs: int, learning_rate: float = 1e-3, progress: bool = True,
             desc: str = "fine-tuning", teacher: nn.Module | None = None, distill_weight: float = 0.0,
             temperature: float = 4.0) -> list[float]:
    """Train ``model`` in place for ``epochs`` epochs; returns the mean loss of every epoch.

    With a ``teacher`` (the unpruned model) and ``distill_weight`` > 0, the task's
    ``distillation_loss`` blends its own loss with matching the teacher. Training runs in
    :func:`~neuroprune.torch.modes.training_mode` (submodules the user froze, in eval mode under a
    parent in training mode, stay frozen); afterwards every submodule has its own mode back. Every
    parameter keeps its dtype: float16/bfloat16 parameters are trained through float32 master
    copies (:mod:`~neuroprune.torch.recover.precision`).
    """
    distill = teacher is not None and distill_weight > 0
    if distill:
        teacher.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if epochs <= 0 or not trainable:
        return []
    masters = MasterWeights(trainable)
    optimizer = torch.optim.Adam(masters.optimized, lr=learning_rate)
    history = []
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress or not is_writer(), leave=False)
    with closing(bar), training_mode(model):
        for epoch in bar:
            total, count = 0.0, 0
            for batch in task.train_batches(epoch):
                if distill:
                    loss = task.distillation_loss(model, teacher, batch, distill_weight, temperature)
                else:
                    loss = task.loss(model, batch)
                value = training_step(loss, optimizer, masters, what="fine-tuning loss", where=f"in epoch {epoch + 1}")
                total, count = total + value, count + 1
            history.append(total / max(count, 1))
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history
