"""Channel ids, couplings and frozen ids, turned into the core's :class:`DependencyGraph`.

Every channel a layer produces gets an integer id; operations that tie channels (a residual
``Add``) couple ids; operations that fix them (model inputs and outputs, an unsupported layer)
freeze them. Coupled ids form one unit; units computed by the same producers form one group,
named after its first producer (``"dense_1"``, or ``"block/dense_1"`` in a nested model).
The same logic as the torch side's discovery, on numpy only.

Example:
    >>> ids = ChannelIds()
    >>> a = ids.producer_axis("d1", "out", 3)
    >>> ids.bind_axis("d2", "in", a)
    >>> graph = ids.build({"d1": "Dense", "d2": "Dense"}, {"d1": {"out": 3}, "d2": {"in": 3}})
    >>> [(g.name, g.size, [m.path + ":" + m.axis for m in g.members]) for g in graph.groups]
    [('d1', 3, ['d1:out', 'd2:in'])]
"""

from __future__ import annotations

import numpy as np
from neuroprune.core.channels import ChannelIds as CoreChannelIds
from neuroprune.core.groups import DependencyGraph, Group, GroupMember


class ChannelIds(CoreChannelIds):
    """:class:`neuroprune.core.channels.ChannelIds` that also builds the Keras model's groups."""

    def fixed(self, n: int, reason: str) -> np.ndarray:
        """Fresh ids for ``n`` channels that may not be pruned."""
        ids = self.new_ids(n)
        self.freeze(ids, reason)
        return ids

    # --- groups ------------------------------------------------------------------------------
    def build(self, module_types: dict[str, str], axis_sizes: dict[str, dict[str, int]]) -> DependencyGraph:
        """The groups: units ordered by first appearance along the producers."""
        unit = self.unit_labels()
        # group of a unit: the units of one producer axis belong together; couplings merge groups
        group_of_unit: dict[int, int] = {}
        parent: list[int] = []

        def find(g: int) -> int:
            while parent[g] != g:
                parent[g] = parent[parent[g]]
                g = parent[g]
            return g

        for key in self.producers:
            units = unit[self.axes[key]]
            known = [group_of_unit[int(u)] for u in units if int(u) in group_of_unit]
            g = find(known[0]) if known else len(parent)
            if not known:
                parent.append(g)
            for other in known:
                parent[find(other)] = g
            for u in units:
                group_of_unit.setdefault(int(u), g)
        order: list[int] = []  # group roots by first appearance
        index_in_group: dict[int, int] = {}
        sizes: dict[int, int] = {}
        producers: dict[int, list[tuple[str, str]]] = {}
        for key in self.producers:
            for u in unit[self.axes[key]]:
                root = find(group_of_unit[int(u)])
                if root not in sizes:
                    order.append(root)
                    sizes[root] = 0
                if int(u) not in index_in_group:
                    index_in_group[int(u)] = sizes[root]
                    sizes[root] += 1
            root = find(group_of_unit[int(unit[self.axes[key]][0])]) if len(self.axes[key]) else None
            if root is not None:
                producers.setdefault(root, []).append(key)
        frozen_units: dict[int, set[str]] = {}
        for ids, reason in self.frozen:
            for u in np.unique(unit[ids]):
                frozen_units.setdefault(int(u), set()).add(reason)
        groups, fixed = [], {}
        for root in order:
            name = _group_name(producers[root][0])
            prunable = np.ones(sizes[root], dtype=bool)
            reasons: set[str] = set()
            members = []
            for (path, axis), ids in self.axes.items():
                units = unit[ids]
                unit_of = np.array([index_in_group[int(u)] if int(u) in group_of_unit and
                                    find(group_of_unit[int(u)]) == root else -1 for u in units], dtype=np.int64)
                if (unit_of >= 0).any():
                    members.append(GroupMember(path, axis, unit_of))
            for u, index in index_in_group.items():
                if find(group_of_unit[u]) == root and u in frozen_units:
                    prunable[index] = False
                    reasons |= frozen_units[u]
            why = sorted(reasons)
            if not prunable.any():
                fixed[name] = why
                continue
            groups.append(Group(name, sizes[root], members, prunable, producers[root], why))
        return DependencyGraph(groups, fixed, module_types, axis_sizes)


def _group_name(producer: tuple[str, str]) -> str:
    path, axis = producer
    return path if axis == "out" else f"{path}:{axis}"
