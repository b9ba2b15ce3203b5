"""The pruning plan: what was kept of every layer, relative to the original model.

A plan is plain JSON (no module objects), so it replays onto a freshly built original
architecture, by this library or by another frontend. Plans compose: pruning a pruned model adds
a step whose positions are mapped back to the original ones.

Example:
    >>> plan = PruningPlan().compose({"fc1": {"out": [0, 2, 3]}}, {"fc1": "Linear"}, {"fc1": {"out": 4}})
    >>> plan.compose({"fc1": {"out": [1, 2]}}, {"fc1": "Linear"}, {"fc1": {"out": 3}}).modules["fc1"]["axes"]["out"]
    {'size': 4, 'keep': [2, 3]}
    >>> plan.keep()["fc1"]["out"]
    array([0, 2, 3])
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neuroprune.core.backend import Keep, as_keep
from neuroprune.core.errors import PlanError

PLAN_FORMAT = "neuroprune-plan"
PLAN_VERSION = 1


@dataclass
class PruningPlan:
    """``modules[path] = {"type": class name, "axes": {axis: {"size": original, "keep": [...]}}}``."""

    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    adapter: str = "fx"

    def compose(self, step: Mapping[str, Mapping[str, Any]], module_types: dict[str, str], axis_sizes: dict[str, dict[str, int]]) -> PruningPlan:
        """A new plan: this one followed by ``step`` (keep positions of the current model: numpy
        arrays, lists, or any array numpy can read)."""
        modules = copy.deepcopy(self.modules)
        for path, axes in step.items():
            entry = modules.setdefault(path, {"type": module_types[path], "axes": {}})
            for axis, kept in axes.items():
                current = entry["axes"].get(axis)
                kept_list = [int(i) for i in np.asarray(kept, dtype=np.int64).tolist()]
                if current is None:
                    entry["axes"][axis] = {"size": int(axis_sizes[path][axis]), "keep": kept_list}
                else:
                    entry["axes"][axis] = {"size": current["size"], "keep": [current["keep"][i] for i in kept_list]}
        return PruningPlan(modules, self.adapter)

    def keep(self) -> Keep:
        """Keep positions as numpy int64 arrays, ready for a backend's ``apply_keep``."""
        return as_keep({path: {axis: spec["keep"] for axis, spec in entry["axes"].items()}
                        for path, entry in self.modules.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "adapter": self.adapter, "modules": self.modules}

    @classmethod
    def from_dict(cls, data: Any) -> PruningPlan:
        """Read a plan, refusing other formats, future versions and malformed entries."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise PlanError(f"not a neuroprune plan (expected format {PLAN_FORMAT!r})")
        version = data.get("version")
        if not _is_int(version) or version > PLAN_VERSION or version < 1:
            raise PlanError(f"plan version {version!r} is not supported; this neuroprune reads versions 1..{PLAN_VERSION}")
        modules = data.get("modules")
        problems = []
        if not isinstance(modules, dict):
            raise PlanError("plan has no 'modules' mapping")
        for path, entry in modules.items():
            if not path:
                problems.append("module path '': the whole model is not a layer; paths name a submodule, e.g. 'fc1'")
                continue
            axes = entry.get("axes") if isinstance(entry, dict) else None
            if not isinstance(axes, dict) or not isinstance(entry.get("type"), str):
                problems.append(f"{path}: needs 'type' and 'axes'")
                continue
            for axis, spec in axes.items():
                if not _valid_axis(spec):
                    problems.append(f"{path}.{axis}: 'size' must be a positive integer and 'keep' must list "
                                    "increasing positions in [0, size)")
        if problems:
            raise PlanError("malformed plan: " + "; ".join(problems))
        adapter = data.get("adapter", "fx")
        if not isinstance(adapter, str):
            raise PlanError("plan 'adapter' must be a name")
        return cls(modules, adapter)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a position


def _valid_axis(spec: Any) -> bool:
    if not isinstance(spec, dict) or not _is_int(spec.get("size")) or not isinstance(spec.get("keep"), list):
        return False
    keep, size = spec["keep"], spec["size"]
    return (bool(keep) and all(_is_int(i) and 0 <= i < size for i in keep)
            and all(a < b for a, b in zip(keep, keep[1:])))
