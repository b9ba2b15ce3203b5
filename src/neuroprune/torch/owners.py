"""Large per-layer sums solved on one owner rank: reduce there, solve there, broadcast the answer.

A Gram matrix is inputs x inputs per layer (hidden^2: 16.8 M float64 values, 134 MB, for a 4096-wide
layer), so all-reducing every one to every rank would move and hold world-size times what the
solve needs. Instead each layer has an owner (round-robin by layer): its sums are ``reduce``-d onto
the owner, the owner solves, and only the small answer travels back (the per-unit ``obs`` scores,
or a re-fitted layer's new weights). A failure on the owner is raised on every rank.

Outside a process group every function here runs the solve in place.

Example:
    >>> import torch
    >>> solve_on_owner(0, torch.ones(2, 2), lambda total: total * 2, (2, 2)).tolist()
    [[2.0, 2.0], [2.0, 2.0]]
    >>> share_owned({"fc1": 1.0}, None)
    {'fc1': 1.0}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from neuroprune.core.statistics import Statistics
from neuroprune.torch.distributed import _device, active, rank, sync_errors, world_size
from neuroprune.torch.distributed import gram_owner as owner_of  # round-robin by layer  # noqa: F401


def solve_on_owner(owner: int, sums: torch.Tensor, solve: Callable[[torch.Tensor], torch.Tensor],
                   shape: tuple[int, ...]) -> torch.Tensor:
    """Sum ``sums`` over the ranks onto ``owner`` (float64), run ``solve`` on the total there and
    return its answer (float64, ``shape``) on every rank, on ``sums``' device."""
    if not active():
        return solve(sums)
    sync_errors()
    device = _device()
    total = sums.to(device=device, dtype=torch.float64).contiguous()
    dist.reduce(total, dst=owner)
    answer, error = None, None
    if rank() == owner:
        try:
            answer = solve(total.to(sums.device))
        except Exception as failure:  # raised on every rank by sync_errors
            error = failure
    sync_errors(error)
    out = (answer.to(device=device, dtype=torch.float64).contiguous() if answer is not None
           else torch.empty(shape, dtype=torch.float64, device=device))
    dist.broadcast(out, src=owner)
    return out.to(sums.device)


def share_owned(mine: dict[Any, Any], error: BaseException | None = None) -> dict[Any, Any]:
    """Every rank's ``mine`` (results of the jobs it owns) merged, on every rank; a rank that
    passes ``error`` makes every rank raise it (see :func:`~neuroprune.torch.distributed.sync_errors`)."""
    if not active():
        if error is not None:
            raise error
        return dict(mine)
    sync_errors(error)
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, mine)
    merged: dict[Any, Any] = {}
    for part in parts:
        for name, value in part.items():
            merged.setdefault(name, value)
    return merged


def gather_grams(stats: Statistics) -> Statistics:
    """Every Gram matrix on every rank (for checks and debugging; a pass keeps each on its owner)."""
    if not active() or not stats.gram_owners:
        return stats
    sync_errors()
    for key, owner in sorted(stats.gram_owners.items()):
        axis = stats.axis(*key)
        box = [axis.gram.cpu() if rank() == owner else None]
        dist.broadcast_object_list(box, src=owner, device=_device())
        axis.gram = box[0]
    stats.gram_owners = {}
    return stats
