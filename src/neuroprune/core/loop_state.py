"""What the pruning loop carries from one step to the next (and what a checkpoint saves).

Example:
    >>> from neuroprune.core.plan import PruningPlan
    >>> state = LoopState(0, PruningPlan(adapter="fx"), 0.9, {"fc1": 8}, {}, {}, [], pending=[1.0])
    >>> state.loop_dict()
    {'pending': [1.0], 'done': 0.0, 'fails': 0, 'seconds': 0.0, 'stopped': None}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from neuroprune.core.plan import PruningPlan


@dataclass
class LoopState:
    """Everything the loop carries from one step to the next."""

    step: int
    plan: PruningPlan
    reference: float
    original: dict[str, int]
    fixed: dict[str, list[str]]
    before: dict[str, Any]
    steps: list[dict[str, Any]]
    pending: list[float] = field(default_factory=list)  # fractions of the target still to reach, ascending
    done: float = 0.0  # fraction of the target reached by the last accepted attempt
    fails: int = 0  # attempts rolled back in a row in the current step
    seconds: float = 0.0  # time spent in steps so far
    stopped: str | None = None  # why the loop stopped before the schedule ended

    def loop_dict(self) -> dict[str, Any]:
        return {"pending": self.pending, "done": self.done, "fails": self.fails, "seconds": self.seconds,
                "stopped": self.stopped}
