"""Sum per-position values of module axes into per-unit values of a group.

Example:
    >>> import numpy as np
    >>> from neuroprune.core.groups import Group, GroupMember
    >>> g = Group("fc1", 2, [GroupMember("fc1", "out", np.array([0, 1, 1]))], np.array([True, True]), [])
    >>> sum_to_units(g, {("fc1", "out"): np.array([1.0, 2.0, 3.0])}).tolist()
    [1.0, 5.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from neuroprune.core.criteria.arrays import to_host
from neuroprune.core.groups import Group


def sum_to_units(group: Group, values: dict[tuple[str, str], Any]) -> np.ndarray:
    """For every unit, the sum of ``values`` (any array, one per position) over the positions of
    all member axes it owns; float64 on the host."""
    total = np.zeros(group.size, dtype=np.float64)
    for member in group.members:
        per_position = values.get((member.path, member.axis))
        if per_position is None:
            continue
        inside = member.unit_of >= 0
        total += np.bincount(member.unit_of[inside], weights=to_host(per_position)[inside],
                             minlength=group.size)[:group.size]
    return total


def collect_per_position(group: Group, fn: Callable[[str, str], Any | None]) -> dict[tuple[str, str], Any]:
    """``{(path, axis): fn(path, axis)}`` over the group's members, skipping ``None``."""
    values = {}
    for member in group.members:
        value = fn(member.path, member.axis)
        if value is not None:
            values[(member.path, member.axis)] = value
    return values
