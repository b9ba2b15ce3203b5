"""Checkpoints of a Keras pruning run: the saved folder of the current model plus ``state.json``.

Written atomically after every step (:func:`neuroprune.keras.io.save`); a resumed run rebuilds the
model by replaying the plan onto the original and reading ``model.safetensors``, and refuses
other starting weights, data or settings. Fine-tuning seeds itself per call, so no random state
needs saving.

Example:
    >>> import os, tempfile
    >>> check_checkpoint_folder(os.path.join(tempfile.mkdtemp(), "new"))  # a new path is fine
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from neuroprune.core.atomic import recover_folder
from neuroprune.core.errors import CheckpointError
from neuroprune.core.loop_state import LoopState
from neuroprune.keras.io import is_saved_folder, load, read_plan, save

STATE_FILE = "state.json"
_FINGERPRINT_MEANING = {"weights": "other starting weights", "data": "other data"}
_REQUIRED = ("step", "reference", "original", "fixed", "before", "steps", "config", "loop", "fingerprint")


def _settings(config) -> dict[str, Any]:
    """The settings that must match to resume (progress display may differ)."""
    return {k: v for k, v in config.to_dict().items() if k != "progress"}


def is_checkpoint(folder: str | os.PathLike) -> bool:
    return is_saved_folder(folder) and (Path(folder) / STATE_FILE).is_file()


def check_checkpoint_folder(folder: str | os.PathLike) -> None:
    """Refuse a path that is a file or a non-empty folder other than a neuroprune checkpoint."""
    folder = Path(folder)
    recover_folder(folder, is_checkpoint)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"checkpoint path {str(folder)!r} is a file; a checkpoint is a folder")
    if folder.is_dir() and any(folder.iterdir()) and not is_checkpoint(folder):
        raise CheckpointError(f"checkpoint folder {str(folder)!r} exists and is not a neuroprune checkpoint (no "
                              f"{STATE_FILE}); give a new path, an empty folder or an earlier neuroprune checkpoint")


def save_checkpoint(folder, model: Any, state: LoopState, config, fingerprint: dict[str, str] | None = None) -> None:
    """Replace the checkpoint in ``folder`` with ``model`` and the loop state."""
    check_checkpoint_folder(folder)
    data = {"step": state.step, "reference": state.reference, "original": state.original, "fixed": state.fixed,
            "before": state.before, "steps": state.steps, "config": _settings(config), "loop": state.loop_dict(),
            "fingerprint": fingerprint or {}}
    save(folder, model, state.plan, overwrite=True, extra={STATE_FILE: json.dumps(data, default=str)})


def load_checkpoint(folder, original: Any, config, fingerprint: dict[str, str] | None = None) -> tuple[Any, LoopState]:
    """The model and loop state saved in ``folder``; ``original`` is the unpruned model."""
    if folder is None or not is_checkpoint(folder):
        raise CheckpointError(f"nothing to resume: {str(folder)!r} holds no Keras checkpoint ({STATE_FILE} is "
                              "missing); run without resume to start")
    path = Path(folder) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from error
    missing = [k for k in _REQUIRED if not isinstance(data, dict) or k not in data]
    if missing:
        raise CheckpointError(f"{path} is not a valid checkpoint state: {', '.join(missing)} missing")
    if fingerprint is not None:
        differing = [meaning for k, meaning in _FINGERPRINT_MEANING.items() if data["fingerprint"].get(k) != fingerprint[k]]
        if differing:
            raise CheckpointError(f"the checkpoint in {str(folder)!r} was started from {' and '.join(differing)}; "
                                  "resume with the same model and data, or remove the checkpoint")
    settings = json.loads(json.dumps(_settings(config), default=str))
    differing = sorted(k for k in set(data["config"]) | set(settings) if data["config"].get(k) != settings.get(k))
    if differing:
        raise CheckpointError(f"the checkpoint in {str(folder)!r} was written with other settings "
                              f"({', '.join(differing)}); resume with the same settings or remove it")
    state = LoopState(data["step"], read_plan(folder), data["reference"], data["original"], data["fixed"],
                      data["before"], data["steps"], **data["loop"])
    return load(folder, original), state
