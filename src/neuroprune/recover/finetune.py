"""Fine-tuning: a few epochs of Adam on the task's training data.

Example:
    >>> import torch.nn as nn
    >>> from neuroprune.data import load_digits
    >>> from neuroprune.task import ClassificationTask
    >>> model = nn.Sequential(nn.Linear(64, 10))
    >>> losses = finetune(model, ClassificationTask(load_digits()), epochs=1, progress=False)
    >>> len(losses)
    1
"""

from __future__ import annotations

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..errors import NonFiniteError


def finetune(model: nn.Module, task, *, epochs: int, learning_rate: float = 1e-3, progress: bool = True,
             desc: str = "fine-tuning", teacher: nn.Module | None = None, distill_weight: float = 0.0,
             temperature: float = 4.0) -> list[float]:
    """Train ``model`` in place for ``epochs`` epochs; returns the mean loss of every epoch.

    With a ``teacher`` (the unpruned model) and ``distill_weight`` > 0, the task's
    ``distillation_loss`` blends its own loss with matching the teacher. The model is left in
    eval mode.
    """
    distill = teacher is not None and distill_weight > 0
    if distill:
        teacher.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if epochs <= 0 or not trainable:
        return []
    if any(p.dtype == torch.float16 for p in trainable):
        model.float()
        try:
            return finetune(model, task, epochs=epochs, learning_rate=learning_rate, progress=progress, desc=desc,
                            teacher=teacher, distill_weight=distill_weight, temperature=temperature)
        finally:
            model.half()
    optimizer = torch.optim.Adam(trainable, lr=learning_rate)
    history = []
    model.train()
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
    try:
        for epoch in bar:
            total, count = 0.0, 0
            for batch in task.train_batches(epoch):
                if distill:
                    loss = task.distillation_loss(model, teacher, batch, distill_weight, temperature)
                else:
                    loss = task.loss(model, batch)
                if not bool(torch.isfinite(loss)):
                    raise NonFiniteError(f"fine-tuning loss became {loss.item()} in epoch {epoch + 1}; "
                                         "lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + loss.item(), count + 1
            history.append(total / max(count, 1))
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    finally:
        bar.close()
        model.eval()
    return history
