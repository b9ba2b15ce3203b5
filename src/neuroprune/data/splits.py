"""The :class:`DataSplits` container every loader returns, and the rules all loaders share:
sample layouts, split fractions, per-feature standardisation, batching.

Example:
    >>> import torch
    >>> xs = torch.arange(6.0).reshape(3, 2); ys = torch.arange(3)
    >>> [len(b) for b, _ in iterate_batches(xs, ys, batch_size=2)]
    [2, 1]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from neuroprune.core.errors import DataError

LAYOUTS = ("flat", "image", "sequence")
"""How samples are shaped: ``flat`` (N, F), ``image`` (N, C, H, W), ``sequence`` (N, T, F)."""


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Train, validation and test tensors of one data set.

    Inputs are float32, labels int64. ``standardized`` says whether the inputs were centred and
    scaled with the training split's statistics (digits: always; ``.npz``: only when asked).
    ``eq=False``: tensors have no single truth value, so splits compare by identity.

    Example:
        >>> from neuroprune.data import load_digits
        >>> splits = load_digits(layout="sequence")
        >>> splits.input_shape
        (8, 8)
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    standardized: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, without the batch dimension."""
        return tuple(self.x_train.shape[1:])

    def describe(self) -> dict:
        """What a report records about the data: spec, standardisation and split sizes.

        Example:
            >>> from neuroprune.data import load_digits
            >>> load_digits().describe()
            {'spec': 'digits', 'standardized': True, 'train': 1221, 'val': 216, 'test': 360, 'num_classes': 10}
        """
        return {"spec": self.name, "standardized": self.standardized, "train": len(self.x_train),
                "val": len(self.x_val), "test": len(self.x_test), "num_classes": self.num_classes}


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x_batch, y_batch)`` pairs; the last batch may be smaller.

    Arguments are checked at the call, not at the first ``next``.

    Args:
        x: Inputs, first dimension the samples.
        y: Labels, as many as ``x`` has samples.
        batch_size: Samples per batch, >= 1.
        shuffle: Visit samples in ``torch.randperm`` order drawn from ``generator``.
        generator: Random source for shuffling; ``None`` uses torch's global one.

    Example:
        >>> xs = torch.arange(5.0).unsqueeze(1); ys = torch.arange(5)
        >>> [len(b) for b, _ in iterate_batches(xs, ys, batch_size=2)]
        [2, 2, 1]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} samples but y has {len(y)}")
    order = torch.randperm(len(x), generator=generator) if shuffle else None
    return _batches(x, y, batch_size, order)


def _batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, order: torch.Tensor | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(x), batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            yield x[index], y[index]


def check_layout(layout: str) -> None:
    """Raise :class:`DataError` unless ``layout`` is one of :data:`LAYOUTS`."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")


def check_fraction(name: str, value: float) -> None:
    """Raise :class:`DataError` unless ``value`` lies strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DataError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Centre and scale every array per feature with the mean and std of ``train``."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[np.ptp(train, axis=0) == 0] = 1.0  # constant features: keep them, just centred
    return [((part - mean) / std).astype(np.float32) for part in (train, *others)]


def check_seed(seed: int) -> None:
    """Raise :class:`DataError` unless ``seed`` is an integer in [0, 2**32) (what the splits accept)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise DataError(f"seed must be an integer in [0, 2**32), got {seed!r}")
