"""Parameters, FLOPs, size and latency of a Keras model (the same fields as the torch side's report).

FLOPs count the multiply-adds of Dense and convolution layers at batch size 1 (times two);
size is the byte length of the model's ``safetensors`` serialisation.

Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> m = measure_model(model, lambda n: np.ones((n, 4), "float32"), accuracy=None, batch_sizes=(1,), runs=2, warmup=0)
    >>> m["params"], m["flops"], sorted(m["latency_ms"])
    (15, 24, ['batch_1'])
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from neuroprune.keras.layers import weights_by_name
from neuroprune.keras.paths import leaf_layers


def weight_arrays(model: Any) -> dict[str, np.ndarray]:
    """Every weight of ``model`` as ``"layer/path/weight_name"`` -> numpy array (the safetensors keys)."""
    arrays = {}
    for path, layer in leaf_layers(model):
        for name, array in weights_by_name(layer).items():
            arrays[f"{path}/{name}"] = np.ascontiguousarray(array)
    return arrays


def size_bytes(model: Any) -> int:
    from safetensors.numpy import save

    return len(save(weight_arrays(model)))


def count_flops(model: Any) -> int:
    """``2 x`` multiply-adds of the Dense and Conv layers for one sample."""
    total = 0
    for _, layer in leaf_layers(model):
        if type(layer).__name__ not in ("Dense", "Conv1D", "Conv2D", "Conv3D", "EinsumDense"):
            continue
        kernel = getattr(layer, "kernel", None)
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):  # a layer without a single output shape
            continue
        positions = int(np.prod([d for d in shape[1:-1] if d is not None])) if len(shape) > 2 else 1
        if kernel is not None:
            total += 2 * int(np.prod(kernel.shape)) * positions
    return total


def measure_latency_ms(model: Any, x: Any, runs: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of one forward pass (``training=False``) on ``x``."""
    import keras

    for _ in range(warmup):
        keras.ops.convert_to_numpy(model(x, training=False))
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(model(x, training=False))
        times.append((time.perf_counter() - start) * 1000)
    return float(statistics.median(times))


def measure_model(model: Any, make_input: Callable[[int], Any], *, accuracy: float | None,
                  batch_sizes: Sequence[int] = (1, 64), runs: int = 20, warmup: int = 3) -> dict[str, Any]:
    """``params``, ``flops``, ``size_bytes``, ``accuracy`` and ``latency_ms`` (``"batch_<n>"``)."""
    latency = {f"batch_{n}": measure_latency_ms(model, make_input(n), runs, warmup) for n in batch_sizes}
    return {"params": int(model.count_params()), "flops": count_flops(model), "size_bytes": size_bytes(model),
            "accuracy": accuracy, "latency_ms": latency}
