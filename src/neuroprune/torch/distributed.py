"""Many processes with torch.distributed: one pruning job over the ranks of a process group.

Each rank takes whole calibration batches (:func:`shard`), the statistics travel as one flat
float64 and one int64 ``all_reduce`` (:func:`all_reduce_statistics`), and every decision is rank
0's, broadcast (:func:`agree`). Only rank 0 writes files (:func:`is_writer`, then :func:`barrier`).

A rank that fails must not leave the others waiting: every collective here starts with an
all-reduced error flag, and code run under :func:`guarded` sends its exception into that flag, so
every rank raises the same error (that of the lowest failing rank) instead of hanging.

Outside a process group (or with one rank) every function here is the identity, so the
single-process path pays nothing.

Example:
    >>> agree({"accepted": True})
    {'accepted': True}
    >>> (rank(), world_size(), is_writer())
    (0, 1, True)
    >>> shard([0, 1, 2, 3, 4])
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib
import itertools
import os
import pickle
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from neuroprune.core.statistics import GRADIENT_FIELDS, Statistics, merge_schemas

#: seconds a collective may wait for the other ranks before the process group gives up
DEFAULT_TIMEOUT_S = 600.0


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_writer() -> bool:
    """True on the one rank that writes outputs and checkpoints (rank 0)."""
    return rank() == 0


def init_from_env(timeout_s: float | None = None) -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1 in the environment) with the
    gloo backend (nccl when CUDA is available) and a collective timeout of ``timeout_s`` (default
    ``NEUROPRUNE_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`); returns True if a group is active."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        seconds = timeout_s if timeout_s is not None else float(os.environ.get("NEUROPRUNE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))
    if rank() != 0:  # every rank meets the same conditions: rank 0 says it once
        from neuroprune.core.errors import NeuropruneWarning

        warnings.filterwarnings("ignore", category=NeuropruneWarning)
    return active()


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# -- failures -------------------------------------------------------------------------------
def _portable(error: BaseException) -> dict[str, Any]:
    state = {}
    for name, value in vars(error).items():
        try:
            pickle.dumps(value)
            state[name] = value
        except Exception:  # an attribute that cannot travel stays behind
            pass
    return {"module": type(error).__module__, "name": type(error).__qualname__, "message": str(error), "state": state}


def _rebuild(portable: dict[str, Any], source: int) -> BaseException:
    error: BaseException = RuntimeError(f"{portable['module']}.{portable['name']}: {portable['message']}")
    try:
        cls = functools.reduce(getattr, portable["name"].split("."), importlib.import_module(portable["module"]))
        if isinstance(cls, type) and issubclass(cls, Exception):
            error = cls.__new__(cls)
            Exception.__init__(error, portable["message"])
            error.__dict__.update(portable["state"])
    except Exception:  # a class this rank cannot build: the RuntimeError keeps the message
        pass
    error.failed_rank = source
    return error


def sync_errors(error: BaseException | None = None) -> None:
    """A collective every rank calls: all-reduce "did anything fail"; if a rank passed an
    ``error``, every rank raises the error of the lowest failing rank (the same on all)."""
    if not active():
        if error is not None:
            raise error
        return
    flag = torch.tensor([0 if error is None else 1], dtype=torch.int64, device=_device())
    dist.all_reduce(flag)
    if int(flag.item()) == 0:
        return
    errors: list[Any] = [None] * world_size()
    dist.all_gather_object(errors, None if error is None else _portable(error))
    source = next(i for i, item in enumerate(errors) if item is not None)
    shared = error if source == rank() and error is not None else _rebuild(errors[source], source)
    shared._neuroprune_shared = True
    shared.failed_rank = source
    if shared is error:
        raise error
    raise shared from None


@contextmanager
def guarded(*, barrier_at_end: bool = False) -> Iterator[None]:
    """Run a block whose failure on one rank must reach every rank: an exception inside it joins
    the other ranks' next collective (every collective here starts with :func:`sync_errors`) and
    is raised on all of them. ``barrier_at_end`` adds that collective when the block succeeds (so
    a failure after the block's last collective cannot leave a rank waiting)."""
    if not active():
        yield
        return
    try:
        yield
    except Exception as error:
        if getattr(error, "_neuroprune_shared", False):
            raise
        sync_errors(error)
        raise  # not reached: sync_errors raises
    if barrier_at_end:
        sync_errors()


def collective(function: Callable) -> Callable:
    """Decorate a function every rank calls together: see :func:`guarded` (with a final barrier)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with guarded(barrier_at_end=True):
            return function(*args, **kwargs)

    return wrapper


def on_writer(function: Callable, *args, **kwargs) -> Any:
    """Run ``function`` on rank 0 only while the other ranks wait (then a barrier): its result on
    rank 0, ``None`` elsewhere. A failure on rank 0 is raised on every rank."""
    with guarded(barrier_at_end=True):
        return function(*args, **kwargs) if is_writer() else None


def barrier() -> None:
    """Wait for every rank (and raise any rank's failure on all of them)."""
    sync_errors()


# -- decisions and data -----------------------------------------------------------------------
def agree(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (decisions are made once and shared, never recomputed)."""
    if not active():
        return value
    sync_errors()
    box = [value]
    dist.broadcast_object_list(box, src=0, device=_device())
    return box[0]


def shard(batches: Iterable[Any]) -> Iterable[Any]:
    """This rank's share of ``batches``: ``batches[rank::world]``, whole batches (splitting one
    batch would change gradient statistics, whose loss is a batch mean)."""
    if not active():
        return batches
    if hasattr(batches, "__getitem__") and hasattr(batches, "__len__"):
        return [batches[i] for i in range(rank(), len(batches), world_size())]
    return itertools.islice(batches, rank(), None, world_size())


def all_reduce_sums(values: Sequence[float]) -> list[float]:
    """``values`` summed over the ranks (one float64 ``all_reduce``), on every rank: how a metric's
    numerator and denominator from each rank's share of the batches become the metric of all."""
    if not active():
        return [float(v) for v in values]
    sync_errors()
    total = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device())
    dist.all_reduce(total)
    return total.tolist()


def all_reduce_statistics(stats: Statistics, *, gradients_reduced: bool = False) -> Statistics:
    """Sum ``stats`` over the ranks, in place: the schemas are exchanged once, then one float64
    and one int64 ``all_reduce`` carry every field in a fixed order (a rank that lacks a field adds
    zeros). ``gradients_reduced`` (a DDP model, whose gradients are already averaged) leaves the
    gradient fields as they are."""
    if not active():
        return stats
    sync_errors()
    schemas: list[Any] = [None] * world_size()
    dist.all_gather_object(schemas, stats.schema())
    schema = merge_schemas(schemas)
    if gradients_reduced:
        schema = [entry for entry in schema if entry.field not in GRADIENT_FIELDS]
    grams = [entry for entry in schema if entry.field == "gram"]
    schema = [entry for entry in schema if entry.field != "gram"]
    floats, ints = stats.flat_arrays(schema, like=torch.zeros(0, device=_device()))
    dist.all_reduce(floats)
    dist.all_reduce(ints)
    local = {key: value.device for key, value in stats.weight_grad_abs.items()}
    stats.load_flat(schema, floats, ints)
    for key, value in stats.weight_grad_abs.items():  # back onto the device they were collected on
        stats.weight_grad_abs[key] = value.to(local.get(key, value.device))
    _reduce_grams_to_owners(stats, grams)
    return stats


def gram_owner(index: int) -> int:
    """The rank that holds the ``index``-th Gram matrix (in schema order): round-robin over the ranks."""
    return index % world_size()


def _reduce_grams_to_owners(stats: Statistics, grams: list) -> None:
    """Sum each Gram matrix onto its owner rank only (``reduce``, not ``all_reduce``: they are
    inputs x inputs per layer); the other ranks drop theirs and note the owner in ``gram_owners``."""
    for index, entry in enumerate(grams):
        axis = stats.axis(*entry.key)
        owner = gram_owner(index)
        mine = axis.gram
        device = _device()
        total = (torch.zeros(entry.shape, dtype=torch.float64, device=device) if mine is None
                 else mine.to(device=device, dtype=torch.float64).contiguous())
        dist.reduce(total, dst=owner)
        axis.gram = total.to(mine.device if mine is not None else total.device) if rank() == owner else None
        stats.gram_owners[tuple(entry.key)] = owner


def tensor_hashes(model: torch.nn.Module) -> list[tuple[str, str]]:
    """(name, sha256 of shape, dtype and bytes) of every tensor of the model's state, by name."""
    hashes = []
    for name, tensor in sorted(model.state_dict().items()):
        digest = hashlib.sha256(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
        if tensor.numel():
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        hashes.append((name, digest.hexdigest()))
    return hashes


def state_hash(model: torch.nn.Module) -> str:
    """A hash of the model's state (names, shapes, bytes): equal on every rank after identical surgery."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


def check_same_state(model: torch.nn.Module, when: str = "") -> None:
    """Debug check (a collective): raise the same :class:`~neuroprune.core.errors.NeuropruneError`
    on every rank if the model's state differs between ranks, naming the first differing tensor."""
    if not active():
        return
    sync_errors()
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, tensor_hashes(model))
    reference = dict(everyone[0])
    for other, hashes in enumerate(everyone[1:], start=1):
        if hashes == everyone[0]:
            continue
        mine = dict(hashes)
        names = sorted(set(reference) | set(mine))
        first = next(name for name in names if reference.get(name) != mine.get(name))
        what = "is missing on one of them" if first not in reference or first not in mine else "differs"
        from neuroprune.core.errors import NeuropruneError

        raise NeuropruneError(f"ranks 0 and {other} diverged{' ' + when if when else ''}: tensor {first!r} {what} "
                              "(every rank must apply the same surgery to the same weights)")


#: set to 1 to compare a hash of the model's state across ranks after every surgery (slow: debugging)
DEBUG_ENV = "NEUROPRUNE_DEBUG_DIST"


def debug_checks() -> bool:
    """True when ``NEUROPRUNE_DEBUG_DIST=1``: :func:`check_after_surgery` then compares the ranks."""
    return os.environ.get(DEBUG_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


def check_after_surgery(model: torch.nn.Module) -> None:
    """With ``NEUROPRUNE_DEBUG_DIST=1`` in a process group, :func:`check_same_state` after a surgery."""
    if debug_checks() and active():
        check_same_state(model, when="after a surgery")


def worst_exit_status(code: int) -> int:
    """The largest exit status over the ranks, on every rank (a collective; then leaves the group)."""
    if not active():
        return code
    worst = torch.tensor([int(code)], dtype=torch.int64, device=_device())
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    dist.destroy_process_group()
    return int(worst.item())
