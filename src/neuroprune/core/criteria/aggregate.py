"""Sum per-position values of module axes into per-unit values of a group.

Example:
    >>> import numpy as np, torch
    >>> from neuroprune.core.groups import Group, GroupMember
    >>> g = Group("fc1", 2, [GroupMember("fc1", "out", np.array([0, 1, 1]))], np.array([True, True]), [])
    >>> sum_to_units(g, {("fc1", "out"): torch.tensor([1.0, 2.0, 3.0])})
    tensor([1., 5.])
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from neuroprune.core.groups import Group


def sum_to_units(group: Group, values: dict[tuple[str, str], torch.Tensor]) -> torch.Tensor:
    """For every unit, the sum of ``values`` over the positions of all member axes it owns."""
    total = torch.zeros(group.size, dtype=torch.float32)
    for member in group.members:
        per_position = values.get((member.path, member.axis))
        if per_position is None:
            continue
        unit_of = torch.from_numpy(member.unit_of)
        inside = unit_of >= 0
        total.index_add_(0, unit_of[inside], per_position.detach().float().cpu()[inside])
    return total


def collect_per_position(group: Group, fn: Callable[[str, str], torch.Tensor | None]) -> dict[tuple[str, str], torch.Tensor]:
    """``{(path, axis): fn(path, axis)}`` over the group's members, skipping ``None``."""
    values = {}
    for member in group.members:
        value = fn(member.path, member.axis)
        if value is not None:
            values[(member.path, member.axis)] = value
    return values
