"""neuroprune: importance-based structured pruning that makes models physically smaller.

The public names below load on first use (PEP 562), so ``import neuroprune`` stays cheap and
``neuroprune.core`` (the torch-free maths) can be imported without torch.

Example:
    >>> import neuroprune as npr
    >>> from neuroprune.data import load_digits
    >>> task = npr.ClassificationTask(load_digits())
    >>> result = npr.prune(npr.build_model("mlp"), task, npr.PruneConfig(ratio=0.5, tolerance=1.0,
    ...                    progress=False, latency_runs=1))
    >>> result.report["after"]["params"] < result.report["before"]["params"]
    True
"""

from __future__ import annotations

import importlib

from neuroprune import _moved

__version__ = "0.1.0"

#: public name -> module that defines it
_PUBLIC = {
    "PruneConfig": "neuroprune.core.config",
    "PruningPlan": "neuroprune.core.plan",
    "PruneResult": "neuroprune.core.loop", "prune": "neuroprune.core.loop", "score_groups": "neuroprune.core.loop",
    "criterion_names": "neuroprune.core.criteria",
    "discover": "neuroprune.torch.graph.discover",
    "apply_plan": "neuroprune.torch.io", "load": "neuroprune.torch.io", "load_weights": "neuroprune.torch.io",
    "read_plan": "neuroprune.torch.io", "save": "neuroprune.torch.io",
    "collect_statistics": "neuroprune.torch.stats",
    "apply_masks": "neuroprune.torch.masks",
    "ClassificationTask": "neuroprune.tasks.classification",
    "build_model": "neuroprune.models.zoo",
    **{name: "neuroprune.core.errors" for name in (
        "NeuropruneError", "ConfigError", "UnknownNameError", "UnsupportedModuleError", "DataError", "NonFiniteError",
        "NoSignalError", "NoPrunableLayerError", "PruningTargetError", "PlanError", "CheckpointError",
        "OutputExistsError", "OutputPathError")},
}

__all__ = [*_PUBLIC, "__version__"]

_moved.install()


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'neuroprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
