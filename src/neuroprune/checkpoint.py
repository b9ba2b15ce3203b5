"""Checkpoints of the pruning loop, so that a crashed or interrupted run can resume.

A checkpoint is a saved neuroprune folder (the pruned-so-far model and its plan) plus
``state.json`` (steps done, their records, the reference metric, the random-number state). It
is replaced atomically after every step, so a crash at any moment leaves either the previous or
the new checkpoint, never a mix.

Example:
    >>> checkpoint_exists("/nonexistent/folder")
    False
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import CheckpointError
from .io import load, save
from .plan import PruningPlan

STATE_FILE = "state.json"
_IGNORED_SETTINGS = ("progress", "latency_runs")


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


def _settings(config) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _IGNORED_SETTINGS}


def checkpoint_exists(folder: str | os.PathLike) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def save_checkpoint(folder: str | os.PathLike, model: nn.Module, state: LoopState, config) -> None:
    """Replace the checkpoint in ``folder`` with the current model and loop state."""
    data = {
        "step": state.step, "reference": state.reference, "original": state.original, "fixed": state.fixed,
        "before": state.before, "steps": state.steps, "config": _settings(config), "loop": state.loop_dict(),
        "rng": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
    }
    save(folder, model, state.plan, overwrite=True, extra={STATE_FILE: data})


def load_checkpoint(folder: str | os.PathLike, original: nn.Module, config) -> tuple[nn.Module, LoopState]:
    """The model and loop state saved in ``folder``; ``original`` is the unpruned model."""
    try:
        data = json.loads((Path(folder) / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read the checkpoint in {str(folder)!r}: {error}") from error
    saved = data.get("config", {})
    differing = sorted(k for k in set(saved) | set(_settings(config)) if saved.get(k) != _settings(config).get(k))
    if differing:
        raise CheckpointError(f"the checkpoint in {str(folder)!r} was written with other settings "
                              f"({', '.join(differing)}); resume with the same settings or remove it")
    model = load(folder, original)
    rng = torch.frombuffer(bytearray(base64.b64decode(data["rng"])), dtype=torch.uint8)
    torch.set_rng_state(rng)
    state = LoopState(data["step"], PruningPlan.from_dict(json.loads((Path(folder) / "plan.json").read_text())),
                      data["reference"], data["original"], data["fixed"], data["before"], data["steps"],
                      **data.get("loop", {}))
    return model, state
