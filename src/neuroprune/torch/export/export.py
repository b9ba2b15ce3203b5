"""The exporters: ONNX, TorchScript and ``torch.export`` programs, each written atomically and checked.

See :mod:`neuroprune.torch.export` for the choices (which ONNX exporter, tracing, ``Dim.AUTO``).
Every function exports in :func:`~neuroprune.torch.modes.traceable_eval_mode` (eval mode, no
gradients, the fused attention fast path off), writes to a temporary file beside the target (:func:`~neuroprune.core.atomic.atomic_path`)
that takes the final name only once the export and its check succeeded, and returns an
:class:`~neuroprune.torch.export.verify.ExportCheck`.

Example:
    >>> sorted(FORMATS)
    ['onnx', 'program', 'torchscript']
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from neuroprune.core.atomic import atomic_path
from neuroprune.core.errors import ConfigError, ExportError, UnknownNameError
from neuroprune.torch.export.diagnose import (ModuleTracker, describe_failure, explain_failure,
                                              native_output_to_devnull, one_line, quiet_torch_warnings)
from neuroprune.torch.export.verify import ExportCheck, as_tuple, check_batches, eager_outputs, flatten_outputs, run_checks
from neuroprune.torch.modes import traceable_eval_mode


def _io_names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


# --------------------------------------------------------------------------- ONNX


def _onnx_classic(model, inputs, target, input_names, output_names, dynamic_batch, opset) -> None:
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in input_names}
        dynamic_axes.update({name: {0: "batch"} for name in output_names})
    with native_output_to_devnull():
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
    inputs = as_tuple(example_inputs)
    path = Path(path)
    with traceable_eval_mode(model):
        expected = eager_outputs(model, inputs)
        input_names, output_names = _io_names("input", len(inputs)), _io_names("output", len(expected))
        attempts = {"torchscript": [("TorchScript-based torch.onnx exporter", _onnx_classic)],
                    "dynamo": [("torch.export-based torch.onnx exporter", _onnx_dynamo)]}
        attempts["auto"] = attempts["torchscript"] + attempts["dynamo"]
        with atomic_path(path) as target:
            failures = []
            for name, function in attempts[exporter]:
                tracker = ModuleTracker(model)
                try:
                    with quiet_torch_warnings(), tracker:
                        function(model, inputs, target, input_names, output_names, dynamic_batch, opset)
                    used = name
                    break
                except Exception as error:
                    if isinstance(error, ImportError) or "onnxscript" in str(error):
                        failures.append(f"{name}: needs the onnxscript package (pip install onnxscript)")
                    else:
                        failures.append(f"{name}{describe_failure(model, inputs, error, tracker)}")
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
                                      f"{one_line(error)}") from error
                feed_names = [i.name for i in session.get_inputs()]

                def run(batch_inputs):
                    by_name = dict(zip(input_names, batch_inputs, strict=True))
                    return session.run(None, {name: by_name[name].detach().cpu().numpy() for name in feed_names})

                batches = check_batches(inputs[0].shape[0], dynamic_batch)
                max_abs, max_rel = run_checks("onnx", run, model, inputs, expected, batches, rtol, atol)
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
    inputs = as_tuple(example_inputs)
    path = Path(path)
    with traceable_eval_mode(model):
        expected = eager_outputs(model, inputs)
        with atomic_path(path) as target:
            tracker = ModuleTracker(model)
            try:
                with quiet_torch_warnings():
                    with tracker:
                        traced = torch.jit.trace(model, inputs, check_trace=False)
                    torch.jit.save(traced, str(target))
            except Exception as error:
                raise ExportError(f"TorchScript export of {type(model).__name__} failed"
                                  f"{describe_failure(model, inputs, error, tracker)}") from error
            batches, max_abs, max_rel = (), None, None
            if check:
                try:
                    with quiet_torch_warnings():
                        loaded = torch.jit.load(str(target), map_location="cpu")
                except Exception as error:
                    raise ExportError(f"torchscript check failed: cannot reload the file: "
                                      f"{one_line(error)}") from error
                batches = check_batches(inputs[0].shape[0], True)
                max_abs, max_rel = run_checks("torchscript", lambda x: flatten_outputs(loaded(*x)), model, inputs,
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
    tracker = ModuleTracker(model)
    try:
        # torch.export prints the partial graph of a failure to sys.stderr; the error says enough
        with quiet_torch_warnings(), contextlib.redirect_stderr(io.StringIO()), tracker:
            return torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes)
    except Exception as error:
        raise ExportError(f"torch.export of {type(model).__name__} failed{explain_failure(error, tracker)}") from error


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
    inputs = as_tuple(example_inputs)
    path = Path(path)
    auto = getattr(torch.export.Dim, "AUTO", None)
    with traceable_eval_mode(model):
        expected = eager_outputs(model, inputs)
        with atomic_path(path) as target:
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
                raise ExportError(f"torch.export.save failed: {one_line(error)}") from error
            batches, max_abs, max_rel = (), None, None
            if check:
                try:
                    loaded = torch.export.load(str(target)).module()
                except Exception as error:
                    raise ExportError(f"program check failed: cannot reload the file: {one_line(error)}") from error
                batches = check_batches(inputs[0].shape[0], dynamic)
                max_abs, max_rel = run_checks("program", lambda x: flatten_outputs(loaded(*x)), model, inputs, expected,
                                               batches, rtol, atol)
            size = target.stat().st_size
    return ExportCheck("program", path, "torch.export", dynamic, batches, max_abs, max_rel, rtol, atol, size)


# --------------------------------------------------------------------------- formats

FORMATS: dict[str, tuple[str, Callable[..., ExportCheck]]] = {
    "onnx": ("model.onnx", export_onnx),
    "torchscript": ("model.pt", export_torchscript),
    "program": ("model.pt2", export_program),
}
"""Export format -> (file name written into the output folder, export function)."""


def format_entry(fmt: str) -> tuple[str, Callable[..., ExportCheck]]:
    """``(file name, export function)`` of a format; an unknown format is refused, naming the known ones."""
    if fmt not in FORMATS:
        raise UnknownNameError("export format", fmt, FORMATS)
    return FORMATS[fmt]


def export_model(fmt: str, model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
                 path: str | os.PathLike, *, dynamic_batch: bool = True, opset: int | None = None,
                 check: bool = True, rtol: float = 1e-4, atol: float = 1e-5) -> ExportCheck:
    """Export in format ``fmt`` (``onnx``, ``torchscript`` or ``program``); see the functions per format.

    ``opset`` only applies to ONNX; TorchScript files always take any batch size they can.
    """
    _, function = format_entry(fmt)
    options: dict[str, Any] = {"check": check, "rtol": rtol, "atol": atol}
    if fmt in ("onnx", "program"):
        options["dynamic_batch"] = dynamic_batch
    if fmt == "onnx":
        options["opset"] = opset
    elif opset is not None:
        raise ConfigError([f"an opset applies to ONNX export only, not to {fmt}"])
    return function(model, example_inputs, path, **options)


