"""A task's metric from sums over batches: under torchrun each rank evaluates a share of the batches.

A task whose metric is a ratio of sums (accuracy: correct / samples; perplexity: exp(summed NLL /
tokens); fidelity: summed cosine / sentences) declares three methods, and its ``evaluate`` calls
:func:`evaluate_by_sums`:

- ``metric_batches(split)``: the split's evaluation batches, the same list on every rank;
- ``metric_sums(model, batch)``: ``(numerator, denominator)`` of one batch;
- ``metric_value(numerator, denominator)``: the metric of the totals.

In a process group each rank evaluates whole batches ``batches[rank::world]`` and the two sums
travel as one float64 ``all_reduce``, so every rank gets the metric of all batches: the same as one
process (exactly for counts such as accuracy, to rounding for float sums). ``evaluate`` is then a
collective: every rank must call it. A task without these methods evaluates every batch on every
rank (its ``evaluate`` is its own).

Example:
    >>> import torch, torch.nn as nn
    >>> from neuroprune.data import load_digits
    >>> from neuroprune.tasks.classification import ClassificationTask
    >>> task = ClassificationTask(load_digits())
    >>> model = nn.Sequential(nn.Linear(64, 10))
    >>> evaluate_by_sums(task, model, "val") == task.evaluate(model, "val")
    True
"""

from __future__ import annotations

from typing import Any

import torch

from neuroprune.torch import distributed
from neuroprune.torch.modes import evaluation_mode


def evaluate_by_sums(task: Any, model: Any, split: str) -> float:
    """``task``'s metric on ``split`` from this rank's share of its batches, summed over the ranks
    (eval mode and no gradients; the model's modes are restored)."""
    numerator, denominator = 0.0, 0.0
    with distributed.guarded(), evaluation_mode(model), torch.inference_mode():
        for batch in distributed.shard(task.metric_batches(split)):
            top, bottom = task.metric_sums(model, batch)
            numerator += float(top)
            denominator += float(bottom)
    numerator, denominator = distributed.all_reduce_sums([numerator, denominator])
    return task.metric_value(numerator, denominator)
