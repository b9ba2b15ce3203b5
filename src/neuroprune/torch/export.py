"""Export pruned models to ONNX, TorchScript and ``torch.export`` programs, checked against PyTorch.

A pruned model is an ordinary ``nn.Module`` (pruned attention blocks are
:class:`~neuroprune.torch.layers.attention.HeadPrunedMultiheadAttention`, written in plain tensor
operations), so the standard exporters handle it. Every function here

* puts the model in eval mode for the export (and restores its mode afterwards),
* writes the file atomically: to a temporary file in the same folder, renamed into place with
  :func:`os.replace` only once the export *and its check* succeeded, so a failed export never
  leaves a file behind,
* by default reloads the written file and compares its outputs with the eager PyTorch outputs
  at the example batch size and at a second batch size (a dynamic batch axis that does not
  really work shows up there), and
* returns an :class:`ExportCheck` or raises :class:`ExportError` naming the format, the cause
  and, where it can be found, the unsupported operation and the modules that use it.

Which ONNX exporter: :func:`export_onnx` uses the classic TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``) by default. With PyTorch 2.13 it exports every zoo
model, pruned or not (MLP, LeNet-5, ResNet-18/50/56, MobileNetV2, the BiLSTM, the transformer
with ``nn.MultiheadAttention`` or ``HeadPrunedMultiheadAttention``) and onnxruntime reproduces
them at several batch sizes; it needs only ``onnx``, takes about a second for the small models
(the dynamo exporter 4-20 s), prints nothing on success and names the batch axis ``"batch"``
through ``dynamic_axes``. The ``torch.export``-based exporter (``dynamo=True``, PyTorch's default
since 2.9) needs the ``onnxscript`` package as well; ``exporter="dynamo"`` asks for it, and
``exporter="auto"`` falls back to it when the classic exporter fails (it is deprecated and may
disappear from a future PyTorch).

``nn.MultiheadAttention`` takes a fused fast path (``aten::_native_multi_head_attention``) in
eval mode without gradients, which no ONNX exporter translates; exports here switch it off
(``torch.backends.mha.set_fastpath_enabled(False)``) for their duration, so unpruned attention
exports as well as the pruned :class:`HeadPrunedMultiheadAttention`.

TorchScript files are traced (``torch.jit.trace``): scripting would need type annotations on
every custom module, and tracing records the same tensor operations the ONNX exporter sees. A
trace cannot follow control flow on values; the check at a second batch size catches a trace
that baked the batch size in. ``torch.export`` programs mark the batch axis ``Dim.AUTO``: where
the model fixes the batch size (e.g. ``x.reshape(int(x.shape[0]), -1)``) the program keeps the
example's batch and :class:`ExportCheck` says ``dynamic_batch=False``.

Example:
    >>> import tempfile, torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> check = export_onnx(model, torch.randn(2, 4), tempfile.mkdtemp() + "/model.onnx")
    >>> check.batch_sizes, check.max_abs_diff < 1e-5
    ((2, 3), True)
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from neuroprune.core.atomic import atomic_path
from neuroprune.core.errors import CheckpointError, ConfigError, NeuropruneError, OutputExistsError, UnknownNameError

__all__ = [
    "ExportError", "ExportCheck", "FORMATS", "export_onnx", "export_torchscript", "export_program", "export_model",
    "load_folder_for_export", "export_folder", "parse_input_shape",
]


class ExportError(NeuropruneError):
    """Exporting a model failed, or the exported file does not compute what the model computes."""


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


def _one_line(error: BaseException, limit: int = 400) -> str:
    """The first meaningful part of an exception message, on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    text = text.split("Torch IR graph at exception")[0]
    text = " ".join(text.split())
    text = text or type(error).__name__
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(error).__name__}: {text}"


def _as_tuple(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ExportError("example_inputs must be a tensor or a non-empty tuple of tensors")
    if any(t.dim() == 0 for t in inputs):
        raise ExportError("every example input needs a batch axis (dimension 0); got a 0-d tensor")
    batches = {t.shape[0] for t in inputs}
    if len(batches) != 1:
        raise ExportError(f"all example inputs must share the batch size (dimension 0), got {sorted(batches)}")
    return inputs


def _flatten(output: Any, where: str = "output") -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for i, item in enumerate(output) for t in _flatten(item, f"{where}[{i}]")]
    if isinstance(output, dict):
        return [t for key, item in output.items() for t in _flatten(item, f"{where}[{key!r}]")]
    raise ExportError(f"the model's {where} is a {type(output).__name__}; exportable outputs are tensors, "
                      "tuples, lists or dicts of tensors")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, no gradients, and ``nn.MultiheadAttention``'s fused fast path off.

    In eval mode without gradients ``nn.MultiheadAttention`` calls the fused
    ``aten::_native_multi_head_attention``, which the ONNX exporter cannot translate; the
    regular path computes the same thing in exportable operations.
    """
    modes = {module: module.training for module in model.modules()}
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    model.eval()
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with torch.no_grad():
            yield
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fastpath)
        for module, training in modes.items():
            module.training = training


@contextlib.contextmanager
def _quiet_torch_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Silence the deprecation and tracer warnings of the exporters; the output check is the guard."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


class _ModuleTracker:
    """Which module's forward was running when an exception escaped (hooks removed on exit)."""

    def __init__(self, model: nn.Module):
        self.model, self.stack, self.handles, self.failed_in = model, [], [], None

    def __enter__(self) -> _ModuleTracker:
        for name, module in self.model.named_modules():
            self.handles.append(module.register_forward_pre_hook(functools.partial(self._enter, name)))
            self.handles.append(module.register_forward_hook(self._leave))
        return self

    def _enter(self, name: str, module: nn.Module, args: Any) -> None:
        self.stack.append(name)

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.stack:
            self.stack.pop()

    def __exit__(self, exc_type, exc, tb) -> bool:
        for handle in self.handles:
            handle.remove()
        if exc_type is not None and self.stack:
            self.failed_in = self.stack[-1]
        return False

    def where(self) -> str:
        if self.failed_in is None:
            return ""
        try:
            kind = type(self.model.get_submodule(self.failed_in)).__name__
        except AttributeError:  # pragma: no cover - a module renamed during the call
            kind = "?"
        return f"in module {self.failed_in or '<top level>'} ({kind})"


_TORCH_DIR = os.path.dirname(torch.__file__)
_CALL_PATTERN = re.compile(r'raised this error:\s*File "([^"]+)", line (\d+), in \S+[ \t]*(?:\n[ \t]+(\S[^\n]*))?')


def _source_location(error: BaseException) -> str:
    """``file:line (`code`)`` of the innermost frame outside PyTorch and this module, if any."""
    match = _CALL_PATTERN.search(str(error))
    if match:
        code = f" (`{match.group(3).strip()}`)" if match.group(3) else ""
        return f"at {match.group(1)}:{match.group(2)}{code}"
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not frame.filename.startswith(_TORCH_DIR) and frame.filename != __file__]
    if not frames:
        return ""
    frame = frames[-1]
    code = f" (`{frame.line.strip()}`)" if frame.line else ""
    return f"at {frame.filename}:{frame.lineno}{code}"


def _explain(error: BaseException, tracker: _ModuleTracker | None = None) -> str:
    """`` in module M (Type) at file:line (`code`): Cause: message`` or ``: Cause: message``, one line."""
    where = " ".join(part for part in ((tracker.where() if tracker else ""), _source_location(error)) if part)
    return f" {where}: {_one_line(error)}" if where else f": {_one_line(error)}"


def _eager(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    tracker = _ModuleTracker(model)
    try:
        with tracker:
            output = model(*inputs)
    except Exception as error:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise ExportError(f"the model does not run on example inputs of shape {shapes}"
                          f"{_explain(error, tracker)}") from error
    return [t.detach() for t in _flatten(output)]


@contextlib.contextmanager
def _native_output_to_devnull() -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null: the classic ONNX exporter dumps its whole graph
    from C++ when it fails, and the failure is reported as one :class:`ExportError` anyway."""
    saved: list[tuple[int, int]] = []
    try:
        for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            with contextlib.suppress(AttributeError, ValueError, OSError):
                stream.flush()
            saved.append((fd, os.dup(fd)))
    except OSError:  # no real descriptors (embedded interpreters): leave the output alone
        for _, copy in saved:
            os.close(copy)
        saved = []
    try:
        if saved:
            with open(os.devnull, "w") as devnull:
                for fd, _ in saved:
                    os.dup2(devnull.fileno(), fd)
                yield
        else:
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


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


def _check_batches(batch: int, dynamic: bool) -> tuple[int, ...]:
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


def _run_checks(fmt: str, run: Callable[[tuple[torch.Tensor, ...]], Sequence[Any]], model: nn.Module,
                inputs: tuple[torch.Tensor, ...], expected: list[torch.Tensor], batches: tuple[int, ...],
                rtol: float, atol: float) -> tuple[float, float]:
    max_abs = max_rel = 0.0
    for batch in batches:
        if batch == inputs[0].shape[0]:
            batch_inputs, reference = inputs, expected
        else:
            batch_inputs = _other_batch(inputs, batch)
            reference = _eager(model, batch_inputs)
        try:
            produced = run(batch_inputs)
        except ExportError:
            raise
        except Exception as error:
            raise ExportError(f"{fmt} check failed: the exported file does not run at batch size {batch}: "
                              f"{_one_line(error)}") from error
        abs_diff, rel_diff = _compare(fmt, batch, produced, reference, rtol, atol)
        max_abs, max_rel = max(max_abs, abs_diff), max(max_rel, rel_diff)
    return max_abs, max_rel


_atomic_target = atomic_path  # the exporters write to a path; the check runs on that very file


def _io_names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


_OP_PATTERN = re.compile(r"'?((?:aten|prim|onnx|quantized)::[A-Za-z0-9_.]+)'?")


def _modules_using(model: nn.Module, inputs: tuple[torch.Tensor, ...], op: str) -> list[str]:
    """Paths of the modules whose forward calls the TorchScript operator ``op`` (best effort)."""
    try:
        with _quiet_torch_warnings():
            traced = torch.jit.trace(model, inputs, check_trace=False)
        scopes = {node.scopeName() for node in traced.inlined_graph.nodes() if node.kind() == op}
    except Exception:  # noqa: BLE001 - only a hint for the message
        return []
    paths = set()
    for scope in scopes:
        innermost = scope.split("/")[-1]
        innermost = innermost.removeprefix("__module.")
        paths.add(innermost or "<top level>")
    names = []
    for path in sorted(paths):
        try:
            module = model.get_submodule(path) if path != "<top level>" else model
            names.append(f"{path} ({type(module).__name__})")
        except AttributeError:
            names.append(path)
    return names


def _describe_failure(model: nn.Module, inputs: tuple[torch.Tensor, ...], error: BaseException,
                      tracker: _ModuleTracker | None = None) -> str:
    match = _OP_PATTERN.search(str(error))
    if not match or (tracker is not None and tracker.failed_in is not None):  # failed while running forward
        return _explain(error, tracker)
    op = match.group(1)
    modules = _modules_using(model, inputs, op)
    where = f" used by {', '.join(modules)}" if modules else ""
    return f": operator {op}{where} — {_one_line(error)}"


# --------------------------------------------------------------------------- ONNX


def _onnx_classic(model, inputs, target, input_names, output_names, dynamic_batch, opset) -> None:
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in input_names}
        dynamic_axes.update({name: {0: "batch"} for name in output_names})
    with _native_output_to_devnull():
        torch.onnx.export(model, inputs, str(target), dynamo=False, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True)


def _onnx_dynamo(model, inputs, target, input_names, output_names, dynamic_batch, opset) -> None:
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} for _ in inputs)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # its progress lines
        program = torch.onnx.export(model, inputs, dynamo=True, input_names=input_names, output_names=output_names,
                                    dynamic_shapes=dynamic_shapes, opset_version=opset, external_data=False,
                                    verbose=False)
    program.save(str(target), external_data=False)


def _onnx_opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)


def export_onnx(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], path: str | os.PathLike, *,
                dynamic_batch: bool = True, opset: int | None = None, check: bool = True, rtol: float = 1e-4,
                atol: float = 1e-5, exporter: str = "torchscript") -> ExportCheck:
    """Write ``model`` as an ONNX file and check it with onnxruntime.

    Args:
        model: the (pruned) model; exported in eval mode, its mode is restored afterwards.
        example_inputs: a tensor or a tuple of tensors, batch first, all with the same batch size.
            Use a batch of at least 2 with ``dynamic_batch``: a size-1 axis can be specialised.
        path: the ``.onnx`` file to write (replaced if it exists; parents are created).
        dynamic_batch: name axis 0 of every input and output ``"batch"`` and leave it free.
        opset: ONNX opset version (default: the exporter's default, 20 for the classic exporter
            of PyTorch 2.13).
        check: run the file with onnxruntime (CPUExecutionProvider) at the example batch size and,
            with a dynamic batch, one more, and compare with the PyTorch outputs.
        rtol, atol: allowed difference, elementwise ``|onnx - torch| <= atol + rtol * |torch|``.
        exporter: ``"torchscript"`` (the classic ``torch.onnx.export(..., dynamo=False)``, see the
            module docstring for why it is the default), ``"dynamo"`` (``dynamo=True``, needs
            ``onnxscript``) or ``"auto"`` (the classic one, then dynamo if it fails).

    Inputs are named ``input`` (``input_0``, ``input_1``, … for several) and outputs ``output``
    (``output_0``, …). Nested outputs are flattened in order.

    Raises:
        ExportError: the export failed (naming the operator and the modules using it, where
            known), or the file's outputs differ from PyTorch's.
    """
    if exporter not in ("torchscript", "dynamo", "auto"):
        raise UnknownNameError("ONNX exporter", exporter, ("torchscript", "dynamo", "auto"))
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ExportError(f"ONNX export needs the onnx and onnxruntime packages ({error}); "
                          "install them with: pip install 'neuroprune[export]'") from error
    inputs = _as_tuple(example_inputs)
    path = Path(path)
    with _eval_mode(model):
        expected = _eager(model, inputs)
        input_names, output_names = _io_names("input", len(inputs)), _io_names("output", len(expected))
        attempts = {"torchscript": [("TorchScript-based torch.onnx exporter", _onnx_classic)],
                    "dynamo": [("torch.export-based torch.onnx exporter", _onnx_dynamo)]}
        attempts["auto"] = attempts["torchscript"] + attempts["dynamo"]
        with _atomic_target(path) as target:
            failures = []
            for name, function in attempts[exporter]:
                tracker = _ModuleTracker(model)
                try:
                    with _quiet_torch_warnings(), tracker:
                        function(model, inputs, target, input_names, output_names, dynamic_batch, opset)
                    used = name
                    break
                except Exception as error:
                    if isinstance(error, ImportError) or "onnxscript" in str(error):
                        failures.append(f"{name}: needs the onnxscript package (pip install onnxscript)")
                    else:
                        failures.append(f"{name}{_describe_failure(model, inputs, error, tracker)}")
                    with contextlib.suppress(FileNotFoundError):
                        target.unlink()
            else:
                raise ExportError(f"ONNX export of {type(model).__name__} failed: " + "; ".join(failures))
            details = {"opset": _onnx_opset(target), "input_names": input_names, "output_names": output_names}
            batches, max_abs, max_rel = (), None, None
            if check:
                try:
                    onnx.checker.check_model(str(target))
                    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
                except Exception as error:
                    raise ExportError("onnx check failed: the written file is not a valid model: "
                                      f"{_one_line(error)}") from error
                feed_names = [i.name for i in session.get_inputs()]

                def run(batch_inputs):
                    by_name = dict(zip(input_names, batch_inputs, strict=True))
                    return session.run(None, {name: by_name[name].detach().cpu().numpy() for name in feed_names})

                batches = _check_batches(inputs[0].shape[0], dynamic_batch)
                max_abs, max_rel = _run_checks("onnx", run, model, inputs, expected, batches, rtol, atol)
            size = target.stat().st_size
    return ExportCheck("onnx", path, used, dynamic_batch, batches, max_abs, max_rel, rtol, atol, size, details)


# --------------------------------------------------------------------------- TorchScript


def export_torchscript(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
                       path: str | os.PathLike, *, check: bool = True, rtol: float = 1e-4,
                       atol: float = 1e-5) -> ExportCheck:
    """Write ``model`` as a TorchScript file (``torch.jit.trace``; load with ``torch.jit.load``).

    Tracing records the operations run on the example inputs, so it handles any module written
    in tensor operations (custom ones included), but not control flow that depends on values.
    The saved file is reloaded and compared with the eager model at the example batch size and
    one more: a trace that baked the batch size in is caught there.

    Raises:
        ExportError: tracing failed, or the reloaded file computes something else.
    """
    inputs = _as_tuple(example_inputs)
    path = Path(path)
    with _eval_mode(model):
        expected = _eager(model, inputs)
        with _atomic_target(path) as target:
            tracker = _ModuleTracker(model)
            try:
                with _quiet_torch_warnings():
                    with tracker:
                        traced = torch.jit.trace(model, inputs, check_trace=False)
                    torch.jit.save(traced, str(target))
            except Exception as error:
                raise ExportError(f"TorchScript export of {type(model).__name__} failed"
                                  f"{_describe_failure(model, inputs, error, tracker)}") from error
            batches, max_abs, max_rel = (), None, None
            if check:
                try:
                    with _quiet_torch_warnings():
                        loaded = torch.jit.load(str(target), map_location="cpu")
                except Exception as error:
                    raise ExportError(f"torchscript check failed: cannot reload the file: "
                                      f"{_one_line(error)}") from error
                batches = _check_batches(inputs[0].shape[0], True)
                max_abs, max_rel = _run_checks("torchscript", lambda x: _flatten(loaded(*x)), model, inputs,
                                               expected, batches, rtol, atol)
            size = target.stat().st_size
    return ExportCheck("torchscript", path, "torch.jit.trace", True, batches, max_abs, max_rel, rtol, atol, size)


# --------------------------------------------------------------------------- torch.export


def _batch_is_dynamic(program) -> bool:
    """Whether axis 0 of every user input of an exported program is symbolic."""
    user_inputs = set(program.graph_signature.user_inputs)
    values = [node.meta.get("val") for node in program.graph.nodes
              if node.op == "placeholder" and node.name in user_inputs]
    return bool(values) and all(isinstance(v, torch.Tensor) and v.dim() > 0 and _symbolic(v.shape[0]) for v in values)


def _symbolic(size) -> bool:
    """Whether a size is a free symbol (a specialised SymInt also reads as a SymInt)."""
    if not isinstance(size, torch.SymInt):
        return False
    try:
        from torch.fx.experimental.symbolic_shapes import is_concrete_int
    except ImportError:  # pragma: no cover - older PyTorch
        return True
    return not is_concrete_int(size)


def _torch_export(model: nn.Module, inputs: tuple[torch.Tensor, ...], dynamic_shapes):
    tracker = _ModuleTracker(model)
    try:
        # torch.export prints the partial graph of a failure to sys.stderr; the error says enough
        with _quiet_torch_warnings(), contextlib.redirect_stderr(io.StringIO()), tracker:
            return torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes)
    except Exception as error:
        raise ExportError(f"torch.export of {type(model).__name__} failed{_explain(error, tracker)}") from error


def export_program(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
                   path: str | os.PathLike, *, dynamic_batch: bool = True, check: bool = True,
                   rtol: float = 1e-4, atol: float = 1e-5) -> ExportCheck:
    """Write ``model`` as a ``torch.export`` program (``torch.export.save``; load with ``torch.export.load``).

    With ``dynamic_batch`` axis 0 of every input is marked dynamic (``Dim.AUTO`` where PyTorch
    has it): where the architecture allows it the program takes any batch size, otherwise the
    export keeps the example's batch size and the result says ``dynamic_batch=False``.

    Raises:
        ExportError: ``torch.export`` cannot capture the model (data-dependent control flow,
            unsupported Python), or the reloaded program computes something else.
    """
    inputs = _as_tuple(example_inputs)
    path = Path(path)
    auto = getattr(torch.export.Dim, "AUTO", None)
    with _eval_mode(model):
        expected = _eager(model, inputs)
        with _atomic_target(path) as target:
            dynamic_shapes = None
            if dynamic_batch:
                dim = auto if auto is not None else torch.export.Dim("batch")
                dynamic_shapes = tuple({0: dim} for _ in inputs)
            try:
                program = _torch_export(model, inputs, dynamic_shapes)
            except ExportError:
                if not dynamic_batch or auto is not None:
                    raise
                # old PyTorch without Dim.AUTO: a named Dim fails where the batch gets specialised
                program = _torch_export(model, inputs, None)
            dynamic = dynamic_batch and _batch_is_dynamic(program)
            try:
                torch.export.save(program, str(target))
            except Exception as error:
                raise ExportError(f"torch.export.save failed: {_one_line(error)}") from error
            batches, max_abs, max_rel = (), None, None
            if check:
                try:
                    loaded = torch.export.load(str(target)).module()
                except Exception as error:
                    raise ExportError(f"program check failed: cannot reload the file: {_one_line(error)}") from error
                batches = _check_batches(inputs[0].shape[0], dynamic)
                max_abs, max_rel = _run_checks("program", lambda x: _flatten(loaded(*x)), model, inputs, expected,
                                               batches, rtol, atol)
            size = target.stat().st_size
    return ExportCheck("program", path, "torch.export", dynamic, batches, max_abs, max_rel, rtol, atol, size)


# --------------------------------------------------------------------------- formats and folders

FORMATS: dict[str, tuple[str, Callable[..., ExportCheck]]] = {
    "onnx": ("model.onnx", export_onnx),
    "torchscript": ("model.pt", export_torchscript),
    "program": ("model.pt2", export_program),
}
"""Export format -> (file name written into the output folder, export function)."""


def _format(fmt: str) -> tuple[str, Callable[..., ExportCheck]]:
    if fmt not in FORMATS:
        raise UnknownNameError("export format", fmt, FORMATS)
    return FORMATS[fmt]


def export_model(fmt: str, model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
                 path: str | os.PathLike, *, dynamic_batch: bool = True, opset: int | None = None,
                 check: bool = True, rtol: float = 1e-4, atol: float = 1e-5) -> ExportCheck:
    """Export in format ``fmt`` (``onnx``, ``torchscript`` or ``program``); see the functions per format.

    ``opset`` only applies to ONNX; TorchScript files always take any batch size they can.
    """
    _, function = _format(fmt)
    options: dict[str, Any] = {"check": check, "rtol": rtol, "atol": atol}
    if fmt in ("onnx", "program"):
        options["dynamic_batch"] = dynamic_batch
    if fmt == "onnx":
        options["opset"] = opset
    elif opset is not None:
        raise ConfigError([f"an opset applies to ONNX export only, not to {fmt}"])
    return function(model, example_inputs, path, **options)


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
    from neuroprune.cli.common import build_from_spec, model_layout, parse_model_spec  # the CLI helpers own specs
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
    file_name, _ = _format(fmt)
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
