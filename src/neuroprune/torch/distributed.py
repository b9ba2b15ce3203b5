"""Many processes with torch.distributed: one pruning job over the ranks of a process group.

Outside a process group (or with one rank) every function here is the identity, so the
single-process path pays nothing.

Example:
    >>> agree({"accepted": True})
    {'accepted': True}
    >>> (rank(), world_size())
    (0, 1)
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def agree(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (decisions are made once and shared, never recomputed)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
