"""Measure a model: parameters, FLOPs, serialised size and latency.

Every function works for a model on any device and in any dtype; building inputs on the
right device and in the right dtype is the caller's job.

Example:
    >>> import torch
    >>> from neuroprune.torch.metrics import count_flops, count_parameters
    >>> model = torch.nn.Linear(64, 128)
    >>> count_parameters(model)
    8320
    >>> count_flops(model, torch.randn(1, 64))
    16384
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import safetensors.torch
import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from neuroprune.core.errors import ConfigError, MeasurementWarning
from neuroprune.report.formatting import MIN_RELIABLE_RUNS
from neuroprune.torch.modes import evaluation_mode, traceable_eval_mode


@dataclasses.dataclass
class ModelMetrics:
    """What :func:`measure_model` measured.

    Attributes:
        params: Unique parameter count.
        flops: FLOPs of one forward pass at batch size 1.
        size_bytes: Bytes of the safetensors serialisation of the state dict.
        accuracy: Quality measure given by the caller, or None.
        latency_ms: Median forward latency in milliseconds per batch size, keyed like
            ``"batch_1"``.

    Example:
        >>> ModelMetrics(10, 20, 300, None, {"batch_1": 0.5}).to_dict()["latency_ms"]
        {'batch_1': 0.5}
    """

    params: int
    flops: int
    size_bytes: int
    accuracy: float | None
    latency_ms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the fields (the latency dict is copied)."""
        return dataclasses.asdict(self)


def count_parameters(model: nn.Module) -> int:
    """Count the model's parameters, each shared or tied parameter once.

    Example:
        >>> count_parameters(torch.nn.Linear(4, 2))
        10
    """
    unique = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in unique.values())


def _register_cpu_attention_flops() -> None:
    """Teach the FLOP counter the CPU kernel of scaled_dot_product_attention (not registered
    by torch), using torch's own formula for attention."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in flop_counter.flop_registry:
        return

    def cpu_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    flop_counter.register_flop_formula(op)(cpu_attention_flop)


_register_cpu_attention_flops()


def count_flops(model: nn.Module, example_input: Any) -> int:
    """Count the floating-point operations of one forward pass.

    Uses ``torch.utils.flop_counter.FlopCounterMode``, which counts FLOPs = 2 x MACs for
    matmul and convolution (bias additions, activations and norms are not counted). The
    pass runs under ``torch.no_grad()`` in eval mode; every module's train/eval mode is
    restored afterwards. ``nn.MultiheadAttention``'s fused fast path, whose kernel the counter
    does not see, is switched off while counting.

    Args:
        model: The model to run.
        example_input: A tensor, or a tuple of tensors passed as ``model(*example_input)``.

    Example:
        >>> count_flops(torch.nn.Linear(64, 128), torch.randn(1, 64))
        16384
    """
    return int(run_flop_counter(model, example_input).get_total_flops())


def run_flop_counter(model: nn.Module, example_input: Any) -> FlopCounterMode:
    """One forward of ``model`` under a ``FlopCounterMode`` (eval mode, no gradients, the fused
    attention fast path off); the counter holds the FLOPs per module (``get_flop_counts()``)."""
    counter = FlopCounterMode(display=False)
    with traceable_eval_mode(model), counter:
        _forward(model, example_input)
    return counter


def serialized_size_bytes(model: nn.Module) -> int:
    """Return the length in bytes of the safetensors serialisation of the state dict.

    Tensors are copied to contiguous CPU tensors. An entry that is the same tensor as an
    earlier one (tied weights) is stored once, under its first name. The serialisation is
    written to a temporary file and measured there: serialising to bytes in memory would hold
    two more copies of the model at once.

    Example:
        >>> serialized_size_bytes(torch.nn.Linear(4, 2)) > 10 * 4
        True
    """
    with tempfile.TemporaryDirectory(prefix="neuroprune-size-") as folder:
        path = os.path.join(folder, "model.safetensors")
        safetensors.torch.save_file(_unique_cpu_tensors(model.state_dict()), path)
        return os.path.getsize(path)


def measure_latency_ms(
    model: nn.Module, example_input: Any, runs: int = 20, warmup: int = 5
) -> float:
    """Return the median wall time in milliseconds of ``runs`` forward passes.

    ``warmup`` untimed passes run first. Passes run in eval mode under
    ``torch.inference_mode()``; on CUDA the device is synchronised before and after each
    timed pass. Every module's train/eval mode is restored afterwards.

    Args:
        model: The model to time.
        example_input: A tensor, or a tuple of tensors passed as ``model(*example_input)``.
        runs: Timed passes, at least 1.
        warmup: Untimed passes before timing, at least 0.

    Raises:
        ValueError: If ``runs < 1`` or ``warmup < 0``.

    Example:
        >>> measure_latency_ms(torch.nn.Linear(4, 2), torch.randn(1, 4), runs=3) > 0
        True
    """
    if runs < 1:
        raise ConfigError([f"runs must be at least 1, got {runs!r}"])
    if warmup < 0:
        raise ConfigError([f"warmup must be at least 0, got {warmup!r}"])
    cuda_devices = _cuda_devices(model, example_input)
    times = []
    with evaluation_mode(model), torch.inference_mode():
        for _ in range(warmup):
            _forward(model, example_input)
        for _ in range(runs):
            _synchronize(cuda_devices)
            start = time.perf_counter()
            _forward(model, example_input)
            _synchronize(cuda_devices)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def measure_model(
    model: nn.Module,
    make_input: Callable[[int], Any],
    accuracy: float | None = None,
    batch_sizes: Sequence[int] = (1, 64),
    runs: int = 20,
    warmup: int = 5,
) -> ModelMetrics:
    """Measure parameters, FLOPs (at batch size 1), size and latency per batch size.

    Args:
        model: The model to measure.
        make_input: Builds an input for a batch size: a tensor, a tuple of tensors (positional) or a
            dict of tensors (keywords) on
            the model's device and in its dtype.
        accuracy: Quality measure to record as is, or None.
        batch_sizes: Batch sizes to time; each gives a ``"batch_<n>"`` latency entry.
        runs: Timed passes per batch size.
        warmup: Untimed passes per batch size.

    Raises:
        ValueError: If a batch size is below 1, or ``runs``/``warmup`` are out of range.

    Example:
        >>> m = measure_model(torch.nn.Linear(64, 128), lambda b: torch.randn(b, 64),
        ...                   batch_sizes=(1, 8), runs=2, warmup=0)
        >>> m.flops, sorted(m.latency_ms)
        (16384, ['batch_1', 'batch_8'])
    """
    for batch_size in batch_sizes:
        if batch_size < 1:
            raise ConfigError([f"batch sizes must be at least 1, got {batch_size!r}"])
    if batch_sizes and runs < MIN_RELIABLE_RUNS:
        warnings.warn(MeasurementWarning(f"latency from {runs} timed runs (fewer than {MIN_RELIABLE_RUNS}) is noise, "
                                         "not a speed-up; the report marks it unreliable"), stacklevel=2)
    latency = {
        f"batch_{b}": measure_latency_ms(model, make_input(b), runs=runs, warmup=warmup)
        for b in batch_sizes
    }
    return ModelMetrics(
        params=count_parameters(model),
        flops=count_flops(model, make_input(1)),
        size_bytes=serialized_size_bytes(model),
        accuracy=accuracy,
        latency_ms=latency,
    )


def _forward(model: nn.Module, example_input: Any) -> Any:
    """Call the model, unpacking a tuple input into positional arguments and a dict into keywords."""
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, tuple):
        return model(*example_input)
    return model(example_input)


def _cuda_devices(model: nn.Module, example_input: Any) -> set[torch.device]:
    """Return the CUDA devices holding the model's tensors or the input tensors."""
    tensors = [*model.parameters(), *model.buffers()]
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    inputs = tuple(example_input.values()) if isinstance(example_input, dict) else inputs
    tensors += [t for t in inputs if isinstance(t, torch.Tensor)]
    return {t.device for t in tensors if t.device.type == "cuda"}


def _synchronize(cuda_devices: set[torch.device]) -> None:
    """Wait for all queued work on the given CUDA devices."""
    for device in cuda_devices:
        torch.cuda.synchronize(device)


def _unique_cpu_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return contiguous CPU tensors that share no storage, dropping repeated entries.

    An entry that is exactly the same view as an earlier one is dropped; a different view
    of an already used storage is cloned, so safetensors never sees shared memory.
    """
    seen_views: set[tuple] = set()
    seen_storages: set[tuple] = set()
    result = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach()
        storage = (tensor.device, tensor.untyped_storage().data_ptr())
        view = (*storage, tensor.storage_offset(), tensor.dtype, tensor.shape, tensor.stride())
        if tensor.numel() > 0 and view in seen_views:
            continue
        seen_views.add(view)
        tensor = tensor.to("cpu").contiguous()
        if tensor.numel() > 0 and storage in seen_storages:
            tensor = tensor.clone()
        seen_storages.add(storage)
        result[name] = tensor
    return result
