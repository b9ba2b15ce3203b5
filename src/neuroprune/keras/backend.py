"""The Keras backend: every step of the core's loop for Sequential and Functional Keras 3 models.

:class:`KerasBackend` implements :class:`neuroprune.core.backend.Backend` (name ``"keras"``, written
into plans) on any Keras backend: the graph from ``get_config`` (:mod:`~neuroprune.keras.graph`),
numpy weight rows (:mod:`~neuroprune.keras.layers`), probe statistics (:mod:`~neuroprune.keras.stats`),
``set_weights`` masks, config-rewriting surgery, recovery (least-squares reconstruction, ``model.fit``
fine-tuning, distillation) and ``.keras`` + safetensors
folders. :func:`neuroprune.prune` picks it for any ``keras.Model``.

Surgery builds a new model (Keras cannot resize a built layer), so :meth:`KerasBackend.apply_keep`
returns a new model rather than changing its argument; the loop always uses what it returns.

Example:
    >>> import keras, numpy as np
    >>> from neuroprune.core.backend import backend_for
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="fc1"), keras.layers.Dense(2, name="fc2")])
    >>> backend = backend_for(model)
    >>> backend.name
    'keras'
    >>> graph = backend.discover(model, None)
    >>> [r.rows.shape for r in backend.weight_rows(model, "fc1", "out")]
    [(8, 4)]
    >>> backend.apply_keep(backend.clone(model), graph.keep_indices({"fc1": [0, 1]})).get_layer("fc1").units
    6
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from neuroprune.core.backend import Keep, WeightRows, register_backend
from neuroprune.core.groups import DependencyGraph
from neuroprune.keras import checkpoint, io
from neuroprune.keras.graph import discover
from neuroprune.keras.layers import rule_for, weights_by_name
from neuroprune.keras.masks import apply_masks
from neuroprune.keras.distill import distill
from neuroprune.keras.metrics import count_flops, measure_latency_ms, measure_model
from neuroprune.keras.paths import layer_at
from neuroprune.keras.reconstruct import reconstruct
from neuroprune.keras.stats import collect_statistics
from neuroprune.keras.surgery import apply_keep, clone


class _RandomState:
    """numpy's and Python's random state, given back when an attempt is rolled back."""

    def __init__(self):
        self.numpy, self.python = np.random.get_state(), random.getstate()

    def restore(self) -> None:
        np.random.set_state(self.numpy)
        random.setstate(self.python)


def _input_columns(kernel_shape: tuple[int, ...], axis_sizes: dict[str, int]) -> np.ndarray | None:
    """Which input unit each column of an incoming kernel's rows reads (conv kernels repeat per position)."""
    n_in = axis_sizes.get("in")
    if n_in is None:
        return None
    positions = int(np.prod(kernel_shape[:-2])) if len(kernel_shape) > 2 else 1
    return np.tile(np.arange(n_in, dtype=np.int64), positions)


class KerasBackend:
    """Keras 3 Sequential and Functional models (see the module docstring)."""

    name = "keras"

    def matches(self, model: Any) -> bool:
        keras = sys.modules.get("keras")
        return keras is not None and isinstance(model, keras.Model)

    # -- model lifecycle -------------------------------------------------------------
    def clone(self, model: Any) -> Any:
        return clone(model)

    # -- discovery and weights -------------------------------------------------------
    def discover(self, model: Any, example: Any = None, ignore: Iterable[str] = (), *,
                 ignore_untraceable: bool = False) -> DependencyGraph:
        return discover(model, example, ignore=ignore, ignore_untraceable=ignore_untraceable)

    def weight_rows(self, model: Any, path: str, axis: str, *, outgoing: bool = False) -> list[WeightRows]:
        """Numpy ``units x fan-in`` rows: Dense / Conv kernels transposed from Keras's ``(.., in, out)``."""
        layer = layer_at(model, path)
        rule = rule_for(type(layer).__name__)
        if rule is None:
            return []
        arrays = weights_by_name(layer)
        rule = rule.for_weights({name: array.shape for name, array in arrays.items()})
        kernel_shape = tuple(arrays["kernel"].shape) if "kernel" in arrays else ()
        sizes = rule.axes(layer)
        rows = [WeightRows(view.name, view.rows(arrays[view.name]), view.input_axis,
                           np.asarray(view.input_columns(np.arange(sizes["in"], dtype=np.int64)))
                           if view.input_columns is not None and "in" in sizes else _input_columns(kernel_shape, sizes))
                for view in rule.incoming(axis, kernel_shape)]
        if outgoing:
            rows += [WeightRows(view.name, view.rows(arrays[view.name])) for view in rule.outgoing(axis)]
        return rows

    def collect_statistics(self, model: Any, graph: DependencyGraph, task, needs, *, threshold: float = 0.0,
                           progress: bool = True, desc: str = "scoring"):
        if not (needs.activations or needs.gradients or needs.gram):
            return None
        return collect_statistics(model, graph, task.calibration_batches(), task.loss_fn,
                                  activations=needs.activations or needs.gram, gradients=needs.gradients,
                                  per_weight=needs.per_weight, gram=needs.gram, threshold=threshold,
                                  progress=progress, desc=desc)

    # -- masks, surgery, recovery ----------------------------------------------------
    def mask(self, model: Any, keep: Keep):
        return apply_masks(model, keep)

    def apply_keep(self, model: Any, keep: Keep) -> Any:
        """A new, smaller model (see the module docstring)."""
        return apply_keep(model, keep)

    def reconstruct(self, student: Any, before: Any, keep: Keep, task, config) -> None:
        """Least-squares re-fit of the Dense / convolution consumers of removed channels
        (:mod:`~neuroprune.keras.reconstruct`)."""
        reconstruct(student, before, keep, task.calibration_batches(), progress=config.progress)

    def recover(self, model: Any, task, config, teacher: Any, desc: str) -> int:
        """``task.finetune`` (``model.fit``) for ``config.finetune_epochs``; with a teacher and
        ``config.distill_weight`` > 0, distillation (:mod:`~neuroprune.keras.distill`)."""
        if not config.finetune_epochs:
            return 0
        if teacher is not None and config.distill_weight > 0:
            distill(model, teacher, task, epochs=config.finetune_epochs, weight=config.distill_weight,
                    temperature=config.distill_temperature, learning_rate=config.learning_rate,
                    progress=config.progress)
        else:
            task.finetune(model, epochs=config.finetune_epochs, learning_rate=config.learning_rate,
                          progress=config.progress, desc=desc)
        return config.finetune_epochs

    def snapshot(self) -> _RandomState:
        return _RandomState()

    # -- many processes ---------------------------------------------------------------
    def agree(self, value: Any) -> Any:
        return value  # one process

    def collective(self):
        return contextlib.nullcontext()  # one process: nothing to keep in step

    def world(self) -> tuple[int, int]:
        return 0, 1

    # -- measuring -------------------------------------------------------------------
    def measure(self, model: Any, task, config, batch_sizes=(1, 64)) -> dict[str, Any]:
        return measure_model(model, task.make_input, accuracy=task.evaluate(model, "test"), batch_sizes=batch_sizes,
                             runs=config.latency_runs, warmup=min(5, config.latency_runs))

    def measure_cost(self, model: Any, task, quantity: str) -> float:
        if quantity == "params":
            return float(model.count_params())
        if quantity == "latency":
            return measure_latency_ms(model, task.make_input(32), runs=15, warmup=3)
        return float(count_flops(model))

    def cost_model(self, model: Any, graph: DependencyGraph, task, quantity: str, *, skip=frozenset(),
                   min_widths: dict[str, int] | None = None):
        return None  # no analytic cost model for Keras yet: budgets measure

    # -- files -----------------------------------------------------------------------
    def save(self, folder, model: Any, plan, report: dict | None = None, *, overwrite: bool = False,
             extra: dict[str, Any] | None = None) -> None:
        io.save(folder, model, plan, report, overwrite=overwrite, extra=extra)

    def fingerprint(self, model: Any, task) -> dict[str, str]:
        import hashlib

        digest = hashlib.sha256()
        for array in model.get_weights():
            digest.update(np.ascontiguousarray(array).tobytes())
        return {"weights": digest.hexdigest(), "data": task.fingerprint() if hasattr(task, "fingerprint") else ""}

    def check_checkpoint(self, folder) -> None:
        checkpoint.check_checkpoint_folder(folder)

    def save_checkpoint(self, folder, model: Any, state, config, fingerprint: dict[str, str] | None) -> None:
        checkpoint.save_checkpoint(folder, model, state, config, fingerprint)

    def load_checkpoint(self, folder, original: Any, config, fingerprint: dict[str, str] | None):
        return checkpoint.load_checkpoint(folder, original, config, fingerprint)


register_backend(KerasBackend(), replace=True)

__all__ = ["KerasBackend"]
