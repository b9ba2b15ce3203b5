"""One training step, shared by fine-tuning, distillation and ``train-prune``.

:func:`training_step` refuses a non-finite loss (before it can poison the weights), clears the
gradients, back-propagates and steps the optimizer; with
:class:`~neuroprune.torch.recover.precision.MasterWeights` the step goes through float32 master
copies of float16/bfloat16 parameters.

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Linear(2, 1)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> loss = model(torch.ones(4, 2)).pow(2).mean()
    >>> value = training_step(loss, optimizer)
    >>> isinstance(value, float) and model.weight.grad is not None
    True
"""

from __future__ import annotations

import math

import torch

from neuroprune.core.errors import NonFiniteError
from neuroprune.torch.recover.precision import MasterWeights


def training_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, masters: MasterWeights | None = None, *,
                  value: float | None = None, what: str = "training loss", where: str = "") -> float:
    """Zero the gradients, ``loss.backward()``, step ``optimizer``; returns the loss as a float.

    Args:
        masters: float32 master copies the optimizer steps on (their gradients are cleared after).
        value: the loss to check and return, if not ``loss.item()`` (over many ranks: the global
            batch's loss, the same on every rank, so all refuse a non-finite one together).
        what, where: name the loss in the error, e.g. ``"fine-tuning loss"``, ``"in epoch 3"``.

    Raises:
        NonFiniteError: the loss is NaN or infinite; nothing was stepped.
    """
    value = loss.item() if value is None else value
    if not math.isfinite(value):
        raise NonFiniteError(f"{what} became {value}{' ' + where if where else ''}; lower the learning rate")
    if masters is not None:
        masters.zero_grad(optimizer)
        loss.backward()
        masters.step(optimizer)
    else:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return value
