"""Settings of a pruning run, validated up front with every problem reported at once.

Example:
    >>> (PruneConfig(ratio=0.5).steps, PruneConfig(ratio=0.5).judge)
    ('auto', 'after')
    >>> try:
    ...     PruneConfig(ratio=1.5, steps=0)
    ... except Exception as error:
    ...     print(error)
    invalid configuration: ratio must lie in [0, 1), got 1.5; steps must be >= 1, got 0 (or 'auto' for an automatic schedule)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from neuroprune.core.errors import ConfigError, NeuropruneError
from neuroprune.core.policy import LayerPolicy

SCOPES = ("local", "global")
JUDGES = ("after", "before")
#: how fine-tuning / distillation runs over the ranks of a process group (see docs/distributed.md)
RECOVER_SHARDINGS = ("ddp", "fsdp", "none")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _quote(value: Any) -> str:
    """A bad value as the user wrote it, with its type where that is the problem: ``'3' (a string)``."""
    kinds = {str: "a string", bool: "a boolean", list: "a list", tuple: "a list", dict: "a table"}
    kind = kinds.get(type(value))
    return f"{value!r} ({kind})" if kind else str(value)


def _bad(name: str, value: Any, rule: str, integer: bool = False) -> str:
    """``steps must be >= 1, got 0``; a value of the wrong type also says which type was wanted:
    ``steps must be an integer >= 1, got '3' (a string)``."""
    if integer and not (isinstance(value, int) and not isinstance(value, bool)) or not _is_number(value):
        wanted = "an integer" if integer else "a number"
        condition = rule.removeprefix("be ").removeprefix("a finite number").removeprefix("lie ").strip()
        wanted = ("a finite number" if rule.startswith("be a finite") else wanted) + (f" {condition}" if condition else "")
        return f"{name} must be {wanted}, got {_quote(value)}"
    return f"{name} must {rule}, got {value}"


@dataclass(frozen=True)
class PruneConfig:
    """How :func:`neuroprune.prune` scores, removes, validates and recovers."""

    criterion: str = field(default="rank", metadata={"help": "importance criterion (see `neuroprune criteria`)"})
    criterion_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "options of the criterion"})
    ratio: float | None = field(default=0.5, metadata={"help": "fraction of prunable neurons to remove, in [0, 1)"})
    threshold: float | None = field(default=None, metadata={"help": "remove neurons whose normalised score is below this"})
    scope: str = field(default="local", metadata={"help": "'local': the ratio in every layer; 'global': across layers"})
    steps: int | str = field(default="auto", metadata={"help": "steps to reach the target: a number, or 'auto' (one "
                             "step, split into smaller ones whenever an attempt is rolled back)"})
    tolerance: float = field(default=0.02, metadata={"help": "largest validation drop a step may cause before it is rolled back"})
    judge: str = field(default="after", metadata={"help": "'after': validate an attempt after its recovery "
                       "(reconstruction, fine-tuning); 'before': right after masking (the write-up's order)"})
    max_retries: int = field(default=4, metadata={"help": "rolled-back attempts in a row (each removing half as "
                             "much more) before the run stops"})
    max_attempts: int | None = field(default=None, metadata={"help": "most attempts in all (default: the scheduled "
                                     "steps + 8)"})
    max_seconds: float | None = field(default=None, metadata={"help": "no new attempt starts after this many seconds"})
    min_width: int = field(default=1, metadata={"help": "fewest neurons a layer keeps"})
    round_to: int = field(default=1, metadata={"help": "keep widths at multiples of this"})
    finetune_epochs: int = field(default=0, metadata={"help": "epochs of fine-tuning per attempt, before it "
                                 "is judged (judge='after'), or after every accepted step (judge='before')"})
    learning_rate: float = field(default=1e-3, metadata={"help": "fine-tuning learning rate (Adam)"})
    distill_weight: float = field(default=0.0, metadata={"help": "fine-tune against the unpruned model's outputs, in [0, 1]"})
    distill_temperature: float = field(default=4.0, metadata={"help": "softening temperature of the distillation"})
    recover_sharding: str = field(default="ddp", metadata={"help": "over several processes (torchrun): 'ddp' "
                                  "(each rank a slice of every batch), 'fsdp' (FSDP2, also shards parameters, "
                                  "gradients and optimizer state) or 'none' (every rank trains on whole batches)"})
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
        problems = []
        ignore = self.ignore
        if isinstance(ignore, str):  # one module path, never its letters
            ignore = (ignore,)
        elif isinstance(ignore, (list, tuple, set, frozenset)):
            ignore = tuple(ignore)
        object.__setattr__(self, "ignore", ignore)
        layers = self.layers
        if isinstance(layers, (LayerPolicy, dict)):
            layers = (layers,)
        if isinstance(layers, (list, tuple)):
            converted = []
            for i, policy in enumerate(layers):
                if isinstance(policy, dict):
                    try:
                        policy = LayerPolicy(**policy)
                    except TypeError as error:
                        problems.append(f"layers[{i}]: {error}; allowed keys: {', '.join(LayerPolicy.keys())}")
                        continue
                converted.append(policy)
            layers = tuple(converted)
        object.__setattr__(self, "layers", layers)
        problems += self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        """Every invalid setting, as a list of sentences."""
        from neuroprune.core.criteria import get_criterion  # imported late: scoring imports the model layers

        p = []
        if (self.ratio is None) == (self.threshold is None):
            p.append("give exactly one of ratio and threshold")
        if self.ratio is not None and not (_is_number(self.ratio) and 0 <= self.ratio < 1):
            p.append(_bad("ratio", self.ratio, "lie in [0, 1)"))
        if self.threshold is not None and not (_is_number(self.threshold) and math.isfinite(self.threshold) and self.threshold >= 0):
            p.append(_bad("threshold", self.threshold, "be a finite number >= 0"))
        if self.scope not in SCOPES:
            p.append(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.steps != "auto" and (not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1):
            p.append(_bad("steps", self.steps, "be >= 1", integer=True) + " (or 'auto' for an automatic schedule)")
        if self.judge not in JUDGES:
            p.append(f"judge must be one of {', '.join(JUDGES)}, got {self.judge!r}")
        if self.max_attempts is not None and (not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool)
                                              or self.max_attempts < 1):
            p.append(f"max_attempts must be None or an integer >= 1, got {self.max_attempts!r}")
        if self.max_seconds is not None and not (_is_number(self.max_seconds) and self.max_seconds > 0):
            p.append(f"max_seconds must be None or a number > 0, got {self.max_seconds!r}")
        for name, low in (("min_width", 1), ("round_to", 1), ("finetune_epochs", 0),
                          ("max_retries", 0), ("latency_runs", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                p.append(_bad(name, value, f"be >= {low}", integer=True))
        if not (_is_number(self.tolerance) and math.isfinite(self.tolerance) and self.tolerance >= 0):
            p.append(_bad("tolerance", self.tolerance, "be a finite number >= 0"))
        if not (_is_number(self.learning_rate) and math.isfinite(self.learning_rate) and self.learning_rate > 0):
            p.append(_bad("learning_rate", self.learning_rate, "be > 0"))
        if not (_is_number(self.distill_weight) and 0 <= self.distill_weight <= 1):
            p.append(_bad("distill_weight", self.distill_weight, "lie in [0, 1]"))
        if not (_is_number(self.distill_temperature) and math.isfinite(self.distill_temperature)
                and self.distill_temperature > 0):
            p.append(_bad("distill_temperature", self.distill_temperature, "be > 0"))
        if self.recover_sharding not in RECOVER_SHARDINGS:
            p.append(f"recover_sharding must be one of {', '.join(RECOVER_SHARDINGS)}, got {self.recover_sharding!r}")
        if not (_is_number(self.activation_threshold) and math.isfinite(self.activation_threshold)):
            p.append(_bad("activation_threshold", self.activation_threshold, "be a finite number"))
        for name in ("reconstruct", "progress"):
            if not isinstance(getattr(self, name), bool):
                p.append(f"{name} must be true or false, got {_quote(getattr(self, name))}")
        if not isinstance(self.ignore, tuple) or not all(isinstance(path, str) for path in self.ignore):
            p.append(f"ignore must be a list of module paths (strings), got {_quote(self.ignore)}")
        if not isinstance(self.layers, tuple) or not all(isinstance(policy, LayerPolicy) for policy in self.layers):
            p.append(f"layers must be a list of LayerPolicy objects or dicts, got {_quote(self.layers)}")
        else:
            for policy in self.layers:
                p.extend(policy.problems())
        if not isinstance(self.criterion_options, dict):
            p.append(f"criterion_options must be a table of option names to values, got {_quote(self.criterion_options)}")
        elif not isinstance(self.criterion, str):
            p.append(f"criterion must be a name (string), got {_quote(self.criterion)}")
        else:
            try:
                criterion = get_criterion(self.criterion)
                criterion.check_options(dict(self.criterion_options))
                criterion.needs(dict(self.criterion_options))
            except NeuropruneError as error:
                p.append(str(error).removeprefix("invalid configuration: "))
            except (TypeError, ValueError) as error:
                p.append(f"options of criterion {self.criterion!r}: {error}")
        return p

    @property
    def scheduled_steps(self) -> int:
        """Steps planned before any rollback: ``steps``, or 1 for ``"auto"``."""
        return 1 if self.steps == "auto" else int(self.steps)

    @property
    def attempt_limit(self) -> int:
        """Most attempts the loop makes: ``max_attempts``, or the scheduled steps + 8."""
        return self.max_attempts if self.max_attempts is not None else self.scheduled_steps + 8

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ignore"] = list(self.ignore)
        data["layers"] = [{k: v for k, v in asdict(p).items() if v not in (None, False)} for p in self.layers]
        return data
