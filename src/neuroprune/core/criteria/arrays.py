"""Arrays of any framework, reduced where they live: only per-unit vectors reach the host.

Weight rows (:class:`~neuroprune.core.backend.WeightRows`) and statistics arrive as the
framework's own arrays: a torch tensor on the model's GPU, a numpy array from Keras. Criteria
reduce them with the array API standard (through ``array_api_compat``, which knows numpy and
torch without this module importing either framework), so the work runs on the arrays' device,
and bring the per-row results to the host as numpy float64.

Example:
    >>> import numpy as np
    >>> row_sums(np.array([[1.0, -2.0], [3.0, 4.0]]), power=2).tolist()
    [5.0, 25.0]
    >>> to_host([1, 2]).dtype
    dtype('float64')
"""

from __future__ import annotations

from typing import Any

import array_api_compat as compat
import numpy as np


def namespace(array: Any):
    """The array-API namespace of ``array`` (numpy's, torch's, ...)."""
    return compat.array_namespace(array)


def _is_array(value: Any) -> bool:
    return compat.is_array_api_obj(value) and not isinstance(value, (int, float))


def to_host(values: Any) -> np.ndarray:
    """``values`` (any framework's array, a list or a number) as a numpy float64 array on the host."""
    if not _is_array(values):
        return np.asarray(values, dtype=np.float64)
    host = compat.to_device(values, "cpu")
    xp = namespace(host)
    if host.dtype != xp.float64:  # also widens bfloat16, which numpy cannot read
        host = xp.astype(host, xp.float64)
    return np.asarray(host, dtype=np.float64)


def as_float(rows: Any) -> Any:
    """``rows`` as float32 (float64 stays float64), on its own device."""
    xp = namespace(rows)
    return rows if rows.dtype in (xp.float32, xp.float64) else xp.astype(rows, xp.float32)


def row_sums(rows: Any, power: float = 1.0) -> np.ndarray:
    """``sum_j |rows[i, j]| ** power`` per row, reduced on the rows' device, as host float64."""
    xp = namespace(rows)
    values = xp.abs(as_float(rows))
    if power == 2:
        values = values * values
    elif power != 1:
        values = values ** power
    return to_host(xp.sum(values, axis=1, dtype=xp.float64))


def like(values: Any, rows: Any) -> Any:
    """``values`` as an array of ``rows``' kind on ``rows``' device (moved only if it is elsewhere)."""
    xp = namespace(rows)
    device = compat.device(rows)
    if _is_array(values) and namespace(values) is xp:
        return compat.to_device(values, device)
    return xp.asarray(to_host(values), device=device)


def take_columns(values: Any, columns: Any, rows: Any) -> Any:
    """``values[columns]`` on ``rows``' device: a per-input-unit vector spread over the row columns.

    ``columns`` is an integer array (column ``c`` reads input unit ``columns[c]``) or a function
    of the per-input vector (the older form, kept for frontends that still give one).
    """
    values = like(values, rows)
    if callable(columns):
        return columns(values)
    xp = namespace(rows)
    index = xp.asarray(np.asarray(columns, dtype=np.int64), device=compat.device(rows))
    return xp.take(values, index, axis=0)
