"""Check an exported file against the eager model, at the example batch size and one more.

:class:`ExportCheck` records what was written and how closely the file reproduces PyTorch;
:func:`run_checks` runs the file (through a callable the exporter supplies) and compares every
output elementwise, ``|file - torch| <= atol + rtol * |torch|``, raising :class:`ExportError`
otherwise. A second batch size catches a dynamic batch axis that does not really work.

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Linear(3, 2)
    >>> x = (torch.randn(2, 3),)
    >>> run_checks("demo", lambda inputs: [model(*inputs)], model, x, eager_outputs(model, x), (2, 3), 1e-6, 1e-6)
    (0.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from neuroprune.core.errors import ExportError
from neuroprune.torch.export.diagnose import ModuleTracker, explain_failure, one_line


@dataclass(frozen=True)
class ExportCheck:
    """What an export wrote and how closely the file reproduces the PyTorch outputs.

    ``batch_sizes`` are the batch sizes the file was run at (empty when not checked);
    ``max_abs_diff`` / ``max_rel_diff`` the largest differences over all of them and all outputs
    (relative to the PyTorch value, over elements where it is not zero); ``dynamic_batch`` whether
    the file accepts any batch size.
    """

    format: str
    path: Path
    exporter: str
    dynamic_batch: bool
    batch_sizes: tuple[int, ...] = ()
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    rtol: float = 0.0
    atol: float = 0.0
    size_bytes: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def checked(self) -> bool:
        return bool(self.batch_sizes)

    def summary(self) -> str:
        """Two lines for people: what was written, and how it was checked."""
        batch = 'dynamic batch axis "batch"' if self.dynamic_batch else "fixed batch size"
        extra = f" opset {self.details['opset']}" if "opset" in self.details else ""
        kind = _FORMAT_TITLES.get(self.format, self.format)
        lines = [f"wrote {self.path} ({_human_size(self.size_bytes)}, {kind}{extra} via {self.exporter}, {batch})"]
        if self.checked:
            runner = _CHECK_RUNNERS.get(self.format, "the reloaded file")
            lines.append(f"checked against PyTorch with {runner} at batch sizes "
                         f"{', '.join(map(str, self.batch_sizes))}: max abs diff {self.max_abs_diff:.3g}, "
                         f"max rel diff {self.max_rel_diff:.3g} (allowed: atol {self.atol:g} + rtol {self.rtol:g} "
                         "* |value|, elementwise)")
        else:
            lines.append("not checked against PyTorch")
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers

_FORMAT_TITLES = {"onnx": "ONNX", "torchscript": "TorchScript", "program": "torch.export program"}
_CHECK_RUNNERS = {"onnx": "onnxruntime (CPUExecutionProvider)", "torchscript": "torch.jit.load",
                  "program": "torch.export.load"}


def _human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover



def as_tuple(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ExportError("example_inputs must be a tensor or a non-empty tuple of tensors")
    if any(t.dim() == 0 for t in inputs):
        raise ExportError("every example input needs a batch axis (dimension 0); got a 0-d tensor")
    batches = {t.shape[0] for t in inputs}
    if len(batches) != 1:
        raise ExportError(f"all example inputs must share the batch size (dimension 0), got {sorted(batches)}")
    return inputs


def flatten_outputs(output: Any, where: str = "output") -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for i, item in enumerate(output) for t in flatten_outputs(item, f"{where}[{i}]")]
    if isinstance(output, dict):
        return [t for key, item in output.items() for t in flatten_outputs(item, f"{where}[{key!r}]")]
    raise ExportError(f"the model's {where} is a {type(output).__name__}; exportable outputs are tensors, "
                      "tuples, lists or dicts of tensors")



def eager_outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    tracker = ModuleTracker(model)
    try:
        with tracker:
            output = model(*inputs)
    except Exception as error:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise ExportError(f"the model does not run on example inputs of shape {shapes}"
                          f"{explain_failure(error, tracker)}") from error
    return [t.detach() for t in flatten_outputs(output)]



def _other_batch(inputs: tuple[torch.Tensor, ...], batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs with ``batch`` rows: the example rows repeated, floats perturbed so rows differ."""
    generator = torch.Generator().manual_seed(seed)
    resized = []
    for tensor in inputs:
        index = torch.arange(batch) % tensor.shape[0]
        rows = tensor[index].clone()
        if rows.is_floating_point():
            scale = tensor.float().std().item() if tensor.numel() > 1 else 1.0
            scale = scale if math.isfinite(scale) and scale > 0 else 1.0
            noise = torch.randn(rows.shape, generator=generator, dtype=torch.float32) * (0.1 * scale)
            rows = rows + noise.to(rows.dtype)
        resized.append(rows)
    return tuple(resized)


def check_batches(batch: int, dynamic: bool) -> tuple[int, ...]:
    return (batch, batch + 1) if dynamic else (batch,)


def _compare(fmt: str, batch: int, produced: Sequence[Any], expected: Sequence[torch.Tensor],
             rtol: float, atol: float) -> tuple[float, float]:
    if len(produced) != len(expected):
        raise ExportError(f"{fmt} check failed at batch size {batch}: the file returns {len(produced)} outputs, "
                          f"the model {len(expected)}")
    max_abs = max_rel = 0.0
    for index, (got, want) in enumerate(zip(produced, expected, strict=True)):
        got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
        want = want.detach().cpu().numpy()
        if got.shape != want.shape:
            raise ExportError(f"{fmt} check failed at batch size {batch}: output {index} has shape {got.shape}, "
                              f"PyTorch gives {want.shape}")
        got64, want64 = got.astype(np.float64), want.astype(np.float64)
        diff = np.abs(got64 - want64)
        nonzero = want64 != 0
        abs_diff = float(diff.max()) if diff.size else 0.0
        rel_diff = float((diff[nonzero] / np.abs(want64[nonzero])).max()) if nonzero.any() else 0.0
        if np.isnan(got64).any() != np.isnan(want64).any() or np.any(diff > atol + rtol * np.abs(want64)):
            raise ExportError(f"{fmt} check failed at batch size {batch}: output {index} differs from PyTorch by up to "
                              f"{abs_diff:.3g} (relative {rel_diff:.3g}; allowed atol {atol:g} + rtol {rtol:g} "
                              "* |value|); if "
                              "that is acceptable, raise rtol / atol (--rtol / --atol)")
        max_abs, max_rel = max(max_abs, abs_diff), max(max_rel, rel_diff)
    return max_abs, max_rel


def run_checks(fmt: str, run: Callable[[tuple[torch.Tensor, ...]], Sequence[Any]], model: nn.Module,
                inputs: tuple[torch.Tensor, ...], expected: list[torch.Tensor], batches: tuple[int, ...],
                rtol: float, atol: float) -> tuple[float, float]:
    max_abs = max_rel = 0.0
    for batch in batches:
        if batch == inputs[0].shape[0]:
            batch_inputs, reference = inputs, expected
        else:
            batch_inputs = _other_batch(inputs, batch)
            reference = eager_outputs(model, batch_inputs)
        try:
            produced = run(batch_inputs)
        except ExportError:
            raise
        except Exception as error:
            raise ExportError(f"{fmt} check failed: the exported file does not run at batch size {batch}: "
                              f"{one_line(error)}") from error
        abs_diff, rel_diff = _compare(fmt, batch, produced, reference, rtol, atol)
        max_abs, max_rel = max(max_abs, abs_diff), max(max_rel, rel_diff)
    return max_abs, max_rel

