"""Save and load pruned models without pickle.

A saved folder holds three files:

* ``model.safetensors`` – the pruned weights (safetensors: no code runs on load);
* ``plan.json`` – what was kept of every layer of the original model (versioned format), and the
  sha256 of ``model.safetensors``, checked on load;
* ``report.json`` – the measurements of the run.

:func:`load` rebuilds the original architecture, replays the plan to shrink it and loads the
weights, so the result computes exactly what the pruned model computed.

Example:
    >>> import tempfile, torch, torch.nn as nn
    >>> from neuroprune.core.plan import PruningPlan
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
import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn
from safetensors import SafetensorError

from neuroprune.core.backend import get_backend
from neuroprune.torch import distributed
from neuroprune.core.atomic import output_folder, recover_folder, write_files
from neuroprune.core.errors import CheckpointError, ConfigError, PlanError, WeightsWarning
from neuroprune.core.plan import PLAN_FORMAT, PruningPlan
from neuroprune.torch.surgery import apply_keep
from neuroprune.torch.layers.registry import handler_for

MODEL_FILE = "model.safetensors"
PLAN_FILE = "plan.json"
REPORT_FILE = "report.json"
#: Key of ``plan.json`` holding the sha256 of ``model.safetensors`` (absent in folders of other writers).
WEIGHTS_SHA256 = "weights_sha256"
#: Deeper JSON is refused before parsing (Python's parser would hit its recursion limit).
MAX_JSON_DEPTH = 64


def apply_plan(model: nn.Module, plan: PruningPlan, *, inplace: bool = False) -> nn.Module:
    """Shrink ``model`` (the original architecture) as ``plan`` says, after checking it fits."""
    _check_plan_type(plan)
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
    get_backend(plan.adapter).after_surgery(pruned)
    return pruned


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_saved_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a complete folder written by :func:`save` (weights and a neuroprune ``plan.json``).

    Example:
        >>> is_saved_folder("/nonexistent/folder")
        False
    """
    folder = Path(folder)
    try:
        if not (folder / MODEL_FILE).is_file():
            return False
        data = json.loads((folder / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == PLAN_FORMAT


def _check_plan_type(plan: object) -> None:
    if not isinstance(plan, PruningPlan):
        raise PlanError(f"expected a PruningPlan, got {type(plan).__name__} (PruningPlan.from_dict reads a dict)")


def save(folder: str | os.PathLike, model: nn.Module, plan: PruningPlan, report: dict | None = None, *,
         overwrite: bool = False, extra: dict[str, Any] | None = None) -> None:
    """Write ``model.safetensors``, ``plan.json`` and ``report.json`` into ``folder``.

    Everything is written to a hidden sibling folder, fsynced, and swapped into place (see
    :mod:`neuroprune.core.atomic`), so the path always holds a complete old or new folder. An existing
    folder is refused unless ``overwrite``; a file at the path is always refused. ``plan.json`` is
    written last and records the sha256 of ``model.safetensors``. ``extra`` maps further relative
    file names to content: bytes or text are written as they are, anything else as JSON.

    In a process group of several ranks every rank calls this; rank 0 writes, the others wait
    for it (a failure to write is raised on every rank).
    """
    _check_plan_type(plan)
    with distributed.guarded():
        if distributed.is_writer():
            _write_folder(Path(folder), model, plan, report, overwrite=overwrite, extra=extra)
        distributed.barrier()


def _write_folder(folder: Path, model: nn.Module, plan: PruningPlan, report: dict | None, *,
                  overwrite: bool, extra: dict[str, Any] | None) -> None:
    with output_folder(folder, is_saved_folder, overwrite=overwrite) as staging:
        safetensors.torch.save_model(model, str(staging / MODEL_FILE))
        write_files(staging, {REPORT_FILE: report or {}, **(extra or {})})
        write_files(staging, {PLAN_FILE: {**plan.to_dict(), WEIGHTS_SHA256: file_sha256(staging / MODEL_FILE)}})


def _json_depth(text: str) -> int:
    """How deeply brackets nest in JSON text (brackets inside strings count too: an upper bound)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def read_json_file(path: Path, what: str, error: type[Exception] = PlanError) -> Any:
    """Parse a small JSON file of a saved folder; every problem is a neuroprune error naming the file."""
    if path.is_dir():
        raise error(f"{path} is a folder; {what} must be a JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as missing:
        raise CheckpointError(f"{str(path.parent)!r} is not a neuroprune folder: {path.name} is missing") from missing
    except UnicodeDecodeError as undecodable:
        raise CheckpointError(f"{path} is not valid JSON: {undecodable}") from undecodable
    except OSError as unreadable:
        raise CheckpointError(f"cannot read {path}: {unreadable}") from unreadable
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise error(f"{path} nests deeper than {MAX_JSON_DEPTH} levels; {what} is never that deep")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as invalid:
        raise CheckpointError(f"{path} is not valid JSON: {invalid}") from invalid


def _read_plan_data(folder: Path) -> tuple[PruningPlan, str | None]:
    data = read_json_file(folder / PLAN_FILE, PLAN_FILE)
    plan = PruningPlan.from_dict(data)
    digest = data.get(WEIGHTS_SHA256)
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                   and all(c in "0123456789abcdef" for c in digest)):
        raise PlanError(f"{folder / PLAN_FILE}: {WEIGHTS_SHA256!r} must be 64 lowercase hex digits, got {digest!r}")
    return plan, digest


def read_plan(folder: str | os.PathLike) -> PruningPlan:
    """The plan of a saved folder (validated)."""
    folder = Path(folder)
    recover_folder(folder, is_saved_folder)
    return _read_plan_data(folder)[0]


def load(folder: str | os.PathLike, model_or_builder: nn.Module | Callable[[], nn.Module]) -> nn.Module:
    """Rebuild a pruned model from a folder written by :func:`save`.

    Args:
        folder: the saved folder.
        model_or_builder: the *original* (unpruned) architecture, or a function building it; a
            module passed in is copied, not modified.
    """
    folder = Path(folder)
    recover_folder(folder, is_saved_folder)  # a crash between the two renames of a replacement
    weights = folder / MODEL_FILE
    if not weights.is_file():
        raise CheckpointError(f"{str(folder)!r} is not a neuroprune folder: {MODEL_FILE} is missing")
    plan, digest = _read_plan_data(folder)
    if isinstance(model_or_builder, nn.Module):
        model = copy.deepcopy(model_or_builder)
    elif callable(model_or_builder):
        model = model_or_builder()
    else:
        raise ConfigError([f"model_or_builder must be an nn.Module or a function returning one, got {type(model_or_builder).__name__}"])
    model = apply_plan(model, plan, inplace=True)
    _load_safetensors_into(model, weights)
    if digest is not None and file_sha256(weights) != digest:
        raise CheckpointError(f"{weights} does not match the sha256 recorded in {PLAN_FILE}: the file was changed or "
                              "damaged after saving; restore it or save the model again")
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


def _sniff_format(path: Path) -> str | None:
    """``"safetensors"``, ``"zip"`` (torch.save), ``"pickle"`` (older torch.save) or ``None``, from the first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    return None


def _read_state(path: Path, allow_pickle: bool) -> Any:
    kind = _sniff_format(path)
    if kind == "safetensors":  # whatever its suffix
        try:
            return safetensors.torch.load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"cannot read {path}: a corrupt or truncated safetensors file ({error})") from error
    if path.suffix == ".safetensors":
        found = "a torch.save file; rename it to .pt" if kind else "corrupt, truncated or another format"
        raise CheckpointError(f"cannot read {path}: not a valid safetensors file ({found})")
    if kind is None:
        raise CheckpointError(f"cannot read {path}: neither a safetensors nor a torch.save file (corrupt, truncated or "
                              "another format); save weights with safetensors.torch.save_model(model, path) or "
                              "torch.save(model.state_dict(), path)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:  # UnpicklingError, RuntimeError for corrupt zips, …
        message = str(error)
        if allow_pickle or "Unsupported global" not in message:
            found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:Check the documentation|$)", message, re.DOTALL)
            reason = " ".join(found.group(1).split()) if found else (message.strip().splitlines() or [type(error).__name__])[0]
            raise CheckpointError(f"cannot read {path}: the file is corrupt, truncated or not a state_dict "
                                  f"({reason})") from error
        raise CheckpointError(f"{path} contains pickled objects, which neuroprune does not unpickle by default "
                              "(unpickling runs code from the file). Save a state_dict or safetensors "
                              "instead, or pass allow_pickle=True (--allow-pickle) if you trust the file") from error


def _warn_about_casts(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    cast = sorted(name for name, tensor in state.items() if name in own and own[name].is_floating_point()
                  and isinstance(tensor, torch.Tensor) and not tensor.is_floating_point() and not tensor.is_complex())
    if cast:
        import warnings

        shown = ", ".join(f"{name} ({state[name].dtype})" for name in cast[:5]) + (", …" if len(cast) > 5 else "")
        warnings.warn(WeightsWarning(f"{path}: {len(cast)} integer weight tensor(s) cast to the model's float dtype: "
                                     f"{shown}; check that these are the trained weights"), stacklevel=3)


def load_weights(model: nn.Module, path: str | os.PathLike, *, allow_pickle: bool = False) -> nn.Module:
    """Load a user's trained weights (``.safetensors`` or a saved ``state_dict``) into ``model``.

    The format is recognised from the file's first bytes, so a safetensors file with another
    suffix loads too. Pickled objects (whole modules, custom classes) are refused unless
    ``allow_pickle=True``: unpickling runs code from the file. A corrupt or truncated file is a
    :class:`~neuroprune.core.errors.CheckpointError` saying so. Integer tensors loaded into float
    parameters give a :class:`~neuroprune.core.errors.WeightsWarning`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    state = _unwrap_state_dict(_read_state(path, allow_pickle))
    _warn_about_casts(model, state, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"weights in {path} do not fit the model: {error}") from error
    return model
