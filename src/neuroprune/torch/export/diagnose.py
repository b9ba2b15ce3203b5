"""Why an export failed, in one line: the module that was running, the user's source line, the operator.

The exporters fail with long messages (whole graphs, C++ dumps). :func:`explain_failure` turns an
exception into `` in module M (Type) at file:line (`code`): Cause: message``; for an unsupported
operator it names the operator and the modules that call it. The quiet helpers keep the
exporters' own warnings and native output off the terminal: the output check is the guard.

Example:
    >>> one_line(ValueError("bad\\n   shape"))
    'ValueError: bad shape'
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep  # frames of the exporters themselves


def one_line(error: BaseException, limit: int = 400) -> str:
    """The first meaningful part of an exception message, on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    text = text.split("Torch IR graph at exception")[0]
    text = " ".join(text.split())
    text = text or type(error).__name__
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(error).__name__}: {text}"



@contextlib.contextmanager
def quiet_torch_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Silence the deprecation and tracer warnings of the exporters; the output check is the guard."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught



@contextlib.contextmanager
def native_output_to_devnull() -> Iterator[None]:
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



class ModuleTracker:
    """Which module's forward was running when an exception escaped (hooks removed on exit)."""

    def __init__(self, model: nn.Module):
        self.model, self.stack, self.handles, self.failed_in = model, [], [], None

    def __enter__(self) -> ModuleTracker:
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
              if not frame.filename.startswith(_TORCH_DIR) and not frame.filename.startswith(_PACKAGE_DIR)]
    if not frames:
        return ""
    frame = frames[-1]
    code = f" (`{frame.line.strip()}`)" if frame.line else ""
    return f"at {frame.filename}:{frame.lineno}{code}"


def explain_failure(error: BaseException, tracker: ModuleTracker | None = None) -> str:
    """`` in module M (Type) at file:line (`code`): Cause: message`` or ``: Cause: message``, one line."""
    where = " ".join(part for part in ((tracker.where() if tracker else ""), _source_location(error)) if part)
    return f" {where}: {one_line(error)}" if where else f": {one_line(error)}"


_OP_PATTERN = re.compile(r"'?((?:aten|prim|onnx|quantized)::[A-Za-z0-9_.]+)'?")


def _modules_using(model: nn.Module, inputs: tuple[torch.Tensor, ...], op: str) -> list[str]:
    """Paths of the modules whose forward calls the TorchScript operator ``op`` (best effort)."""
    try:
        with quiet_torch_warnings():
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


def describe_failure(model: nn.Module, inputs: tuple[torch.Tensor, ...], error: BaseException,
                      tracker: ModuleTracker | None = None) -> str:
    match = _OP_PATTERN.search(str(error))
    if not match or (tracker is not None and tracker.failed_in is not None):  # failed while running forward
        return explain_failure(error, tracker)
    op = match.group(1)
    modules = _modules_using(model, inputs, op)
    where = f" used by {', '.join(modules)}" if modules else ""
    return f": operator {op}{where} — {one_line(error)}"

