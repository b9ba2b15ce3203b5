"""Checkpoints of the pruning loop, so that a crashed or interrupted run can resume.

A checkpoint is a saved neuroprune folder (the pruned-so-far model and its plan) plus
``state.json`` (steps done, their records, the reference metric, the random-number state, and a
fingerprint of the starting weights and the data). It is swapped into place after every step
(:mod:`neuroprune.core.atomic`), so a crash at any moment leaves the previous or the new checkpoint,
never a mix. A folder that is not a checkpoint is never replaced.

Example:
    >>> checkpoint_exists("/nonexistent/folder")
    False
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from neuroprune.core.atomic import recover_folder
from neuroprune.core.errors import CheckpointError, PlanError
from neuroprune.torch import distributed
from neuroprune.torch.fingerprint import fingerprint_data, fingerprint_model
from neuroprune.torch.io import PLAN_FILE, is_saved_folder, load, read_json_file, save
from neuroprune.core.loop_state import LoopState
from neuroprune.core.plan import PruningPlan

STATE_FILE = "state.json"
_IGNORED_SETTINGS = ("progress", "latency_runs", "recover_sharding")  # how, not what: results do not depend on it
_FINGERPRINT_MEANING = {"weights": "other model weights (--weights, or training before pruning)",
                        "data": "other data (the data set, its batch size, calibration samples or seed)"}


def _settings(config) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _IGNORED_SETTINGS}


def fingerprint_run(model: nn.Module, task) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the starting weights and the data."""
    return {"weights": fingerprint_model(model), "data": fingerprint_data(task)}


def is_checkpoint(folder: str | os.PathLike) -> bool:
    """A complete saved folder with a ``state.json``: something :func:`save_checkpoint` wrote."""
    return is_saved_folder(folder) and (Path(folder) / STATE_FILE).is_file()


def checkpoint_exists(folder: str | os.PathLike) -> bool:
    recover_folder(folder, is_checkpoint)
    return (Path(folder) / STATE_FILE).is_file()


def check_checkpoint_folder(folder: str | os.PathLike) -> None:
    """Refuse a path that is a file or a non-empty folder other than a neuroprune checkpoint.

    A checkpoint folder is replaced after every step, so only a new path, an empty folder or a
    checkpoint of an earlier run may be given.
    """
    folder = Path(folder)
    recover_folder(folder, is_checkpoint)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise CheckpointError(f"checkpoint path {str(folder)!r} is a file; a checkpoint is a folder: give a new path, "
                              "an empty folder or an earlier neuroprune checkpoint")
    if folder.is_dir() and any(folder.iterdir()) and not is_checkpoint(folder):
        raise CheckpointError(f"checkpoint folder {str(folder)!r} exists and is not a neuroprune checkpoint (no "
                              f"{STATE_FILE}); it is replaced after every step, so neuroprune leaves it alone: give "
                              "a new path, an empty folder or an earlier neuroprune checkpoint")


def save_checkpoint(folder: str | os.PathLike, model: nn.Module, state: LoopState, config,
                    fingerprint: dict[str, str] | None = None) -> None:
    """Replace the checkpoint in ``folder`` with the current model and loop state (in a process
    group: rank 0 writes, every rank waits for it)."""
    if distributed.is_writer():
        check_checkpoint_folder(folder)
    data = {
        "step": state.step, "reference": state.reference, "original": state.original, "fixed": state.fixed,
        "before": state.before, "steps": state.steps, "config": _settings(config), "loop": state.loop_dict(),
        "rng": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
        "fingerprint": fingerprint or {},
    }
    save(folder, model, state.plan, overwrite=True, extra={STATE_FILE: data})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_LOOP_FIELDS = {"pending", "done", "fails", "seconds", "stopped"}


def _state_problems(data: Any) -> list[str]:
    """Every field of ``state.json`` that is missing or has the wrong type."""
    if not isinstance(data, dict):
        return [f"it holds a {type(data).__name__}, not an object"]
    checks = {
        "step": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
        "reference": (_is_number, "a number"),
        "original": (lambda v: isinstance(v, dict) and all(isinstance(n, int) and not isinstance(n, bool)
                                                           for n in v.values()), "an object of layer widths"),
        "fixed": (lambda v: isinstance(v, dict) and all(isinstance(r, list) for r in v.values()),
                  "an object of lists"),
        "before": (lambda v: isinstance(v, dict), "an object"),
        "steps": (lambda v: isinstance(v, list) and all(isinstance(s, dict) for s in v), "a list of objects"),
        "config": (lambda v: isinstance(v, dict), "an object"),
        "rng": (lambda v: isinstance(v, str), "a base64 text"),
        "fingerprint": (lambda v: isinstance(v, dict) and all(isinstance(v.get(k), str) for k in _FINGERPRINT_MEANING),
                        "an object with 'weights' and 'data' texts"),
        "loop": (lambda v: isinstance(v, dict) and set(v) <= _LOOP_FIELDS, f"an object with the fields {sorted(_LOOP_FIELDS)}"),
    }
    problems = []
    for name, (valid, wanted) in checks.items():
        if name not in data:
            problems.append(f"{name!r} is missing")
        elif not valid(data[name]):
            problems.append(f"{name!r} must be {wanted}, got {str(data[name])[:40]!r}")
    return problems


def _rng_state(text: str, path: Path) -> torch.Tensor:
    try:
        state = torch.frombuffer(bytearray(base64.b64decode(text, validate=True)), dtype=torch.uint8)
    except (binascii.Error, ValueError) as error:
        raise CheckpointError(f"{path}: 'rng' is not valid base64: {error}") from error
    if state.numel() != torch.get_rng_state().numel():
        raise CheckpointError(f"{path}: 'rng' holds {state.numel()} bytes, a random-number state has "
                              f"{torch.get_rng_state().numel()}")
    return state


def load_checkpoint(folder: str | os.PathLike | None, original: nn.Module, config,
                    fingerprint: dict[str, str] | None = None) -> tuple[nn.Module, LoopState]:
    """The model and loop state saved in ``folder``; ``original`` is the unpruned model.

    Refused with a :class:`CheckpointError` naming the difference: no checkpoint, a damaged
    ``state.json``, other starting weights or data than ``fingerprint``, other settings.
    """
    if folder is None:
        raise CheckpointError("resume=True needs a checkpoint: pass checkpoint=FOLDER (the folder of the "
                              "interrupted run)")
    if not checkpoint_exists(folder):
        raise CheckpointError(f"nothing to resume: {str(folder)!r} holds no checkpoint ({STATE_FILE} is missing); "
                              "run without resume to start")
    path = Path(folder) / STATE_FILE
    data = read_json_file(path, STATE_FILE, CheckpointError)
    problems = _state_problems(data)
    if problems:
        raise CheckpointError(f"{path} is not a valid checkpoint state: {'; '.join(problems)}; remove the "
                              "checkpoint and start again")
    if fingerprint is not None:
        differing = [_FINGERPRINT_MEANING[k] for k in _FINGERPRINT_MEANING if data["fingerprint"][k] != fingerprint[k]]
        if differing:
            raise CheckpointError(f"the checkpoint in {str(folder)!r} was started from {' and '.join(differing)}; "
                                  "resume with the same model and data, or remove the checkpoint")
    saved = data["config"]
    differing = sorted(k for k in set(saved) | set(_settings(config)) if saved.get(k) != _settings(config).get(k))
    if differing:
        raise CheckpointError(f"the checkpoint in {str(folder)!r} was written with other settings "
                              f"({', '.join(differing)}); resume with the same settings or remove it")
    rng = _rng_state(data["rng"], path)
    try:
        plan = PruningPlan.from_dict(read_json_file(Path(folder) / PLAN_FILE, PLAN_FILE))
    except PlanError as error:
        raise CheckpointError(f"the checkpoint in {str(folder)!r} has a damaged {PLAN_FILE}: {error}") from error
    model = load(folder, original)
    torch.set_rng_state(rng)
    state = LoopState(data["step"], plan, data["reference"], data["original"], data["fixed"], data["before"],
                      data["steps"], **data.get("loop", {}))
    return model, state
