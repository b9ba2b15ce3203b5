"""Export a saved pruned folder: rebuild it from the original model's spec, make example inputs, export.

The engine of ``neuroprune export``. The model spec (``zoo:NAME``, ``path/to/file.py:build_fn``) is
resolved by :mod:`neuroprune.models.spec`, as the CLI resolves it.

Example:
    >>> parse_input_shape("2,64")
    (2, 64)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from neuroprune.core.errors import CheckpointError, ConfigError, OutputExistsError
from neuroprune.models.spec import build_from_spec, model_layout, parse_model_spec
from neuroprune.torch.export.export import export_model, format_entry
from neuroprune.torch.export.verify import ExportCheck


def parse_input_shape(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"2,64"`` -> ``(2, 64)``: an input shape with the batch size first, every size >= 1."""
    try:
        shape = tuple(int(part) for part in (text.replace("x", ",").split(",") if isinstance(text, str) else text))
    except ValueError as error:
        raise ConfigError([f"input shape must be comma-separated integers with the batch first, e.g. 1,64; "
                           f"got {text!r}"]) from error
    if len(shape) < 2 or any(size < 1 for size in shape):
        raise ConfigError([f"input shape needs a batch size and at least one more axis, all >= 1, e.g. 1,64; "
                           f"got {text!r}"])
    return shape


def load_folder_for_export(folder: str | os.PathLike, model_spec: str, *,
                           input_shape: str | Sequence[int] | None = None, data: str = "digits",
                           layout: str | None = None, image_size: int | None = None, seed: int = 0,
                           min_batch: int = 2, standardize: bool = False) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Rebuild a saved pruned folder and make example inputs for exporting it.

    Args:
        folder: a folder written by ``PruneResult.save`` / :func:`neuroprune.save`.
        model_spec: the *original* model, as for ``neuroprune prune --model``: ``zoo:NAME`` or
            ``path/to/file.py:build_fn``.
        input_shape: example input shape, batch first (``"1,64"``). Without it the inputs are
            samples of ``data`` in the model's layout: the zoo layout and image size for zoo
            models, ``layout`` (default ``flat``) for model files — the defaults of
            ``neuroprune prune``.
        data, layout, image_size, seed: the data set the model was pruned on (``digits`` or
            ``npz:PATH``); zoo models are sized from it (classes, input channels or features).
        standardize: ``npz`` data standardised as ``--standardize`` did when pruning.
        min_batch: a smaller batch is raised to this, since a size-1 axis can be specialised
            by the exporters and a dynamic batch axis then cannot be checked.

    Returns:
        ``(model, example_inputs)``: the pruned model in eval mode and a tuple with one tensor.
    """
    from neuroprune.data import load_data
    from neuroprune.torch.io import load

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"folder {str(folder)!r} does not exist" if not folder.exists()
                              else f"{str(folder)!r} is not a folder")
    kind, _ = parse_model_spec(model_spec)
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    splits = None
    if kind == "zoo" or shape is None:
        data_layout, size = model_layout(model_spec, layout, image_size)
        splits = load_data(data, layout=data_layout, seed=seed, image_size=size, standardize=standardize)
    model = load(folder, lambda: build_from_spec(model_spec, splits))
    model.eval()
    if shape is not None:
        shape = (max(shape[0], min_batch), *shape[1:])
        example = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    else:
        example = splits.x_test[:max(min_batch, 1)].clone()
    return model, (example,)


def export_folder(out_dir: str | os.PathLike, folder: str | os.PathLike, model_spec: str, fmt: str = "onnx", *,
                  input_shape: str | Sequence[int] | None = None, opset: int | None = None, overwrite: bool = False,
                  dynamic_batch: bool = True, check: bool = True, rtol: float = 1e-4, atol: float = 1e-5,
                  data: str = "digits", layout: str | None = None, image_size: int | None = None,
                  seed: int = 0, standardize: bool = False) -> ExportCheck:
    """Export a saved pruned folder to ``out_dir/model.onnx`` (``model.pt``, ``model.pt2``); the CLI's engine.

    An existing output file is refused unless ``overwrite``; the check is done before any work.
    """
    file_name, _ = format_entry(fmt)
    if opset is not None and fmt != "onnx":
        raise ConfigError([f"--opset applies to ONNX export only, not to {fmt}"])
    if not Path(folder).exists():
        raise CheckpointError(f"folder {str(folder)!r} does not exist")
    target = Path(out_dir) / file_name
    if target.exists() and not overwrite:
        raise OutputExistsError(f"output file {str(target)!r} already exists; choose another folder or pass "
                                "--overwrite")
    model, inputs = load_folder_for_export(folder, model_spec, input_shape=input_shape, data=data, layout=layout,
                                           image_size=image_size, seed=seed, min_batch=2 if dynamic_batch else 1,
                                           standardize=standardize)
    return export_model(fmt, model, inputs, target, dynamic_batch=dynamic_batch, opset=opset, check=check,
                        rtol=rtol, atol=atol)

