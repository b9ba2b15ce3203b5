"""Settings of a pruning run, validated up front with every problem reported at once.

Example:
    >>> PruneConfig(ratio=0.5).steps
    1
    >>> try:
    ...     PruneConfig(ratio=1.5, steps=0)
    ... except Exception as error:
    ...     print(error)
    invalid configuration: ratio must lie in [0, 1), got 1.5; steps must be >= 1, got 0
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError, NeuropruneError
from .policy import LayerPolicy

SCOPES = ("local", "global")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class PruneConfig:
    """How :func:`neuroprune.prune` scores, removes, validates and recovers."""

    criterion: str = field(default="rank", metadata={"help": "importance criterion (see `neuroprune criteria`)"})
    criterion_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "options of the criterion"})
    ratio: float | None = field(default=0.5, metadata={"help": "fraction of prunable neurons to remove, in [0, 1)"})
    threshold: float | None = field(default=None, metadata={"help": "remove neurons whose normalised score is below this"})
    scope: str = field(default="local", metadata={"help": "'local': the ratio in every layer; 'global': across layers"})
    steps: int = field(default=1, metadata={"help": "iterations to reach the target"})
    tolerance: float = field(default=0.02, metadata={"help": "largest validation drop a step may cause before it is rolled back"})
    max_retries: int = field(default=4, metadata={"help": "times a rolled-back step is retried with half as many neurons"})
    min_width: int = field(default=1, metadata={"help": "fewest neurons a layer keeps"})
    round_to: int = field(default=1, metadata={"help": "keep widths at multiples of this"})
    finetune_epochs: int = field(default=0, metadata={"help": "epochs of fine-tuning after every accepted step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "fine-tuning learning rate (Adam)"})
    distill_weight: float = field(default=0.0, metadata={"help": "fine-tune against the unpruned model's outputs, in [0, 1]"})
    distill_temperature: float = field(default=4.0, metadata={"help": "softening temperature of the distillation"})
    reconstruct: bool = field(default=False, metadata={"help": "least-squares re-fit of layers reading pruned neurons"})
    activation_threshold: float = field(default=0.0, metadata={"help": "a neuron counts as active above this value"})
    ignore: tuple[str, ...] = field(default=(), metadata={"help": "module paths to leave unpruned"})
    ignore_untraceable: bool = field(default=False, metadata={
        "help": "freeze modules that cannot be traced or followed (value-dependent control flow, unknown "
                "layers or operations) instead of stopping; the report lists them"})
    layers: tuple[LayerPolicy, ...] = field(default=(), metadata={"help": "layer-specific settings, applied in order"})
    seed: int = field(default=0, metadata={"help": "seed for random choices"})
    latency_runs: int = field(default=20, metadata={"help": "timed runs per latency measurement (median)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignore", tuple(self.ignore))
        object.__setattr__(self, "layers", tuple(LayerPolicy(**p) if isinstance(p, dict) else p for p in self.layers))
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        """Every invalid setting, as a list of sentences."""
        from .scoring import get_criterion  # imported late: scoring imports the model layers

        p = []
        if (self.ratio is None) == (self.threshold is None):
            p.append("give exactly one of ratio and threshold")
        if self.ratio is not None and not (_is_number(self.ratio) and 0 <= self.ratio < 1):
            p.append(f"ratio must lie in [0, 1), got {self.ratio}")
        if self.threshold is not None and not (_is_number(self.threshold) and math.isfinite(self.threshold) and self.threshold >= 0):
            p.append(f"threshold must be a finite number >= 0, got {self.threshold}")
        if self.scope not in SCOPES:
            p.append(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        for name, low in (("steps", 1), ("min_width", 1), ("round_to", 1), ("finetune_epochs", 0),
                          ("max_retries", 0), ("latency_runs", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                p.append(f"{name} must be >= {low}, got {value}")
        if not (_is_number(self.tolerance) and math.isfinite(self.tolerance) and self.tolerance >= 0):
            p.append(f"tolerance must be a finite number >= 0, got {self.tolerance}")
        if not (_is_number(self.learning_rate) and math.isfinite(self.learning_rate) and self.learning_rate > 0):
            p.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if not (_is_number(self.distill_weight) and 0 <= self.distill_weight <= 1):
            p.append(f"distill_weight must lie in [0, 1], got {self.distill_weight}")
        if not (_is_number(self.distill_temperature) and self.distill_temperature > 0):
            p.append(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if not (_is_number(self.activation_threshold) and math.isfinite(self.activation_threshold)):
            p.append(f"activation_threshold must be finite, got {self.activation_threshold}")
        for policy in self.layers:
            p.extend(policy.problems())
        try:
            criterion = get_criterion(self.criterion)
            criterion.check_options(dict(self.criterion_options))
            criterion.needs(dict(self.criterion_options))
        except NeuropruneError as error:
            p.append(str(error).removeprefix("invalid configuration: "))
        return p

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ignore"] = list(self.ignore)
        data["layers"] = [{k: v for k, v in asdict(p).items() if v not in (None, False)} for p in self.layers]
        return data
