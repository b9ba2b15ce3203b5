"""Export a pruned Keras folder with Keras's own exporters, checked against the Keras model.

``neuroprune export`` on a folder written for a Keras model (``plan.json`` with adapter ``"keras"``)
loads its ``model.keras`` with plain Keras and writes one of :data:`FORMATS`. What each needs (Keras
3.15, measured here): ``onnx`` works on the torch backend (``onnx`` + ``onnxscript``); on jax it needs
``pip install jax2onnx``, on tensorflow ``pip install tf2onnx``. ``torch`` (a ``torch.export``
program, ``model.pt2``) needs the torch backend. ``tf_saved_model`` needs ``pip install tensorflow``;
``litert`` (``model.tflite``) needs TensorFlow, or ``pip install litert-torch`` on the torch backend;
``openvino`` (``model.xml``) needs ``pip install openvino``. ``keras`` and ``safetensors`` copy the
folder's own files. The file is written under a temporary name and renamed into place only once
the export and its check succeeded (:mod:`neuroprune.core.atomic`). Checks: ``onnx`` with onnxruntime (when installed), ``torch``
with ``torch.export.load``, ``keras`` with ``keras.saving.load_model``, ``safetensors`` array by
array, each at two batch sizes against the Keras outputs; the other formats are not checked.

Example:
    >>> sorted(FORMATS)
    ['keras', 'litert', 'onnx', 'openvino', 'safetensors', 'tf_saved_model', 'torch']
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuroprune.core.atomic import atomic_path, replace_folder
from neuroprune.core.errors import CheckpointError, ConfigError, ExportError, OutputExistsError
from neuroprune.keras.io import KERAS_FILE, MODEL_FILE, PLAN_FILE, load_keras_model

FORMATS: dict[str, tuple[str, str]] = {
    "onnx": ("model.onnx", "the torch backend with onnx and onnxscript (jax: pip install jax2onnx; "
                           "tensorflow: pip install tf2onnx)"),
    "torch": ("model.pt2", "the torch backend (KERAS_BACKEND=torch)"),
    "tf_saved_model": ("saved_model", "pip install tensorflow"),
    "litert": ("model.tflite", "TensorFlow, or pip install litert-torch on the torch backend"),
    "openvino": ("model.xml", "pip install openvino"),
    "keras": (KERAS_FILE, "nothing (a copy of the folder's file)"),
    "safetensors": (MODEL_FILE, "nothing (a copy of the folder's file)"),
}
"""Format -> (file or folder written into the output folder, what the format needs)."""


@dataclass
class KerasExportCheck:
    """What was written and, where it was checked, how closely it reproduces the Keras outputs."""

    format: str
    path: Path
    backend: str
    batch_sizes: tuple[int, ...] = ()
    max_abs_diff: float | None = None
    note: str = ""

    def summary(self) -> str:
        size = sum(p.stat().st_size for p in self.path.rglob("*")) if self.path.is_dir() else self.path.stat().st_size
        lines = [f"wrote {self.path} ({size / 1024:.1f} KiB, {self.format} via keras.Model.export on the "
                 f"{self.backend} backend)" if self.format not in ("keras", "safetensors")
                 else f"wrote {self.path} ({size / 1024:.1f} KiB, a copy of the folder's {self.format} file)"]
        if self.batch_sizes:
            lines.append(f"checked at batch sizes {', '.join(map(str, self.batch_sizes))}: largest absolute "
                         f"difference {self.max_abs_diff:.3g}")
        else:
            lines.append(f"not checked: {self.note}")
        return "\n".join(lines)


def is_keras_folder(folder: str | os.PathLike) -> bool:
    """True for a folder that neuroprune wrote for a Keras model."""
    import json

    plan = Path(folder) / PLAN_FILE
    if not plan.is_file() or not (Path(folder) / KERAS_FILE).is_file():
        return False
    try:
        return json.loads(plan.read_text()).get("adapter") == "keras"
    except ValueError:
        return False


def example_inputs(model: Any, batch_size: int, seed: int = 0) -> np.ndarray:
    """Standard-normal float32 inputs shaped like the model's (single) input."""
    shape = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or any(size is None for size in shape):
        raise ExportError(f"checking an export needs one input of fixed shape; the model takes "
                          f"{[tuple(i.shape) for i in model.inputs]}")
    return np.random.default_rng(seed).normal(size=(batch_size, *shape)).astype(np.float32)


def _runner(fmt: str, path: Path, model: Any):
    """A function ``x -> outputs`` running the written file, or a reason why none is available."""
    if fmt == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install onnxruntime)"
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if fmt == "torch":
        import torch

        program = torch.export.load(str(path)).module()
        return lambda x: program(torch.from_numpy(x)).detach().cpu().numpy()
    if fmt == "keras":
        loaded = load_keras_model(path)
        return lambda x: np.asarray(loaded.predict(x, verbose=0))
    if fmt == "safetensors":
        from safetensors.numpy import load_file

        from neuroprune.keras.metrics import weight_arrays

        arrays, expected = load_file(str(path)), weight_arrays(model)
        if sorted(arrays) != sorted(expected) or any(not np.array_equal(arrays[k], expected[k]) for k in expected):
            raise ExportError(f"{path} does not hold the weights of the folder's model.keras")
        return lambda x: np.asarray(model.predict(x, verbose=0))
    return f"no runtime for {fmt} is used here"


def _check(fmt: str, path: Path, model: Any, batch_sizes: tuple[int, ...], rtol: float, atol: float,
           check: bool) -> tuple[tuple[int, ...], float | None, str]:
    if not check:
        return (), None, "--no-check"
    runner = _runner(fmt, path, model)
    if isinstance(runner, str):
        return (), None, runner
    worst = 0.0
    for batch in batch_sizes:
        x = example_inputs(model, batch, seed=batch)
        expected = np.asarray(model.predict(x, verbose=0))
        got = np.asarray(runner(x)).reshape(expected.shape)
        worst = max(worst, float(np.abs(got - expected).max()))
        if not np.allclose(got, expected, rtol=rtol, atol=atol):
            raise ExportError(f"the {fmt} file {path} does not reproduce the Keras outputs at batch size {batch} "
                              f"(largest absolute difference {worst:.3g}; rtol {rtol}, atol {atol})")
    return batch_sizes, worst, ""


def _export(model: Any, fmt: str, target: Path) -> None:
    import keras

    options: dict[str, Any] = {}
    if fmt == "torch":  # a dynamic batch axis (Keras traces a batch of 1, which torch.export would fix)
        import torch

        options["dynamic_shapes"] = {0: torch.export.Dim("batch", min=1, max=1 << 20)}
    try:
        model(example_inputs(model, 2), training=False)  # Keras exports only models that have been called
        model.export(str(target), format=fmt, verbose=False, **options)
    except (ImportError, ModuleNotFoundError, ValueError) as error:
        needs = FORMATS[fmt][1]
        raise ExportError(f"Keras cannot export to {fmt} on the {keras.backend.backend()} backend here: {error} "
                          f"(the {fmt} format needs {needs})") from error


def export_keras_folder(out_dir: str | os.PathLike, folder: str | os.PathLike, fmt: str = "onnx", *,
                        overwrite: bool = False, check: bool = True, rtol: float = 1e-4, atol: float = 1e-5,
                        batch_sizes: tuple[int, ...] = (2, 5)) -> KerasExportCheck:
    """Write ``out_dir/<FORMATS[fmt][0]>`` from the Keras folder ``folder``; the CLI's engine for Keras folders."""
    import keras

    if fmt not in FORMATS:
        raise ConfigError([f"unknown export format {fmt!r} for a Keras folder; formats: {', '.join(sorted(FORMATS))}"])
    if not is_keras_folder(folder):
        raise CheckpointError(f"{str(folder)!r} is not a folder written by neuroprune for a Keras model "
                              f"(it needs {KERAS_FILE} and a plan.json with adapter 'keras')")
    name = FORMATS[fmt][0]
    out_dir = Path(out_dir)
    target = out_dir / name
    if target.exists() and not overwrite:
        raise OutputExistsError(f"output {str(target)!r} already exists; choose another folder or pass --overwrite")
    model = load_keras_model(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = replace_folder(target) if fmt == "tf_saved_model" else atomic_path(target)
    with writer as staging:  # renamed into place only once the export and its check succeeded
        if fmt in ("keras", "safetensors"):
            shutil.copyfile(Path(folder) / name, staging)
        else:
            _export(model, fmt, staging)
        checked, worst, note = _check(fmt, staging, model, batch_sizes, rtol, atol, check)
    return KerasExportCheck(fmt, target, keras.backend.backend(), checked, worst, note)


__all__ = ["FORMATS", "KerasExportCheck", "export_keras_folder", "is_keras_folder"]
