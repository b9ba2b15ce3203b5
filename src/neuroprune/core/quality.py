"""How much worse a validation metric got: the one place that knows a metric's direction.

Accuracy-like metrics (higher is better) drop by ``reference - metric`` in absolute points;
loss-like metrics (perplexity, lower is better) by the relative increase
``(metric - reference) / reference``, so ``tolerance=0.05`` means "5 % higher perplexity".
A task says which it is with its ``lower_is_better`` attribute (default ``False``).

Example:
    >>> quality_drop(0.97, 0.95)
    0.02...
    >>> quality_drop(20.0, 21.0, lower_is_better=True)
    0.05
"""

from __future__ import annotations

from typing import Any


def lower_is_better(task: Any) -> bool:
    """Whether ``task``'s metric improves downwards (perplexity, loss)."""
    return bool(getattr(task, "lower_is_better", False))


def quality_drop(reference: float, metric: float, *, lower_is_better: bool = False) -> float:
    """How much worse ``metric`` is than ``reference`` (negative when it got better)."""
    if lower_is_better:
        return (metric - reference) / abs(reference) if reference else metric - reference
    return reference - metric
