"""Fingerprints of a run's starting point: the model's weights and the task's data.

A checkpoint stores them, so that ``--resume`` with other weights or other data is refused
instead of silently mixing two runs.

Example:
    >>> import torch.nn as nn
    >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    >>> fingerprint_model(a) == fingerprint_model(a), fingerprint_model(a) == fingerprint_model(b)
    (True, False)
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from neuroprune.core.tasks import capabilities_of


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` (tensors, arrays, text, numbers, lists, dicts, nested) to ``digest``, type-tagged."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, np.ndarray):
        digest.update(f"A{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=str):
            _feed(digest, str(key))
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        text = repr(value).encode("utf-8", "surrogatepass")
        digest.update(f"S{len(text)}:".encode() + text)


def fingerprint_values(*values: Any) -> str:
    """A sha256 (hex) of nested tensors, arrays, text and numbers.

    Example:
        >>> fingerprint_values([1, "a"]) == fingerprint_values([1, "a"]) != fingerprint_values([1, "b"])
        True
    """
    digest = hashlib.sha256()
    for value in values:
        _feed(digest, value)
    return digest.hexdigest()


def fingerprint_model(model: nn.Module) -> str:
    """A sha256 of the model's ``state_dict``: names, dtypes, shapes and exact values."""
    return fingerprint_values(dict(model.state_dict()))


def fingerprint_data(task: Any) -> str:
    """A sha256 of the data a task prunes with.

    A task that declares ``fingerprint()`` (both built-in tasks do) gives its own; any other is
    fingerprinted by its calibration batches and example input.
    """
    if "fingerprint" in capabilities_of(task):
        return task.fingerprint()
    return fingerprint_values(task.calibration_batches(), task.example_input())
