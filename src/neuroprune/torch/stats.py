"""One streaming pass over calibration batches that gathers what every criterion needs.

Statistics are sums and counts (never running means), so passes over different data, or on
different processes, merge by addition. Per neuron they take O(1) memory; only the ``seed``
criterion, which weighs each connection by its own gradient, keeps one float32 accumulator per
weight of the layers it scores, and the ``obs`` criterion one Gram matrix (inputs x inputs) per
Linear layer that reads a group. Activations are never stored.

The model is left as found: hooks are removed, ``requires_grad`` flags, ``.grad`` tensors and
train/eval modes are restored. Statistics accumulate on the model's device: sums in float64,
counts in int64 (float32 counts stop being exact past 2^24), the per-weight ``seed`` accumulator in
float32. Hooks never synchronise with the host: finiteness is checked once, at the end of the pass.

Example:
    >>> import torch, torch.nn as nn
    >>> from neuroprune.torch.graph.discover import discover
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> graph = discover(model, torch.randn(1, 4))
    >>> batches = [(torch.randn(16, 4), torch.randint(0, 2, (16,)))]
    >>> loss = lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])
    >>> stats = collect_statistics(model, graph, batches, loss, gradients=True, progress=False)
    >>> stats.axes[("2", "in")].act_count.shape, stats.axes[("2", "in")].act_count.dtype
    (torch.Size([8]), torch.int64)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from neuroprune.core.errors import DataError, NonFiniteError
from neuroprune.core.statistics import AxisStats, Statistics  # noqa: F401  (AxisStats: old import path)
from neuroprune.core.tasks import token_mask_of
from neuroprune.core.groups import DependencyGraph
from neuroprune.torch import distributed
from neuroprune.torch.modes import module_modes, restore_modes
from neuroprune.torch.layers.registry import handler_for
from neuroprune.torch.weights import reads_like_linear

LossFn = Callable[[nn.Module, Any], torch.Tensor]


def _add(current: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """``value`` as the accumulator on first use, then added to it in place (no new tensor per batch)."""
    return value if current is None else current.add_(value)


_FLOAT_FIELDS = ("act_abs", "act_sum", "act_sq")


class _Accumulators:
    """Every per-unit accumulator a pass can fill, allocated from the graph before the first batch
    (float64 sums, int64 counts, on each module's device) and added to in place. A field no batch
    wrote to goes back to ``None`` at the end (``None`` means "not observed", as before)."""

    def __init__(self, net: nn.Module, graph: DependencyGraph, stats: Statistics, *, activations: bool,
                 gradients: bool, gram_axes: set[tuple[str, str]]):
        self.stats, self.written = stats, set()
        #: axes the gradient pass visits (they had an entry before preallocation too)
        self.visited = {(m.path, m.axis) for g in graph.groups for m in g.members} if gradients else set()
        for path, axes in graph.axis_sizes.items():
            device = _device_of(net.get_submodule(path))
            for axis, size in axes.items():
                entry = stats.axis(path, axis)
                fields = {}
                if activations or (path, axis) in gram_axes:
                    fields = {"act_count": torch.int64, **dict.fromkeys(_FLOAT_FIELDS, torch.float64)}
                if gradients:
                    fields.update(grad_abs=torch.float64, grad_numel=torch.int64, taylor=torch.float64)
                for name, dtype in fields.items():
                    setattr(entry, name, torch.zeros(size, dtype=dtype, device=device))
                if (path, axis) in gram_axes:
                    entry.gram = torch.zeros(size + 1, size + 1, dtype=torch.float64, device=device)

    def add(self, entry: AxisStats, key: tuple[str, str], name: str, value: torch.Tensor) -> None:
        """Add ``value`` to field ``name`` of ``entry`` (axis ``key``); a first value whose shape or
        device is not the preallocated one's becomes the accumulator itself."""
        current = getattr(entry, name)
        if (key, name) not in self.written and (current is None or current.shape != value.shape
                                                 or current.device != value.device):
            current = None
        setattr(entry, name, _add(current, value))
        self.written.add((key, name))

    def finish(self) -> None:
        """Give back ``None`` for every preallocated field that no batch wrote to."""
        for key, entry in list(self.stats.axes.items()):
            for name in ("act_count", *_FLOAT_FIELDS, "grad_abs", "grad_numel", "taylor", "gram"):
                if getattr(entry, name) is not None and (key, name) not in self.written:
                    setattr(entry, name, None)
            if (key not in self.visited or not self.stats.batches) and entry.act_n == 0 and all(
                    getattr(entry, name) is None for name in ("act_count", *_FLOAT_FIELDS, "grad_abs", "grad_numel",
                                                              "taylor", "gram")):
                del self.stats.axes[key]  # preallocated, never observed


def _device_of(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


class _ActivationObserver:
    """Forward hooks that count, per channel, values above the threshold and sum |values|."""

    def __init__(self, model: nn.Module, paths: Iterable[str], stats: Statistics, threshold: float,
                 gram_axes: set[tuple[str, str]] = frozenset(), accumulators: _Accumulators | None = None):
        self.stats, self.threshold, self.gram_axes, self.acc = stats, threshold, gram_axes, accumulators
        #: (batch, tokens) mask of the current batch; positions where it is 0 are not counted
        self.token_mask: torch.Tensor | None = None
        #: (path, axis) -> observed values per position under a token mask, summed on the device
        self.masked_n: dict[tuple[str, str], torch.Tensor] = {}
        self.handles = []
        for path in paths:
            module = model.get_submodule(path)
            self.handles.append(module.register_forward_hook(self._hook(path), with_kwargs=True))

    def _hook(self, path: str):
        def observe(module, args, kwargs, output):
            for axis, (tensor, dim) in handler_for(module).observe(module, args, kwargs, output).items():
                self._record(path, axis, tensor.detach(), dim)
                if (path, axis) in self.gram_axes:
                    self._record_gram(path, axis, tensor.detach())

        return observe

    def _token_weights(self, x: torch.Tensor, dim: int) -> torch.Tensor | None:
        """The token mask shaped to broadcast over ``x`` (batch on dim 0, tokens on the first
        other dimension of matching size), or ``None`` when it does not apply."""
        mask = self.token_mask
        if mask is None or x.dim() < 3 or x.shape[0] != mask.shape[0]:
            return None
        for d in range(1, x.dim()):
            if d != dim and x.shape[d] == mask.shape[1]:
                shape = [1] * x.dim()
                shape[0], shape[d] = mask.shape
                return mask.to(device=x.device, dtype=torch.float32).reshape(shape)
        return None

    def _record(self, path: str, axis: str, x: torch.Tensor, dim: int) -> None:
        dim = dim % x.dim()
        others = [d for d in range(x.dim()) if d != dim]
        entry = self.stats.axis(path, axis)
        add = (lambda name, value: self.acc.add(entry, (path, axis), name, value)) if self.acc else (
            lambda name, value: setattr(entry, name, _add(getattr(entry, name), value)))
        weights = self._token_weights(x, dim)
        if weights is None:
            add("act_count", (x > self.threshold).sum(dim=others, dtype=torch.int64))
            add("act_abs", x.abs().sum(dim=others, dtype=torch.float64))
            add("act_sum", x.sum(dim=others, dtype=torch.float64))
            add("act_sq", x.float().square().sum(dim=others, dtype=torch.float64))
            entry.act_n += x.numel() / x.shape[dim]
            return
        real = weights > 0
        add("act_count", ((x > self.threshold) & real).sum(dim=others, dtype=torch.int64))
        add("act_abs", (x.abs().float() * weights).sum(dim=others, dtype=torch.float64))
        add("act_sum", (x.float() * weights).sum(dim=others, dtype=torch.float64))
        add("act_sq", (x.float().square() * weights).sum(dim=others, dtype=torch.float64))
        observed = weights.sum(dtype=torch.float64) * (x.numel() / (x.shape[dim] * weights.numel()))
        self.masked_n[(path, axis)] = _add(self.masked_n.get((path, axis)), observed)

    def _record_gram(self, path: str, axis: str, x: torch.Tensor) -> None:
        """Add ``[x, 1]^T [x, 1]`` over the rows of a Linear input (real tokens only)."""
        rows = x.reshape(-1, x.shape[-1]).float()
        ones = torch.ones(len(rows), 1, device=rows.device)
        weights = self._token_weights(x, x.dim() - 1)
        if weights is not None:  # zero the padding rows (no boolean indexing: that waits for the device)
            ones = (weights.expand(*x.shape[:-1], 1).reshape(-1, 1) > 0).float()
            rows = rows * ones
        rows = torch.cat([rows, ones], dim=1)
        entry = self.stats.axis(path, axis)
        if self.acc is not None:
            self.acc.add(entry, (path, axis), "gram", (rows.T @ rows).double())
        else:
            entry.gram = _add(entry.gram, (rows.T @ rows).double())

    def finish(self) -> None:
        """Add the masked observation counts to the statistics (one host transfer per axis)."""
        for key, observed in self.masked_n.items():
            self.stats.axis(*key).act_n += float(observed)
        self.masked_n.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _gradient_targets(model: nn.Module, graph: DependencyGraph):
    """(path, axis, handler, module) for every axis a group touches."""
    seen = set()
    for group in graph.groups:
        for member in group.members:
            key = (member.path, member.axis)
            if key not in seen:
                seen.add(key)
                module = model.get_submodule(member.path)
                yield member.path, member.axis, handler_for(module), module


class _FiniteChecks:
    """Finiteness flags kept on the device during a pass and read once at its end."""

    def __init__(self):
        self.flags: list[torch.Tensor] = []
        self.messages: list[tuple[str, torch.Tensor | None]] = []

    def add(self, values: torch.Tensor, message: str, shown: torch.Tensor | None = None) -> None:
        """Remember whether ``values`` are all finite; ``message`` (with ``{value}`` for ``shown``) if not."""
        self.flags.append(torch.isfinite(values.detach()).all())
        self.messages.append((message, None if shown is None else shown.detach()))

    def raise_first(self) -> None:
        """Raise :class:`NonFiniteError` for the first non-finite value recorded (one host sync)."""
        if not self.flags:
            return
        ok = torch.stack([flag.to(self.flags[0].device) for flag in self.flags])
        if bool(ok.all()):
            return
        message, shown = self.messages[int((~ok).nonzero()[0, 0])]
        raise NonFiniteError(message.replace("{value}", str(None if shown is None else shown.item())))


def _read_parameters(model: nn.Module, graph: DependencyGraph) -> set[int]:
    """Ids of the parameters whose gradients :func:`_record_gradients` reads (the groups' members)."""
    read = set()
    for _path, axis, handler, module in _gradient_targets(model, graph):
        for view in handler.incoming(module, axis) + handler.outgoing(module, axis):
            read.add(id(module.get_parameter(view.name)))
    return read


def _record_gradients(model, graph, stats: Statistics, per_weight: bool, batch_index: int,
                      checks: _FiniteChecks, acc: _Accumulators) -> None:
    for path, axis, handler, module in _gradient_targets(model, graph):
        entry = stats.axis(path, axis)
        for view in handler.incoming(module, axis):
            param = module.get_parameter(view.name)
            if param.grad is None:
                continue
            grad = param.grad.detach().float()
            rows = view.rows(grad).abs()
            summed = rows.sum(dim=1, dtype=torch.float64)
            checks.add(summed, f"non-finite gradient in {path}.{view.name} on calibration batch {batch_index}")
            acc.add(entry, (path, axis), "grad_abs", summed)
            acc.add(entry, (path, axis), "grad_numel", torch.full_like(summed, rows.shape[1], dtype=torch.int64))
            if per_weight:
                key = (path, view.name)
                stats.weight_grad_abs[key] = _add(stats.weight_grad_abs.get(key), rows)  # laid out as the rows
        for view in handler.outgoing(module, axis):
            param = module.get_parameter(view.name)
            if param.grad is None:
                continue
            product = view.rows(param.detach().float() * param.grad.detach().float()).sum(dim=1, dtype=torch.float64)
            checks.add(product, f"non-finite gradient in {path}.{view.name} on calibration batch {batch_index}")
            acc.add(entry, (path, axis), "taylor", product)


def collect_statistics(model: nn.Module, graph: DependencyGraph, batches: Iterable[Any], loss_fn: LossFn, *,
                       activations: bool = True, gradients: bool = False, per_weight: bool = False,
                       gram: bool = False, threshold: float = 0.0, progress: bool = True, desc: str = "scoring",
                       token_mask: Callable[[Any], torch.Tensor | None] | None = None,
                       shard: bool = True) -> Statistics:
    """Gather activation and gradient statistics for every group of ``graph``.

    Args:
        model: the model (left unchanged).
        graph: its groups, from :func:`~neuroprune.torch.graph.discover.discover`.
        batches: calibration batches, each passed to ``loss_fn``.
        loss_fn: ``loss_fn(model, batch)`` returns a scalar loss (its value is only used when
            ``gradients`` is set).
        activations: count activations above ``threshold`` and sum their magnitudes.
        gradients: run backward and accumulate |gradient| and weight x gradient sums.
        per_weight: also keep |gradient| per weight (needed by the ``seed`` criterion).
        gram: also sum the Gram matrix of the inputs of every ``nn.Linear`` that reads a group
            (needed by the ``obs`` criterion; implies ``activations``).
        threshold: the activation threshold of the frequency statistic.
        progress: show a progress bar.
        token_mask: ``token_mask(batch)`` gives a (batch, tokens) mask of real tokens; padding
            positions are then left out of the activation statistics.
        shard: in a process group of several ranks, each rank takes ``batches[rank::world]``
            (``False``: each rank's ``batches`` already are its own share). Either way the sums
            are then added over the ranks (one flat float64 and one int64 ``all_reduce``); under a
            ``DistributedDataParallel`` model, whose gradients are already averaged, only the
            activation fields are. Gram matrices are summed onto one owner rank per layer only
            (``stats.gram_owners``; see :mod:`neuroprune.torch.owners`). A failure on any rank is
            raised on every rank.
    """
    with distributed.guarded():
        stats = _collect_local(model, graph, distributed.shard(batches) if shard else batches, loss_fn,
                               activations=activations, gradients=gradients, per_weight=per_weight, gram=gram,
                               threshold=threshold, progress=progress and distributed.is_writer(), desc=desc,
                               token_mask=token_mask)
        ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        stats = distributed.all_reduce_statistics(stats, gradients_reduced=ddp)
    if stats.batches == 0:
        raise DataError("calibration data is empty: at least one batch is needed to score neurons")
    return stats


def _collect_local(model: nn.Module, graph: DependencyGraph, batches: Iterable[Any], loss_fn: LossFn, *,
                   activations: bool, gradients: bool, per_weight: bool, gram: bool, threshold: float,
                   progress: bool, desc: str, token_mask) -> Statistics:
    """This process's pass over ``batches`` (see :func:`collect_statistics`)."""
    # under DDP the loss runs through the wrapper (which averages gradients); hooks and reads go to
    # the wrapped model, whose module paths the graph names
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    stats = Statistics(threshold=threshold)
    paths = sorted(graph.axis_sizes)
    modes = module_modes(net)
    params = list(net.parameters())
    saved_grads = [p.grad for p in params]
    saved_flags = [p.requires_grad for p in params]
    gram_axes = {(m.path, m.axis) for g in graph.groups for m in g.members
                 if gram and m.axis == "in" and reads_like_linear(net.get_submodule(m.path))}
    acc = _Accumulators(net, graph, stats, activations=activations, gradients=gradients, gram_axes=gram_axes)
    observer = _ActivationObserver(net, paths, stats, threshold, gram_axes, acc) if activations or gram else None
    checks = _FiniteChecks()
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)  # its reducer expects every gradient
    read = ({id(p) for p in params} if ddp else _read_parameters(net, graph)) if gradients else set()
    try:
        net.eval()
        for p in params:  # gradients only where a criterion reads them
            p.grad = None
            p.requires_grad_(id(p) in read)
        total = len(batches) if hasattr(batches, "__len__") else None
        for index, batch in enumerate(tqdm(batches, total=total, desc=desc, disable=not progress or not distributed.is_writer(), leave=False)):
            if observer is not None and token_mask is not None:
                observer.token_mask = token_mask(batch)
            with torch.set_grad_enabled(gradients):
                loss = loss_fn(model, batch)
                if gradients:
                    checks.add(loss, "loss is {value} on calibration batch " + str(index), loss)
                    if loss.requires_grad:
                        loss.backward()
                    _record_gradients(net, graph, stats, per_weight, index, checks, acc)
                    for p in params:
                        p.grad = None
            stats.batches += 1
        checks.raise_first()
        if observer is not None:
            observer.finish()
        acc.finish()
    finally:
        if observer is not None:
            observer.remove()
        for p, grad, flag in zip(params, saved_grads, saved_flags):
            p.grad = grad
            p.requires_grad_(flag)
        restore_modes(modes)
    return stats


def statistics_for(needs, model: nn.Module, graph: DependencyGraph, task, *, threshold: float = 0.0,
                   progress: bool = True, desc: str = "scoring") -> Statistics | None:
    """The statistics that criteria with ``needs`` (a :class:`~neuroprune.core.criteria.registry.Needs`)
    read, from one pass over ``task``'s calibration batches; ``None`` when they read none."""
    if not (needs.activations or needs.gradients or needs.gram):
        return None
    return collect_statistics(model, graph, task.calibration_batches(), task.loss, activations=needs.activations,
                              gradients=needs.gradients, per_weight=needs.per_weight, gram=needs.gram,
                              threshold=threshold, progress=progress, desc=desc,
                              token_mask=token_mask_of(task))
