"""neuroprune: importance-based structured pruning that makes models physically smaller.

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

from .config import PruneConfig
from .errors import (CheckpointError, ConfigError, DataError, NeuropruneError, NonFiniteError, NoSignalError,
                     NoPrunableLayerError, OutputExistsError, OutputPathError, PlanError, PruningTargetError,
                     UnknownNameError, UnsupportedModuleError)
from .graph.discover import discover
from .io import apply_plan, load, load_weights, read_plan, save
from .plan import PruningPlan
from .schedule import PruneResult, prune, score_groups
from .scoring import criterion_names
from .stats import collect_statistics
from .surgery.masks import apply_masks
from .task import ClassificationTask
from .zoo import build_model

__version__ = "0.1.0"

__all__ = [
    "PruneConfig", "PruneResult", "PruningPlan", "ClassificationTask", "prune", "discover", "collect_statistics",
    "score_groups", "criterion_names", "apply_masks", "apply_plan", "save", "load", "load_weights", "read_plan",
    "build_model", "NeuropruneError", "ConfigError", "UnknownNameError", "UnsupportedModuleError", "DataError",
    "NonFiniteError", "NoSignalError", "NoPrunableLayerError", "PruningTargetError", "PlanError", "CheckpointError",
    "OutputExistsError", "OutputPathError", "__version__",
]
