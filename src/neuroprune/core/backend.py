"""The backend seam: everything the framework-free core needs from a deep-learning framework.

The core (statistics, criteria, selection, plans, the loop's state machine, budgets, reports)
works on plain numbers and numpy arrays. A framework plugs in by implementing :class:`Backend`
for its model type; :func:`backend_for` picks the one that accepts a model. Torch models get
``neuroprune.torch.backend.TorchBackend`` (Hugging Face models a subclass of it), Keras 3
models ``neuroprune.keras.backend.KerasBackend``.

Indices crossing the seam are numpy ``int64`` arrays: a :data:`Keep` maps module path -> axis
-> sorted positions to keep. Axis names come from a fixed vocabulary (:data:`AXES`), so a plan
written by one frontend reads the same in another.

Example:
    >>> class Toy:
    ...     name = "toy"
    ...     def matches(self, model): return isinstance(model, str)
    >>> register_backend(Toy(), replace=True).name
    'toy'
    >>> backend_for("a model").name
    'toy'
    >>> unregister_backend("toy")
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from neuroprune.core.errors import DuplicateNameError, UnsupportedModelError

#: module path -> axis -> positions to keep (sorted numpy int64)
Keep = dict[str, dict[str, np.ndarray]]

#: the axis vocabulary of plans and groups
AXES = {
    "out": "output units of a layer (Linear rows, conv output channels, RNN hidden units)",
    "in": "input units a layer reads (Linear columns, conv input channels)",
    "heads": "attention heads (and the q/k/v/out slices that belong to them)",
    "kv_heads": "key/value head groups of grouped-query attention",
    "features": "per-channel parameters of a normalisation or an embedding dimension",
}


@dataclass(frozen=True)
class WeightRows:
    """One weight tensor seen as ``units x fan-in`` rows of one axis (what criteria read).

    ``rows`` is an array of the framework's own kind (a torch tensor on the model's device, a
    numpy array, ...); criteria reduce it with the array API (``array_api_compat``) and only bring
    per-unit vectors to the host. ``input_axis`` names the axis whose units the columns read
    (``None`` if none is observed); ``input_columns`` maps a per-input-unit vector onto the columns.
    """

    name: str
    rows: Any
    input_axis: str | None = None
    input_columns: Any = None


@runtime_checkable
class MaskHandle(Protocol):
    """Masks put on a model by :meth:`Backend.mask`: undone bit for bit, or made permanent;
    ``reapply`` zeroes the masked weights again after an optimiser step (gradual pruning)."""

    def remove(self) -> None: ...
    def commit(self) -> None: ...
    def reapply(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """What a framework implements. ``Model`` is the framework's model type; ``task`` is a
    :class:`neuroprune.core.tasks.Task`; ``config`` a :class:`~neuroprune.core.config.PruneConfig`."""

    name: str  # written into plans as their "adapter"

    def matches(self, model: Any) -> bool:
        """True if this backend handles ``model``."""

    # -- model lifecycle -------------------------------------------------------------
    def clone(self, model: Any) -> Any:
        """An independent copy (the user's model is never modified)."""

    # -- discovery and weights -------------------------------------------------------
    def discover(self, model: Any, example: Any, *, ignore: Iterable[str] = (), ignore_untraceable: bool = False):
        """The model's :class:`~neuroprune.core.groups.DependencyGraph`."""

    def weight_rows(self, model: Any, path: str, axis: str, *, outgoing: bool = False) -> list[WeightRows]:
        """The weights that make up (and with ``outgoing`` also read) the units of ``path``'s ``axis``."""

    def collect_statistics(self, model: Any, graph, task, needs, *, threshold: float, progress: bool, desc: str):
        """One calibration pass: a :class:`~neuroprune.core.statistics.Statistics` of float64 sums."""

    # -- masks, surgery, recovery ----------------------------------------------------
    def mask(self, model: Any, keep: Keep) -> MaskHandle:
        """Zero what ``keep`` drops, in place, restorably."""

    def apply_keep(self, model: Any, keep: Keep) -> Any:
        """Remove what ``keep`` drops, physically, in place, and bring the model's own metadata
        (configuration, head counts) in line with the new shapes; returns the model."""

    def reconstruct(self, student: Any, before: Any, keep: Keep, task, config) -> None:
        """Refit the layers that read pruned units to reproduce ``before``'s outputs."""

    def recover(self, model: Any, task, config, teacher: Any, desc: str) -> int:
        """Fine-tune (or distil from ``teacher``) for ``config.finetune_epochs``; returns the epochs run.
        A task that declares ``own_recovery`` recovers itself (``task.finetune``)."""

    def snapshot(self) -> Any:
        """The process's random state (an object with ``restore()``), given back on a roll-back."""

    # -- many processes ---------------------------------------------------------------
    def agree(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (the identity in one process): the loop passes every
        decision (units to remove, accept / roll back) through it, so all ranks stay in step."""

    def collective(self) -> Any:
        """A context manager around work every process runs together: one process's exception is
        raised on all of them, none is left waiting (``contextlib.nullcontext()`` in one process)."""

    def world(self) -> tuple[int, int]:
        """``(rank, number of processes)``; ``(0, 1)`` in one process."""

    # -- measuring -------------------------------------------------------------------
    def measure(self, model: Any, task, config) -> dict[str, Any]:
        """Parameters, FLOPs, size, latency and the task metric on the test split."""

    def measure_cost(self, model: Any, task, quantity: str) -> float:
        """One of ``"params"``, ``"flops"``, ``"latency"`` (what budgets aim at)."""

    def cost_model(self, model: Any, graph, task, quantity: str, *, skip=frozenset(), min_widths=None) -> Any:
        """An analytic ``quantity`` over group widths (``.value({group: kept width})``), or ``None``."""

    # -- files -----------------------------------------------------------------------
    def save(self, folder, model: Any, plan, report: dict | None, *, overwrite: bool = False,
             extra: dict[str, Any] | None = None) -> None:
        """Write the model, plan and report atomically (see docs/file-format.md), with the files
        this backend's models need (e.g. ``config.json``)."""

    def fingerprint(self, model: Any, task) -> dict[str, str]:
        """What a checkpoint must match to be resumed: texts for the starting weights and the data."""

    def check_checkpoint(self, folder) -> None:
        """Refuse a path that is neither new, empty, nor an earlier checkpoint."""

    def save_checkpoint(self, folder, model: Any, state, config, fingerprint: dict[str, str] | None) -> None:
        """Replace the checkpoint in ``folder`` with ``model`` and the loop state (and the random state)."""

    def load_checkpoint(self, folder, original: Any, config, fingerprint: dict[str, str] | None) -> tuple[Any, Any]:
        """``(model, loop state)`` saved in ``folder``; the random state is restored."""


_BACKENDS: dict[str, Any] = {}
#: backends that register themselves when their module is imported (the torch backend keeps
#: writing "fx" as the plan's adapter name, so old plans stay readable)
_KNOWN = {"hf": "neuroprune.hf.adapter", "keras": "neuroprune.keras.backend", "fx": "neuroprune.torch.backend"}


def register_backend(backend: Any, *, replace: bool = False) -> Any:
    """Make ``backend`` available by name; a name is registered once unless ``replace=True``."""
    if backend.name in _BACKENDS and not replace:
        raise DuplicateNameError("backend", backend.name)
    _BACKENDS[backend.name] = backend
    return backend


def unregister_backend(name: str) -> None:
    _BACKENDS.pop(name, None)


def _import_known(names: Sequence[str]) -> None:
    for name in names:
        if name not in _BACKENDS:
            try:
                importlib.import_module(_KNOWN[name])
            except ImportError:  # the framework is not installed
                pass


#: a backend module is imported once its framework is (a model exists, so its framework is loaded)
_FRAMEWORKS = {"fx": "torch", "hf": "transformers", "keras": "keras"}


def backend_for(model: Any) -> Any:
    """The registered backend that accepts ``model``; the latest registered is asked first, so a
    specialised backend (``hf``, a subclass of the torch one) wins over the generic one. Backends
    of frameworks not imported yet are never loaded (a torch user never imports keras)."""
    _import_known([name for name, framework in _FRAMEWORKS.items() if framework in sys.modules])
    for backend in reversed(list(_BACKENDS.values())):
        if backend.matches(model):
            return backend
    raise UnsupportedModelError(f"no backend accepts a {type(model).__module__}.{type(model).__qualname__}; "
                                f"supported: torch.nn.Module (incl. Hugging Face models), keras.Model")


def get_backend(name: str) -> Any:
    """The backend registered as ``name`` (plans name the backend that wrote them)."""
    if name not in _BACKENDS and name in _KNOWN:
        _import_known([name])
    if name not in _BACKENDS:
        from neuroprune.core.errors import UnknownNameError

        raise UnknownNameError("backend", name, _BACKENDS)
    return _BACKENDS[name]


def as_keep(keep: dict[str, dict[str, Any]]) -> Keep:
    """``keep`` with every index list as a sorted numpy int64 array."""
    return {path: {axis: np.asarray(kept, dtype=np.int64) for axis, kept in axes.items()} for path, axes in keep.items()}


@contextmanager
def masked(backend: Any, model: Any, keep: Keep) -> Iterator[Any]:
    """``model`` with what ``keep`` drops masked for the ``with`` block, then restored bit for bit.

    Example:
        >>> class Handle:
        ...     def remove(self): print("restored")
        ...     def commit(self): pass
        >>> class Toy:
        ...     def mask(self, model, keep): return Handle()
        >>> with masked(Toy(), "model", {}) as model:
        ...     print(model)
        model
        restored
    """
    handle = backend.mask(model, keep)
    try:
        yield model
    finally:
        handle.remove()
