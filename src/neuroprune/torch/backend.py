"""The torch backend: every step of the core's loop for ``torch.nn.Module`` models.

:class:`TorchBackend` implements :class:`neuroprune.core.backend.Backend` with torch.fx discovery
(:mod:`neuroprune.torch.graph`), the per-layer handlers' weight views, hook-based statistics,
restorable masks, surgery, least-squares reconstruction, fine-tuning / distillation, measurement
and safetensors files. Its name is ``"fx"`` (the name plans have always recorded). A family of
models whose structure or configuration needs more (Hugging Face transformers) subclasses it and
overrides the hooks :meth:`TorchBackend.after_surgery`, :meth:`TorchBackend.residual_sums` and
:meth:`TorchBackend.extra_files` (see :mod:`neuroprune.hf.adapter`).

Example:
    >>> import torch, torch.nn as nn
    >>> from neuroprune.core.backend import backend_for
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> backend = backend_for(model)
    >>> backend.name
    'fx'
    >>> graph = backend.discover(model, torch.randn(1, 4))
    >>> small = backend.apply_keep(backend.clone(model), graph.keep_indices({graph.groups[0].name: [0, 1]}))
    >>> small[0].out_features, model[0].out_features
    (6, 8)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import Any

import torch.nn as nn

from neuroprune.core.backend import Keep, WeightRows, register_backend
from neuroprune.core.groups import DependencyGraph
from neuroprune.core.tasks import capabilities_of, token_mask_of
from neuroprune.torch import checkpoint, distributed, io
from neuroprune.torch.owners import share_owned
from neuroprune.torch.cost_model import CostModel
from neuroprune.torch.graph.discover import discover
from neuroprune.torch.masks import apply_masks
from neuroprune.torch.metrics import count_flops, count_parameters, measure_latency_ms, measure_model
from neuroprune.torch.recover.data_parallel import sharded_as
from neuroprune.torch.recover.finetune import finetune
from neuroprune.torch.recover.reconstruct import reconstruct
from neuroprune.torch.recover.rollback import Snapshot
from neuroprune.torch.stats import statistics_for
from neuroprune.torch.lean_surgery import apply_keep_streaming
from neuroprune.torch.teacher import remember_clone
from neuroprune.torch.weights import weight_rows


class TorchBackend:
    """Torch models, discovered by tracing (see the module docstring)."""

    name = "fx"

    def matches(self, model: Any) -> bool:
        return isinstance(model, nn.Module)

    # -- model lifecycle -------------------------------------------------------------
    def clone(self, model: nn.Module) -> nn.Module:
        """A deep copy; remembered, so that a task binding to it can share the original's weights
        for its teacher (:func:`neuroprune.torch.teacher.frozen_teacher`) instead of a third copy."""
        clone = copy.deepcopy(model)
        remember_clone(clone, model)
        return clone

    # -- discovery and weights -------------------------------------------------------
    def discover(self, model: nn.Module, example: Any, ignore: Iterable[str] = (), *,
                 ignore_untraceable: bool = False) -> DependencyGraph:
        return discover(model, example, ignore=ignore, ignore_untraceable=ignore_untraceable)

    def weight_rows(self, model: nn.Module, path: str, axis: str, *, outgoing: bool = False) -> list[WeightRows]:
        return weight_rows(model, path, axis, outgoing=outgoing)

    def collect_statistics(self, model: nn.Module, graph: DependencyGraph, task, needs, *, threshold: float = 0.0,
                           progress: bool = True, desc: str = "scoring"):
        return statistics_for(needs, model, graph, task, threshold=threshold, progress=progress, desc=desc)

    # -- masks, surgery, recovery ----------------------------------------------------
    def mask(self, model: nn.Module, keep: Keep):
        """Masks whose removal gives back only the slices they zeroed (the loop, the budget search and
        sensitivity analysis only evaluate a masked model): a fraction of a whole-tensor snapshot."""
        return apply_masks(model, keep, originals="masked")

    def apply_keep(self, model: nn.Module, keep: Keep) -> nn.Module:
        """Surgery in place, one layer at a time (old and new weights never both held in full:
        :mod:`neuroprune.torch.lean_surgery`), then :meth:`after_surgery`; returns the model."""
        model = apply_keep_streaming(model, keep)
        self.after_surgery(model)
        distributed.check_after_surgery(model)  # NEUROPRUNE_DEBUG_DIST=1: the ranks still hold the same state
        return model

    def after_surgery(self, model: nn.Module) -> None:
        """Bring attributes and configuration in line with the new tensor shapes (nothing here)."""

    def residual_sums(self, model: nn.Module) -> dict[str, str]:
        """Layer path -> the module that adds its output to a residual stream (none known here)."""
        return {}

    def extra_files(self, model: nn.Module) -> dict[str, Any]:
        """Further files a saved folder needs, by name (none here)."""
        return {}

    def reconstruct(self, student: nn.Module, before: nn.Module, keep: Keep, task, config) -> None:
        reconstruct(student, before, keep, task.calibration_batches(), task.loss, progress=config.progress,
                    token_mask=token_mask_of(task), residual_sums=self.residual_sums(student) or None)

    def recover(self, model: nn.Module, task, config, teacher: nn.Module | None, desc: str) -> int:
        """Fine-tune (or distil from ``teacher``) in place; a task with ``own_recovery`` recovers itself.

        In a process group of several ranks each rank trains on a slice of every batch, under DDP or
        FSDP2 (``config.recover_sharding``, default ``"ddp"``; see
        :mod:`~neuroprune.torch.recover.data_parallel`)."""
        if not config.finetune_epochs:
            return 0
        options = dict(epochs=config.finetune_epochs, learning_rate=config.learning_rate, progress=config.progress,
                       desc=desc)
        with sharded_as(getattr(config, "recover_sharding", "ddp")):
            if "own_recovery" in capabilities_of(task):
                task.finetune(model, **options)
            else:
                finetune(model, task, **options, teacher=teacher, distill_weight=config.distill_weight,
                         temperature=config.distill_temperature)
        return config.finetune_epochs

    def snapshot(self):
        """The process's random state, to give back when an attempt is rolled back."""
        return Snapshot.take()

    # -- many processes ---------------------------------------------------------------
    def agree(self, value: Any) -> Any:
        return distributed.agree(value)

    def collective(self):
        """A block every rank runs together: one rank's failure is raised on all (a final barrier)."""
        return distributed.guarded(barrier_at_end=True)

    def world(self) -> tuple[int, int]:
        """``(rank, world size)``: ``(0, 1)`` outside a process group."""
        return distributed.rank(), distributed.world_size()

    def share_owned(self, mine: dict, error: BaseException | None = None) -> dict:
        """Results each rank computed for the data it owns, merged on every rank (see :mod:`neuroprune.torch.owners`)."""
        return share_owned(mine, error)

    # -- measuring -------------------------------------------------------------------
    def measure(self, model: nn.Module, task, config, batch_sizes=(1, 64)) -> dict[str, Any]:
        return measure_model(model, task.make_input, accuracy=task.evaluate(model, "test"), batch_sizes=batch_sizes,
                             runs=config.latency_runs, warmup=min(5, config.latency_runs)).to_dict()

    def measure_cost(self, model: nn.Module, task, quantity: str) -> float:
        """``"params"``, ``"flops"`` (batch 1) or ``"latency"`` (ms at batch 32) of ``model``."""
        if quantity == "params":
            return float(count_parameters(model))
        if quantity == "latency":
            return measure_latency_ms(model, task.make_input(32), runs=15, warmup=3)
        return float(count_flops(model, task.make_input(1)))

    def cost_model(self, model: nn.Module, graph: DependencyGraph, task, quantity: str, *, skip=frozenset(),
                   min_widths: dict[str, int] | None = None):
        """An analytic cost over group widths (``.value(kept widths)``), or ``None`` where none fits."""
        return CostModel.record(model, graph, quantity, task.make_input(1), skip=skip, min_widths=min_widths)

    # -- files -----------------------------------------------------------------------
    def save(self, folder, model: nn.Module, plan, report: dict | None = None, *, overwrite: bool = False,
             extra: dict[str, Any] | None = None) -> None:
        """:func:`neuroprune.torch.io.save` with this backend's :meth:`extra_files` (``extra`` wins)."""
        io.save(folder, model, plan, report, overwrite=overwrite, extra={**self.extra_files(model), **(extra or {})})

    def fingerprint(self, model: nn.Module, task) -> dict[str, str]:
        return checkpoint.fingerprint_run(model, task)

    def check_checkpoint(self, folder: str | os.PathLike) -> None:
        checkpoint.check_checkpoint_folder(folder)

    def save_checkpoint(self, folder, model: nn.Module, state, config, fingerprint: dict[str, str] | None) -> None:
        checkpoint.save_checkpoint(folder, model, state, config, fingerprint)

    def load_checkpoint(self, folder, original: nn.Module, config, fingerprint: dict[str, str] | None):
        return checkpoint.load_checkpoint(folder, original, config, fingerprint)


register_backend(TorchBackend(), replace=True)
