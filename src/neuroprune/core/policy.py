"""Layer-specific settings: per-name patterns and per-layer-type rules.

A :class:`LayerPolicy` matches groups by a shell-style pattern on the group name or any of its
producing modules' paths (``"layer4.*"``), and/or by the producing layer's type (``"Conv2d"``,
``"LSTM"``, ``"MultiheadAttention"``). Policies apply in order; a later match overrides the
fields it sets.

Example:
    >>> import torch, torch.nn as nn
    >>> from neuroprune.torch.graph.discover import discover
    >>> from neuroprune.core.config import PruneConfig
    >>> graph = discover(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(1, 4))
    >>> config = PruneConfig(layers=(LayerPolicy(layer_type="Linear", ratio=0.25), LayerPolicy(pattern="2", ignore=True)))
    >>> {name: (s.ratio, s.ignore) for name, s in resolve_policies(graph, config).items()}
    {'0': (0.25, False), '2': (0.25, True)}
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, field, fields

from neuroprune.core.errors import ConfigError, SettingsWarning
from neuroprune.core.groups import DependencyGraph


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class LayerPolicy:
    """Settings for the groups matching ``pattern`` and/or ``layer_type``."""

    pattern: str | None = field(default=None, metadata={"help": "shell pattern on group names / module paths"})
    layer_type: str | None = field(default=None, metadata={"help": "class name of the producing layer"})
    ratio: float | None = field(default=None, metadata={"help": "fraction of this layer's neurons to remove"})
    criterion: str | None = field(default=None, metadata={"help": "criterion for this layer"})
    min_width: int | None = field(default=None, metadata={"help": "fewest neurons this layer keeps"})
    ignore: bool = field(default=False, metadata={"help": "leave this layer unpruned"})

    @classmethod
    def keys(cls) -> list[str]:
        """The field names a policy takes."""
        return [f.name for f in fields(cls)]

    def describe(self) -> str:
        parts = [f"pattern={self.pattern!r}" if self.pattern else "", f"type={self.layer_type!r}" if self.layer_type else ""]
        return "layer policy " + " ".join(p for p in parts if p)

    def problems(self) -> list[str]:
        from neuroprune.core.criteria import criterion_names

        p = []
        where = self.describe()
        for name in ("pattern", "layer_type"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                p.append(f"{where}: {name} must be a string, got {value!r}")
        if not self.pattern and not self.layer_type:
            p.append("a layer policy needs a pattern or a layer_type")
        if self.ratio is not None and not (_is_number(self.ratio) and 0 <= self.ratio < 1):
            p.append(f"{where}: ratio must lie in [0, 1), got {self.ratio!r}")
        if self.criterion is not None and self.criterion not in criterion_names():
            p.append(f"{where}: unknown criterion {self.criterion!r}; known: {', '.join(criterion_names())}")
        if self.min_width is not None and (not isinstance(self.min_width, int) or isinstance(self.min_width, bool)
                                           or self.min_width < 1):
            p.append(f"{where}: min_width must be an integer >= 1, got {self.min_width!r}")
        if not isinstance(self.ignore, bool):
            p.append(f"{where}: ignore must be true or false, got {self.ignore!r}")
        return p

    def matches(self, name: str, paths: list[str], types: list[str]) -> bool:
        if self.pattern and not any(fnmatch.fnmatchcase(n, self.pattern) for n in [name, *paths]):
            return False
        return not self.layer_type or self.layer_type in types


@dataclass(frozen=True)
class GroupSettings:
    """What applies to one group after all policies: ``ratio`` None means the run's target."""

    ratio: float | None
    criterion: str
    min_width: int
    ignore: bool


def resolve_policies(graph: DependencyGraph, config) -> dict[str, GroupSettings]:
    """Settings of every group; a policy that matches no group is an error (typos are caught)."""
    settings = {}
    used = [False] * len(config.layers)
    for group in graph.groups:
        paths = [path for path, _ in group.producers]
        types = [graph.module_types.get(path, "") for path in paths]
        ratio, criterion, min_width, ignore = None, config.criterion, config.min_width, False
        for i, policy in enumerate(config.layers):
            if policy.matches(group.name, paths, types):
                used[i] = True
                ratio = policy.ratio if policy.ratio is not None else ratio
                criterion = policy.criterion or criterion
                min_width = policy.min_width or min_width
                ignore = ignore or policy.ignore
        settings[group.name] = GroupSettings(ratio, criterion, min_width, ignore)
    unmatched = [p.describe() for p, hit in zip(config.layers, used) if not hit]
    if unmatched:
        names = ", ".join(g.name for g in graph.groups)
        raise ConfigError([f"{d} matches no prunable layer (layers: {names})" for d in unmatched])
    _warn_if_nothing_can_go(graph, settings)
    return settings


def _warn_if_nothing_can_go(graph: DependencyGraph, settings: dict[str, GroupSettings]) -> None:
    """A :class:`~neuroprune.core.errors.SettingsWarning` when ``min_width`` keeps every layer whole."""
    open_groups = [g for g in graph.groups if not settings[g.name].ignore]
    if open_groups and all(settings[g.name].min_width >= g.size for g in open_groups):
        widest = max(open_groups, key=lambda g: g.size)
        warnings.warn(SettingsWarning(
            f"min_width {settings[widest.name].min_width} is at or above the width of every prunable layer (widest: "
            f"{widest.name} with {widest.size}), so nothing can be removed; lower --min-width"), stacklevel=3)
