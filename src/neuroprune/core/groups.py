"""Groups of neurons: the result of dependency discovery.

A *unit* is one neuron: every parameter slice that must go when it goes (a Linear row, the
matching BatchNorm entries, the columns of every layer that reads it, across residual adds and
concatenations). A *group* is a set of units computed by the same layers, e.g. the hidden layer
``fc1`` of an MLP or all channels tied together by the residual adds of a ResNet stage.

Example:
    >>> import numpy as np
    >>> member = GroupMember("fc1", "out", np.array([0, 1, 2]))
    >>> group = Group("fc1", 3, [member], np.array([True, True, True]), [("fc1", "out")])
    >>> group.removed_positions(member, np.array([1]))
    array([1])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neuroprune.core.backend import Keep
from neuroprune.core.errors import PlanError


@dataclass
class GroupMember:
    """One module axis touched by a group; ``unit_of`` maps each axis position to a unit (or -1)."""

    path: str
    axis: str
    unit_of: np.ndarray


@dataclass
class Group:
    """A set of units pruned by the same rule (one "layer" in reports)."""

    name: str
    size: int
    members: list[GroupMember]
    prunable: np.ndarray  # bool per unit; False for units tied to something fixed
    producers: list[tuple[str, str]]
    frozen_reasons: list[str] = field(default_factory=list)

    @property
    def prunable_count(self) -> int:
        return int(self.prunable.sum())

    def removed_positions(self, member: GroupMember, units: np.ndarray) -> np.ndarray:
        """Axis positions of ``member`` that belong to ``units``."""
        return np.nonzero(np.isin(member.unit_of, units))[0]


@dataclass
class DependencyGraph:
    """Groups of a model, plus what could not be pruned and why."""

    groups: list[Group]
    frozen: dict[str, list[str]]
    module_types: dict[str, str]
    axis_sizes: dict[str, dict[str, int]]
    #: modules frozen by ``ignore_untraceable`` -> why they could not be followed
    frozen_modules: dict[str, str] = field(default_factory=dict)

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise PlanError(f"no prunable group named {name!r}; groups: {', '.join(g.name for g in self.groups)}")

    def keep_indices(self, removal: dict[str, np.ndarray]) -> Keep:
        """Positions to keep on every module axis once the units in ``removal`` are gone.

        Args:
            removal: group name -> indices of the units to remove.

        Returns:
            module path -> axis -> sorted positions to keep (numpy int64; only axes that lose something).
        """
        dropped: dict[tuple[str, str], np.ndarray] = {}
        for name, units in removal.items():
            units = np.asarray(units, dtype=np.int64)
            if len(units) == 0:
                continue
            group = self.group(name)
            if units.min() < 0 or units.max() >= group.size:
                raise PlanError(f"group {name!r} has {group.size} units; got index {int(units.max())}")
            if not group.prunable[units].all():
                raise PlanError(f"group {name!r}: units {units[~group.prunable[units]].tolist()} are fixed")
            gone = np.zeros(group.size, dtype=bool)
            gone[units] = True
            for member in group.members:
                # same as group.removed_positions(member, units), without np.isin's sort
                positions = np.nonzero(gone[np.clip(member.unit_of, 0, group.size - 1)]
                                       & (member.unit_of >= 0) & (member.unit_of < group.size))[0]
                if len(positions):
                    key = (member.path, member.axis)
                    if key not in dropped:
                        dropped[key] = np.zeros(self.axis_sizes[member.path][member.axis], dtype=bool)
                    mask = dropped[key]
                    mask[positions[positions < len(mask)]] = True
        keep: Keep = {}
        for (path, axis), mask in dropped.items():
            kept = np.nonzero(~mask)[0]
            if not len(kept):
                raise PlanError(f"{path}: removing every position of axis {axis!r}")
            keep.setdefault(path, {})[axis] = kept.astype(np.int64)
        return keep
