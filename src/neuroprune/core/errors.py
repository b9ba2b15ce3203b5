"""Exceptions raised by neuroprune.

Every error names the problem and, where there is a closed set of valid choices, lists them.
All derive from :class:`NeuropruneError`, so ``except NeuropruneError`` catches any of them.

Example:
    >>> from neuroprune.core.errors import ConfigError
    >>> str(ConfigError(["ratio must lie in [0, 1), got 1.5"]))
    'invalid configuration: ratio must lie in [0, 1), got 1.5'
"""

from __future__ import annotations

from collections.abc import Iterable


class NeuropruneError(Exception):
    """Base class of every error neuroprune raises on purpose."""


class ConfigError(NeuropruneError, ValueError):
    """One or more configuration values are invalid; ``problems`` lists every one of them."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))


class UnknownNameError(NeuropruneError, KeyError):
    """A name (criterion, zoo model, data set, …) is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class DuplicateNameError(ConfigError):
    """A registry (criteria, layer handlers, flow rules, backends, zoo models, …) already holds
    ``name``; every registry refuses a second entry unless asked with ``replace=True``.

    Example:
        >>> str(DuplicateNameError("criterion", "magnitude"))
        "invalid configuration: criterion 'magnitude' is already registered; pass replace=True to replace it"
    """

    def __init__(self, kind: str, name: str):
        self.kind, self.name = kind, name
        super().__init__([f"{kind} {name!r} is already registered; pass replace=True to replace it"])


class UnsupportedModuleError(NeuropruneError):
    """The dependency graph met a module or operation it cannot prune through.

    ``module`` is the path of the module the problem lies in (``None`` for the model's own
    forward); ``ignore_untraceable`` leaves that module alone instead of raising.
    """

    def __init__(self, message: str, module: str | None = None):
        super().__init__(message)
        self.module = module or None


class UnsupportedModelError(NeuropruneError, TypeError):
    """No backend accepts the model (neither a torch.nn.Module nor a keras.Model), or the backend
    cannot handle this kind of model (e.g. a subclassed Keras model)."""


class DataError(NeuropruneError, ValueError):
    """Calibration, validation or training data is missing, empty or malformed."""


class NonFiniteError(NeuropruneError, FloatingPointError):
    """Gradients, statistics or scores contained NaN or infinity."""


class NoSignalError(NeuropruneError, ValueError):
    """A criterion gave every neuron of a group the same score, so it cannot rank them."""


class NoPrunableLayerError(NeuropruneError):
    """The model has no neuron group that may be pruned."""


class PruningTargetError(NeuropruneError, ValueError):
    """The requested target cannot be met without emptying a layer."""


class PlanError(NeuropruneError, ValueError):
    """A pruning plan does not match the model it is applied to."""


class CheckpointError(NeuropruneError):
    """A saved folder or weights file is missing, corrupt, pickled, or does not match the model."""


class OutputExistsError(NeuropruneError, FileExistsError):
    """The output folder already exists and overwriting was not asked for."""


class ModelFileError(NeuropruneError):
    """A model file (``path/to/file.py:build_fn``) cannot be imported or its builder fails."""


class DataMismatchError(DataError):
    """The data does not fit the model: input shape, or labels beyond the model's outputs."""


class NeuropruneWarning(UserWarning):
    """Base class of every warning neuroprune gives; the CLI prints each as one line.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warnings.warn(DataWarning("the validation split has only 3 samples"))
        >>> [type(w.message).__name__ for w in caught]
        ['DataWarning']
    """


class DataWarning(NeuropruneWarning):
    """The data is usable but suspicious: one class, a tiny validation split, huge features, …"""


class WeightsWarning(NeuropruneWarning):
    """Loaded weights were converted on the way in (e.g. integer tensors cast to float)."""


class SettingsWarning(NeuropruneWarning):
    """A setting is valid but cannot act as asked (e.g. ``min_width`` above every layer's width)."""


class MeasurementWarning(NeuropruneWarning):
    """A measurement is too noisy to trust (e.g. latency from fewer than 20 runs)."""


class DependencyError(NeuropruneError, ImportError):
    """An optional package (e.g. ``transformers``) cannot be imported; the message says why."""


class ReportError(NeuropruneError, ValueError):
    """A report (dict or ``report.json``) or the scores handed to a report writer are malformed."""


class ExportError(NeuropruneError):
    """Exporting a model failed, or the exported file does not compute what the model computes."""


class OutputPathError(NeuropruneError, ValueError):
    """An output path cannot be used: its parent is missing or read-only, a file stands where a folder
    is wanted (or the reverse), it is the current folder, or it would replace one of the inputs."""
