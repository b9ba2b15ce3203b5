"""Recovery training over the ranks of a process group: each rank a slice of every global batch.

Under an initialised process group of more than one rank, :class:`DataParallel` wraps the model for
fine-tuning or distillation in ``torch.nn.parallel.DistributedDataParallel`` (``"ddp"``, the
default) or shards it with FSDP2 ``fully_shard`` (``"fsdp"``, for models whose gradients and
optimiser state do not fit one device); ``"none"`` trains the whole model on every rank (identical
work N times); :func:`sharded_as` sets the choice for a block of code (the torch backend sets
``PruneConfig.recover_sharding`` around a task's own recovery). The task's batch stays the *global*
batch: rank r takes the r-th contiguous chunk of its rows (:func:`slice_batch`) and scales its mean
loss by ``rows_r / rows * world``, so the gradient averaged over the ranks equals the one-process
gradient of the whole batch, even when the chunks are unequal (a rank without a row computes on one
row with weight 0). Every rank iterates the same batches (the task derives its shuffles from
``(seed, epoch)``), and the loss of every step is summed over the ranks before backward: every rank
sees the same global loss, and a rank whose forward raised makes all raise the same error instead
of leaving them waiting in the gradient all-reduce.

Outside a process group (or with one rank) everything here is the identity.

Example:
    >>> import torch, torch.nn as nn
    >>> part, weight = slice_batch((torch.arange(5), torch.arange(5)), rank=1, world=2)
    >>> part[0].tolist(), weight
    ([2, 3, 4], 1.2)
    >>> model = nn.Linear(2, 1)
    >>> with DataParallel(model) as replica:  # one process: the model itself
    ...     loss, value = replica.loss(lambda m, x: m(x).pow(2).mean(), torch.ones(3, 2))
    >>> replica.net is model and abs(loss.item() - value) < 1e-6
    True
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from neuroprune.core.config import RECOVER_SHARDINGS as SHARDINGS
from neuroprune.core.errors import ConfigError
from neuroprune.torch import distributed

_SHARDING: ContextVar[str] = ContextVar("neuroprune_recover_sharding", default="ddp")


@contextmanager
def sharded_as(sharding: str) -> Iterator[None]:
    """Recovery inside the block that is not told otherwise runs with ``sharding`` (one of
    :data:`SHARDINGS`; ``"ddp"`` outside any such block)."""
    token = _SHARDING.set(sharding)
    try:
        yield
    finally:
        _SHARDING.reset(token)


def _rows(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else None
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        rows = _rows(value)
        if rows is not None:
            return rows
    return None


def _take(batch: Any, rows: int, start: int, stop: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop] if batch.dim() and batch.shape[0] == rows else batch
    if isinstance(batch, Mapping):
        items = {key: _take(value, rows, start, stop) for key, value in batch.items()}
        try:
            return type(batch)(items)
        except (TypeError, ValueError):  # a mapping type that cannot be built from a dict
            return items
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(_take(value, rows, start, stop) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_take(value, rows, start, stop) for value in batch)
    return batch


def slice_batch(batch: Any, rank: int, world: int) -> tuple[Any, float]:
    """This rank's contiguous chunk of a global batch, and the factor its mean loss is scaled by.

    Every tensor whose first dimension is the batch's row count (that of its first tensor) is
    sliced; anything else is passed whole. The factor ``rows_r / rows * world`` makes the mean of
    the scaled losses over the ranks (what DDP's gradient average computes) the whole batch's
    mean loss. A rank whose chunk is empty gets the first row with factor 0.
    """
    rows = _rows(batch)
    if world <= 1 or not rows:
        return batch, 1.0
    start, stop = rows * rank // world, rows * (rank + 1) // world
    if stop == start:
        return _take(batch, rows, 0, 1), 0.0
    return _take(batch, rows, start, stop), (stop - start) / rows * world


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP2 shards as units: every child of the root that holds parameters (the
    items of a ``ModuleList``/``Sequential`` child one by one), deepest first, then the root."""
    units = []
    for child in model.children():
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            units += [item for item in child if any(True for _ in item.parameters())]
        elif any(True for _ in child.parameters()):
            units.append(child)
    return units + [model]


class DataParallel:
    """A context in which ``net`` trains ``model`` over the ranks (see the module docstring).

    ``sharding``: one of :data:`SHARDINGS`; ``None`` for the one :func:`sharded_as` set.

    Build the optimizer on :meth:`parameters` inside the block (FSDP2 trains a sharded copy);
    compute every step's loss with :meth:`loss`. On leaving, an FSDP2 copy's full parameters are
    gathered back into ``model``, floating buffers (BatchNorm running statistics, which differ per
    rank) are averaged over the ranks and others taken from rank 0, so every rank holds the same
    model, and the wrapper is dropped (no gradient hook stays on ``model``).
    """

    def __init__(self, model: nn.Module, sharding: str | None = None):
        sharding = _SHARDING.get() if sharding is None else sharding
        if sharding not in SHARDINGS:
            raise ConfigError([f"recover_sharding must be one of {', '.join(SHARDINGS)}, got {sharding!r}"])
        self.model, self.sharding = model, sharding
        self.world, self.rank = distributed.world_size(), distributed.rank()
        wrapped = isinstance(model, nn.parallel.DistributedDataParallel)  # the user's own: never wrapped twice
        #: slices batches (and scales losses) only when the gradients are averaged over the ranks
        self.sliced = self.world > 1 and (wrapped or sharding != "none")
        self.net: nn.Module = model
        self._copy: nn.Module | None = None

    def __enter__(self) -> DataParallel:
        if not self.sliced or isinstance(self.model, nn.parallel.DistributedDataParallel):
            return self
        if self.sharding == "ddp":
            self.net = nn.parallel.DistributedDataParallel(self.model, find_unused_parameters=True)
        else:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            self._copy = copy.deepcopy(self.model)
            mesh = init_device_mesh(_device().type, (self.world,))
            for unit in _fsdp_units(self._copy):
                try:
                    fully_shard(unit, mesh=mesh)
                except AssertionError as error:  # FSDP2: "FSDP expects uniform original parameter dtype"
                    raise ConfigError([f"recover_sharding='fsdp' could not shard {type(unit).__name__} ({error}); "
                                       "FSDP2 needs one parameter dtype per module it shards: use 'ddp'"]) from error
            self.net = self._copy
        return self

    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters the optimizer steps (an FSDP2 copy's shards under ``"fsdp"``)."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def loss(self, loss_fn: Callable[[nn.Module, Any], torch.Tensor], batch: Any) -> tuple[torch.Tensor, float]:
        """``(this rank's scaled loss to back-propagate, the global batch's mean loss)``; a forward
        that raised on any rank raises the same error on every rank."""
        if not self.sliced:
            loss = loss_fn(self.net, batch)
            return loss, loss.item()
        error, loss, share = None, None, 0.0
        try:
            part, weight = slice_batch(batch, self.rank, self.world)
            loss = loss_fn(self.net, part) * weight
            share = loss.item() / self.world
        except Exception as failure:  # joins the sum below, so no rank waits in backward
            error = failure
        box = torch.tensor([share, 0.0 if error is None else 1.0], dtype=torch.float64, device=_device())
        dist.all_reduce(box)
        if box[1].item() > 0:
            distributed.sync_errors(error)
        return loss, box[0].item()

    def mean(self, value: float) -> float:
        """``value`` averaged over the ranks (the identity in one process), e.g. elapsed seconds,
        so that every rank takes the same time-based decision."""
        if self.world <= 1:
            return value
        box = torch.tensor([value], dtype=torch.float64, device=_device())
        dist.all_reduce(box)
        return box.item() / self.world

    def __exit__(self, *failure) -> None:
        if not self.sliced:
            return
        if failure[0] is None:
            with torch.no_grad():
                if self._copy is not None:
                    for name, sharded in self._copy.named_parameters():
                        full = sharded.full_tensor() if hasattr(sharded, "full_tensor") else sharded
                        self.model.get_parameter(name).copy_(full)
                    for name, buffer in self._copy.named_buffers():
                        self.model.get_buffer(name).copy_(buffer)
                self._share_buffers()
        self._drop_hooks()
        self.net, self._copy = self.model, None

    def _drop_hooks(self) -> None:
        """Remove the gradient hooks our DDP wrapper put on the model's parameters (they would wait
        for the other ranks in a later backward of one rank) and free the wrapper now: its reducer
        sits in a reference cycle, and one collected late, after the process group was destroyed,
        aborts the process at exit ("terminate called without an active exception")."""
        if not isinstance(self.net, nn.parallel.DistributedDataParallel) or self.net is self.model:
            return
        if hasattr(self.net, "_remove_autograd_hooks"):
            self.net._remove_autograd_hooks()
            for handle in getattr(self.net, "_accum_grad_hooks", ()):
                handle.remove()
        self.net = None
        gc.collect()

    def _share_buffers(self) -> None:
        device = _device()
        for buffer in self.model.buffers():
            moved = buffer.to(device)
            if buffer.is_floating_point():
                dist.all_reduce(moved)
                moved /= self.world
            else:
                dist.broadcast(moved, src=0)
            buffer.copy_(moved)
