"""Check every output path of a command before any training or pruning starts.

Each check raises one :class:`~neuroprune.core.errors.OutputPathError` (or ``OutputExistsError``)
whose sentence names the option and the path: the parent folder is missing, read-only or a file;
a file stands where a folder is wanted (or the reverse); the path is the current folder or holds
it; the output would replace one of the command's inputs; two outputs collide.

Example:
    >>> import os, tempfile
    >>> os.chdir(tempfile.mkdtemp())
    >>> check_output_folder(".", "--out")
    Traceback (most recent call last):
    ...
    neuroprune.core.errors.OutputPathError: --out '.' is the current folder; name a new folder, e.g. --out pruned
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from neuroprune.core.errors import OutputExistsError, OutputPathError


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _check_parent(path: str | os.PathLike, option: str) -> None:
    parent = _resolved(path).parent
    if not parent.exists():
        raise OutputPathError(f"{option} {str(path)!r}: the folder it goes in, {str(parent)!r}, does not exist; "
                              "create it first or choose another path")
    if not parent.is_dir():
        raise OutputPathError(f"{option} {str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {str(path)!r}: cannot write in {str(parent)!r} (permission denied); "
                              "choose another path")


def _check_inputs(path: str | os.PathLike, option: str, inputs: Iterable[str | os.PathLike | None],
                  *, folder: bool) -> None:
    target = _resolved(path)
    for given in inputs:
        if not given:
            continue
        source = _resolved(given)
        if source == target or (folder and target in source.parents):
            raise OutputPathError(f"{option} {str(path)!r} would replace the input {str(given)!r}; "
                                  "choose another path")


def check_output_folder(path: str | os.PathLike, option: str, *, inputs: Iterable[str | os.PathLike | None] = (),
                        overwrite: bool = True, may_exist: bool = False,
                        owned: Callable[[Path], bool] | None = None) -> None:
    """An output folder (``--out``, ``--checkpoint``, ``export OUT_DIR``).

    Args:
        inputs: files and folders the command reads; the output may neither be one nor hold one.
        overwrite: whether an existing folder may be replaced (``--overwrite``).
        may_exist: the command writes *into* the folder (export) rather than replacing it.
        owned: recognises a folder neuroprune wrote; with it, ``overwrite`` replaces only such a
            folder (or an empty one), never a folder of the user's.
    """
    folder = Path(path)
    target = _resolved(folder)
    cwd = Path.cwd().resolve()
    if target == cwd:
        raise OutputPathError(f"{option} {str(path)!r} is the current folder; name a new folder, e.g. {option} pruned")
    if target in cwd.parents:
        raise OutputPathError(f"{option} {str(path)!r} holds the current folder; name a new folder, e.g. "
                              f"{option} pruned")
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{option} {str(path)!r} is a file; a folder is wanted there")
    _check_parent(folder, option)
    _check_inputs(folder, option, inputs, folder=True)
    if folder.exists() and not (overwrite or may_exist):
        raise OutputExistsError(f"output folder {str(path)!r} already exists; choose another {option} or pass "
                                "--overwrite")
    if overwrite and owned is not None and folder.is_dir() and any(folder.iterdir()) and not owned(folder):
        raise OutputPathError(f"{option} {str(path)!r} is a folder neuroprune did not write (no model.safetensors and "
                              "plan.json); --overwrite only replaces neuroprune's own output folders: choose another "
                              f"{option} or empty it yourself")


def check_output_file(path: str | os.PathLike, option: str, *, inputs: Iterable[str | os.PathLike | None] = (),
                      replaced_folders: Iterable[tuple[str, str | os.PathLike | None]] = (),
                      output_folder: str | os.PathLike | None = None) -> None:
    """An output file (``--json``, ``--explain``, ``--plot``).

    Args:
        inputs: files the command reads; the output must not be one of them.
        replaced_folders: ``(option, folder)`` pairs of folders the command replaces or deletes
            (a checkpoint); a file inside one would be lost.
        output_folder: the command's output folder (``--out``, checked on its own): a file directly
            inside it is fine although the folder does not exist yet, since files come after it.
    """
    file = Path(path)
    target = _resolved(file)
    for other_option, folder in replaced_folders:
        if folder and _resolved(folder) in target.parents:
            raise OutputPathError(f"{option} {str(path)!r} lies inside {other_option} {str(folder)!r}, which neuroprune "
                                  "replaces while it runs; choose a path outside it")
    if file.is_dir():
        raise OutputPathError(f"{option} {str(path)!r} is a folder; a file is wanted there")
    if not (output_folder and target.parent == _resolved(output_folder)):
        _check_parent(file, option)
    _check_inputs(file, option, inputs, folder=False)


def check_distinct(outputs: Iterable[tuple[str, str | os.PathLike | None, bool]]) -> None:
    """Refuse two ``(option, path, is_folder)`` outputs naming one path, or one output folder inside another.

    A file may lie inside an output folder: it is written after the folder.
    """
    seen: list[tuple[str, str | os.PathLike, Path, bool]] = []
    for option, path, is_folder in outputs:
        if not path:
            continue
        target = _resolved(path)
        for other_option, other_path, other, other_is_folder in seen:
            nested = is_folder and other_is_folder and (other in target.parents or target in other.parents)
            if target == other or nested:
                raise OutputPathError(f"{option} {str(path)!r} and {other_option} {str(other_path)!r} overlap; give "
                                      "each output its own path")
        seen.append((option, path, target, is_folder))


def input_paths(args) -> list[str]:
    """The files and folders a command reads: model file, weights, data, settings file, local hf folder."""
    paths = [getattr(args, "weights", None), getattr(args, "config", None)]
    model = getattr(args, "model", None) or ""
    if model.startswith("hf:"):
        paths.append(model[3:] if Path(model[3:]).exists() else None)
    elif not model.startswith("zoo:"):
        paths.append(model.rpartition(":")[0] or None)
    data = getattr(args, "data", None) or ""
    for prefix in ("npz:", "text:"):
        if data.startswith(prefix):
            paths.append(data[len(prefix):])
    paths.append(getattr(args, "folder", None))  # export --from
    return [p for p in paths if p]
