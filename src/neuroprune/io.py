"""Save and load pruned models without pickle.

A saved folder holds three files:

* ``model.safetensors`` – the pruned weights (safetensors: no code runs on load);
* ``plan.json`` – what was kept of every layer of the original model (versioned format);
* ``report.json`` – the measurements of the run.

:func:`load` rebuilds the original architecture, replays the plan to shrink it and loads the
weights, so the result computes exactly what the pruned model computed.

Example:
    >>> import tempfile, torch, torch.nn as nn
    >>> from neuroprune.plan import PruningPlan
    >>> build = lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> plan = PruningPlan().compose({"0": {"out": torch.tensor([0, 1])}, "2": {"in": torch.tensor([0, 1])}},
    ...                              {"0": "Linear", "2": "Linear"}, {"0": {"in": 3, "out": 4}, "2": {"in": 4, "out": 2}})
    >>> small = apply_plan(build(), plan)
    >>> folder = tempfile.mkdtemp() + "/out"
    >>> save(folder, small, plan)
    >>> x = torch.randn(5, 3)
    >>> torch.equal(load(folder, build)(x), small(x))
    True
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn
from safetensors import SafetensorError

from .adapters import get_adapter
from .errors import CheckpointError, OutputExistsError, PlanError
from .plan import PruningPlan
from .surgery.apply import apply_keep
from .surgery.registry import handler_for

MODEL_FILE = "model.safetensors"
PLAN_FILE = "plan.json"
REPORT_FILE = "report.json"


def apply_plan(model: nn.Module, plan: PruningPlan, *, inplace: bool = False) -> nn.Module:
    """Shrink ``model`` (the original architecture) as ``plan`` says, after checking it fits."""
    problems = []
    for path, entry in plan.modules.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:
            problems.append(f"the model has no module {path!r}")
            continue
        if type(module).__name__ != entry["type"]:
            problems.append(f"{path} is a {type(module).__name__}, the plan expects a {entry['type']}")
            continue
        handler = handler_for(module)
        sizes = handler.axes(module) if handler else {}
        for axis, spec in entry["axes"].items():
            if sizes.get(axis) != spec["size"]:
                problems.append(f"{path}.{axis} has {sizes.get(axis)} positions, the plan expects {spec['size']}")
    if problems:
        raise PlanError("plan does not match the model: " + "; ".join(problems))
    pruned = apply_keep(model, plan.keep(), inplace=inplace)
    get_adapter(plan.adapter).after_surgery(pruned)
    return pruned


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))


def save(folder: str | os.PathLike, model: nn.Module, plan: PruningPlan, report: dict | None = None, *,
         overwrite: bool = False, extra: dict[str, Any] | None = None) -> None:
    """Write ``model.safetensors``, ``plan.json`` and ``report.json`` into ``folder``.

    Everything is written to a temporary sibling folder first and renamed into place, so an
    interrupted save leaves no half-written folder. An existing folder is refused unless
    ``overwrite``. ``extra`` maps further relative file names to content: bytes or text are
    written as they are, anything else as JSON.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise OutputExistsError(f"output folder {str(folder)!r} already exists; choose another or pass overwrite")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        safetensors.torch.save_model(model, str(staging / MODEL_FILE))
        _write_json(staging / PLAN_FILE, plan.to_dict())
        _write_json(staging / REPORT_FILE, report or {})
        for name, content in (extra or {}).items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            elif isinstance(content, str):
                target.write_text(content)
            else:
                _write_json(target, content)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            folder.rename(old)
            staging.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_plan(folder: str | os.PathLike) -> PruningPlan:
    """The plan of a saved folder (validated)."""
    path = Path(folder) / PLAN_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"{str(folder)!r} is not a neuroprune folder: {PLAN_FILE} is missing") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from error
    return PruningPlan.from_dict(data)


def load(folder: str | os.PathLike, model_or_builder: nn.Module | Callable[[], nn.Module]) -> nn.Module:
    """Rebuild a pruned model from a folder written by :func:`save`.

    Args:
        folder: the saved folder.
        model_or_builder: the *original* (unpruned) architecture, or a function building it; a
            module passed in is copied, not modified.
    """
    folder = Path(folder)
    weights = folder / MODEL_FILE
    if not weights.is_file():
        raise CheckpointError(f"{str(folder)!r} is not a neuroprune folder: {MODEL_FILE} is missing")
    plan = read_plan(folder)
    if isinstance(model_or_builder, nn.Module):
        model = copy.deepcopy(model_or_builder)
    elif callable(model_or_builder):
        model = model_or_builder()
    else:
        raise TypeError("model_or_builder must be an nn.Module or a function returning one")
    model = apply_plan(model, plan, inplace=True)
    _load_safetensors_into(model, weights)
    return model


def _load_safetensors_into(model: nn.Module, path: Path) -> None:
    """Load ``path`` into ``model``; tied weights saved once fill every name they have.

    The file has no per-module version metadata; the freshly built model's own is passed on, so
    layers that check it in ``_load_from_state_dict`` (torchvision's MNASNet) load as they would
    from their own ``state_dict()``.
    """
    try:
        state = safetensors.torch.load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error
    own = model.state_dict(keep_vars=True)
    state = OrderedDict(state)
    state._metadata = getattr(own, "_metadata", None)  # type: ignore[attr-defined]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (RuntimeError, ValueError) as error:  # shape mismatches, a layer refusing its weights
        raise CheckpointError(f"weights in {path} do not fit the model: {error}") from error
    loaded = {(own[k].data_ptr(), tuple(own[k].shape)) for k in state if k in own}
    missing = [k for k in missing if (own[k].data_ptr(), tuple(own[k].shape)) not in loaded]
    if missing or unexpected:
        raise CheckpointError(f"weights in {path} do not fit the model: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")


def _unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), (dict, nn.Module)):
                return _unwrap_state_dict(obj[key])
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise CheckpointError("the file holds no state_dict (a mapping of names to tensors)")


def load_weights(model: nn.Module, path: str | os.PathLike, *, allow_pickle: bool = False) -> nn.Module:
    """Load a user's trained weights (``.safetensors`` or a saved ``state_dict``) into ``model``.

    Pickled objects (whole modules, custom classes) are refused unless ``allow_pickle=True``:
    unpickling runs code from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            state = safetensors.torch.load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"cannot read {path}: {error}") from error
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
        except Exception as error:  # UnpicklingError, RuntimeError for corrupt zips, …
            if allow_pickle or "weights_only" not in str(error).lower():
                raise CheckpointError(f"cannot read {path}: {error}") from error
            raise CheckpointError(f"{path} contains pickled objects, which neuroprune does not unpickle by default "
                                  "(unpickling runs code from the file). Save a state_dict or safetensors "
                                  "instead, or pass allow_pickle=True (--allow-pickle) if you trust the file") from error
        state = _unwrap_state_dict(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"weights in {path} do not fit the model: {error}") from error
    return model
