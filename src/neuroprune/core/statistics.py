"""What a calibration pass measured: per-unit sums and counts, mergeable by addition.

Statistics are sums and counts (never running means), so passes over different data, or on
different processes, merge by adding them. The containers hold arrays of whichever framework
collected them (numpy arrays or torch tensors); this module never imports a framework.

Every field has a place in a fixed order (:meth:`Statistics.schema`), so the whole pass travels
as two flat vectors, float64 sums and int64 counts (:meth:`Statistics.flat_arrays`), and comes
back with :meth:`Statistics.load_flat`: one collective per pass when many processes share the
work. A process that saw no batch contributes zeros for fields it never created.

Example:
    >>> import numpy as np
    >>> a = Statistics(batches=1)
    >>> a.axis("fc1", "in").act_count = np.array([1, 2])
    >>> a.axis("fc1", "in").act_n = 4.0
    >>> b = Statistics(batches=1)  # a process without that axis adds zeros
    >>> schema = merge_schemas([a.schema(), b.schema()])
    >>> [(e.key, e.field, e.shape, e.dtype) for e in schema]
    [(('fc1', 'in'), 'act_count', (2,), 'int64'), (('fc1', 'in'), 'act_n', (), 'float64'), (('', ''), 'batches', (), 'int64')]
    >>> floats, ints = b.flat_arrays(schema)
    >>> floats.tolist(), ints.tolist()
    ([0.0], [0, 0, 1])
    >>> floats2, ints2 = a.flat_arrays(schema)
    >>> total = Statistics().load_flat(schema, floats + floats2, ints + ints2)
    >>> total.axes[("fc1", "in")].act_count.tolist(), total.axes[("fc1", "in")].act_n, total.batches
    ([1, 2], 4.0, 2)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from neuroprune.core.errors import NeuropruneError

#: array fields of :class:`AxisStats`, in schema order
ARRAY_FIELDS = ("act_count", "act_abs", "act_sum", "act_sq", "grad_abs", "grad_numel", "taylor", "gram")
#: fields measured on the forward pass (summed across processes even under a user's DDP model)
ACTIVATION_FIELDS = frozenset({"act_count", "act_abs", "act_n", "act_sum", "act_sq", "gram", "batches"})
#: fields read from gradients (a DDP model has already averaged them across processes)
GRADIENT_FIELDS = frozenset({"grad_abs", "grad_numel", "taylor", "weight_grad_abs"})
#: fields that are exact counts, carried as int64
COUNT_FIELDS = frozenset({"act_count", "grad_numel", "batches"})
_BATCHES_KEY = ("", "")


class SchemaEntry(NamedTuple):
    """One field of one key: ``key`` is (module path, axis) or (module path, parameter name)."""

    key: tuple[str, str]
    field: str
    shape: tuple[int, ...]
    dtype: str  # the dtype the field is stored in ("int64", "float64" or "float32")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _copy(x: Any) -> Any:
    return x.clone() if _is_torch(x) else np.array(x, copy=True)


def _plus(mine: Any, theirs: Any) -> Any:
    if _is_torch(mine):
        return mine + (theirs.to(mine.device) if _is_torch(theirs) else sys.modules["torch"].as_tensor(theirs, device=mine.device))
    return mine + (theirs.detach().cpu().numpy() if _is_torch(theirs) else theirs)


def _dtype_name(x: Any) -> str:
    return str(x.dtype).replace("torch.", "")


@dataclass
class AxisStats:
    """Sums for the positions of one module axis (each array has one entry per position)."""

    act_count: Any = None  # values above the threshold (int64)
    act_abs: Any = None  # sum of |activation|
    act_n: float = 0.0  # values observed per position
    act_sum: Any = None  # sum of activations (mean; with act_sq the variance, ``flap``)
    act_sq: Any = None  # sum of squared activations (``wanda``, ``flap``)
    grad_abs: Any = None  # sum over batches of |dL/dw| of incoming weights
    grad_numel: Any = None  # incoming weights per position, times batches (int64)
    taylor: Any = None  # sum over batches of w * dL/dw of outgoing weights
    gram: Any = None  # Linear "in" axes: sum of [x, 1]^T [x, 1] over observed rows

    def merge(self, other: AxisStats) -> None:
        """Add ``other``'s sums to these."""
        for name in ARRAY_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, _copy(theirs) if mine is None else _plus(mine, theirs))
        self.act_n += other.act_n


@dataclass
class Statistics:
    """Everything one calibration pass measured."""

    axes: dict[tuple[str, str], AxisStats] = field(default_factory=dict)
    #: (module path, parameter name) -> sum over batches of |dL/dw|, per weight (``seed`` only)
    weight_grad_abs: dict[tuple[str, str], Any] = field(default_factory=dict)
    batches: int = 0
    threshold: float = 0.0
    #: (module path, axis) -> the rank that holds its Gram matrix, when several processes share the
    #: pass (each is summed onto one owner rank only); empty: every Gram matrix is here
    gram_owners: dict[tuple[str, str], int] = field(default_factory=dict)

    def axis(self, path: str, axis: str) -> AxisStats:
        return self.axes.setdefault((path, axis), AxisStats())

    def merge(self, other: Statistics) -> Statistics:
        """Add ``other``'s sums to these (e.g. from another process); returns ``self``."""
        for key, value in other.axes.items():
            self.axis(*key).merge(value)
        for key, value in other.weight_grad_abs.items():
            mine = self.weight_grad_abs.get(key)
            self.weight_grad_abs[key] = _copy(value) if mine is None else _plus(mine, value)
        self.batches += other.batches
        return self

    def schema(self) -> list[SchemaEntry]:
        """The fields these statistics hold, in the fixed order of :func:`merge_schemas`."""
        entries = []
        for key, entry in self.axes.items():
            for name in ARRAY_FIELDS:
                value = getattr(entry, name)
                if value is not None:
                    entries.append(SchemaEntry(key, name, tuple(value.shape), _dtype_name(value)))
            entries.append(SchemaEntry(key, "act_n", (), "float64"))
        for key, value in self.weight_grad_abs.items():
            entries.append(SchemaEntry(key, "weight_grad_abs", tuple(value.shape), _dtype_name(value)))
        entries.append(SchemaEntry(_BATCHES_KEY, "batches", (), "int64"))
        return merge_schemas([entries])

    def _value(self, entry: SchemaEntry) -> Any:
        if entry.field == "batches":
            return self.batches
        if entry.field == "weight_grad_abs":
            return self.weight_grad_abs.get(entry.key)
        stats = self.axes.get(entry.key)
        return None if stats is None else getattr(stats, entry.field)

    def flat_arrays(self, schema: Sequence[SchemaEntry] | None = None, *, like: Any = None) -> tuple[Any, Any]:
        """(float64 vector, int64 vector) of every field of ``schema`` (default: :meth:`schema`),
        counts in the int64 one; a field these statistics lack adds zeros. The vectors are numpy
        arrays, or tensors on ``like``'s device when ``like`` is a torch tensor."""
        schema = self.schema() if schema is None else schema
        floats, ints = [], []
        for entry in schema:
            size = int(np.prod(entry.shape, dtype=np.int64))
            value = self._value(entry)
            out = ints if entry.field in COUNT_FIELDS else floats
            out.append((value, size))
        return _concat(floats, "float64", like), _concat(ints, "int64", like)

    def load_flat(self, schema: Sequence[SchemaEntry], floats: Any, ints: Any) -> Statistics:
        """Replace the fields named in ``schema`` by their slices of the two vectors (as written by
        :meth:`flat_arrays`), each reshaped and cast back to its dtype; returns ``self``."""
        offsets = {"float": 0, "int": 0}
        for entry in schema:
            kind = "int" if entry.field in COUNT_FIELDS else "float"
            vector = ints if kind == "int" else floats
            size = int(np.prod(entry.shape, dtype=np.int64))
            start = offsets[kind]
            offsets[kind] += size
            piece = vector[start:start + size]
            if entry.field == "batches":
                self.batches = int(piece[0])
            elif entry.field == "act_n":
                self.axis(*entry.key).act_n = float(piece[0])
            else:
                value = _cast(piece.reshape(entry.shape), entry.dtype)
                if entry.field == "weight_grad_abs":
                    self.weight_grad_abs[entry.key] = value
                else:
                    setattr(self.axis(*entry.key), entry.field, value)
        return self


def _order(entry: SchemaEntry) -> tuple:
    kind = 0 if entry.field in ARRAY_FIELDS or entry.field == "act_n" else 1 if entry.field == "weight_grad_abs" else 2
    rank = ARRAY_FIELDS.index(entry.field) if entry.field in ARRAY_FIELDS else len(ARRAY_FIELDS)
    return kind, entry.key, rank


def merge_schemas(schemas: Iterable[Sequence[SchemaEntry]]) -> list[SchemaEntry]:
    """The union of several processes' schemas in one fixed order (by kind, key, then field)."""
    seen: dict[tuple[tuple[str, str], str], SchemaEntry] = {}
    for schema in schemas:
        for entry in schema:
            entry = SchemaEntry(tuple(entry.key), entry.field, tuple(entry.shape), entry.dtype)
            known = seen.setdefault((entry.key, entry.field), entry)
            if known.shape != entry.shape:
                raise NeuropruneError(f"statistics of {'.'.join(entry.key)} ({entry.field}) have shape {entry.shape} "
                                      f"on one process and {known.shape} on another: every process must prune "
                                      "the same model")
    return sorted(seen.values(), key=_order)


def _concat(parts: list[tuple[Any, int]], dtype: str, like: Any) -> Any:
    if like is not None and _is_torch(like):
        torch = sys.modules["torch"]
        kind = getattr(torch, dtype)
        pieces = [torch.zeros(size, dtype=kind, device=like.device) if value is None
                  else torch.as_tensor(value, dtype=kind, device=like.device).reshape(-1) for value, size in parts]
        return torch.cat(pieces) if pieces else torch.zeros(0, dtype=kind, device=like.device)
    pieces = [np.zeros(size, dtype=dtype) if value is None
              else np.asarray(value.detach().cpu() if _is_torch(value) else value, dtype=dtype).reshape(-1)
              for value, size in parts]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


def _cast(value: Any, dtype: str) -> Any:
    if _is_torch(value):
        return value.to(getattr(sys.modules["torch"], dtype)).clone()
    return np.array(value, dtype=dtype, copy=True)
