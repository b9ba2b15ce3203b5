"""Work that only one process can do: each job runs on the rank that holds its data, all get the results.

Under torch.distributed the Gram matrices of the ``obs`` criterion are summed onto one owner rank
per layer (:attr:`~neuroprune.core.statistics.Statistics.gram_owners`) instead of onto every rank.
The solve that needs a Gram matrix therefore runs on its owner, and the per-unit results travel
to every rank (the backend's ``share_owned``). In one process every job simply runs here.

Example:
    >>> from neuroprune.core.statistics import Statistics
    >>> class Data:
    ...     stats, backend, model = Statistics(), None, None
    >>> run_on_owners(Data(), {"fc1": (("fc1", "in"), lambda: 3.0)})
    {'fc1': 3.0}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from neuroprune.core.backend import backend_for


def run_on_owners(data: Any, jobs: dict[Any, tuple[tuple[str, str], Callable[[], Any]]]) -> dict[Any, Any]:
    """``{name: job()}`` for ``jobs`` (name -> (statistics key, job)), each job run on the rank that
    owns its key (``data.stats.gram_owners``) and its result shared with every rank. A job that
    fails on its owner raises the same error on every rank."""
    owners = getattr(data.stats, "gram_owners", None) or {}
    if not owners:
        return {name: job() for name, (_, job) in jobs.items()}
    if data.backend is None:
        data.backend = backend_for(data.model)
    me, _ = data.backend.world()
    mine: dict[Any, Any] = {}
    error = None
    try:
        for name, (key, job) in jobs.items():
            if owners.get(key, me) == me:
                mine[name] = job()
    except Exception as failure:  # raised on every rank by share_owned
        error = failure
    shared = data.backend.share_owned(mine, error)
    return {name: shared[name] for name in jobs}
