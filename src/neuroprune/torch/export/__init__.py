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

The package: :mod:`~neuroprune.torch.export.export` (the exporters and :data:`FORMATS`),
:mod:`~neuroprune.torch.export.verify` (running the file against PyTorch),
:mod:`~neuroprune.torch.export.diagnose` (one-line failure messages) and
:mod:`~neuroprune.torch.export.folder` (a saved pruned folder, rebuilt from its model spec:
the engine of ``neuroprune export``).

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

from neuroprune.core.errors import ExportError
from neuroprune.torch.export.export import FORMATS, export_model, export_onnx, export_program, export_torchscript
from neuroprune.torch.export.folder import export_folder, load_folder_for_export, parse_input_shape
from neuroprune.torch.export.verify import ExportCheck

__all__ = [
    "ExportError", "ExportCheck", "FORMATS", "export_onnx", "export_torchscript", "export_program", "export_model",
    "load_folder_for_export", "export_folder", "parse_input_shape",
]
