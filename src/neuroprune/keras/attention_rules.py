"""Layer rules of ``MultiHeadAttention`` (heads) and ``EinsumDense`` (plain projections).

``MultiHeadAttention`` keeps its weights in sublayers (``query``, ``key``, ``value``,
``attention_output``), named by :func:`~neuroprune.keras.layers.weight_names` as ``query/kernel``,
...: query/key/value kernels are ``(in, heads, head_dim)``, their biases ``(heads, head_dim)``, the
output kernel ``(heads, value_dim, out)``. Its axes: ``heads`` (config ``num_heads``), the query,
key and value feature axes (``in``, ``key_in``, ``value_in``: their sizes follow the inputs) and
the output features ``out`` (config ``output_shape``, or the query's width when that is ``None``).
A head's rows are every q/k/v column of that head. ``EinsumDense`` in a plain projection is a
``Dense`` whose width is ``output_shape[-1]``.

Example:
    >>> import numpy as np
    >>> rule = ATTENTION_RULES["MultiHeadAttention"]
    >>> kernel = np.zeros((8, 2, 4))                      # (in, heads, head_dim)
    >>> [view.rows(kernel).shape for view in rule.incoming("heads")]
    [(2, 32), (2, 32), (2, 32)]
    >>> config = {"output_shape": [6]}
    >>> rule.resize_config(config, "out", 4); config
    {'output_shape': [4]}
"""

from __future__ import annotations

from typing import Any

from neuroprune.keras.layers import _PROJECTION, LayerRule, RowsView, _rows_along

_QKV = ("query", "key", "value")
_HEADS = {**{f"{p}/kernel": 1 for p in _QKV}, **{f"{p}/bias": 0 for p in _QKV}, "attention_output/kernel": 0}
_MHA_WEIGHTS = {
    "heads": _HEADS,
    "in": {"query/kernel": 0},
    "key_in": {"key/kernel": 0},
    "value_in": {"value/kernel": 0},
    "out": {"attention_output/kernel": -1, "attention_output/bias": -1},
}
#: the input axis each projection reads
_READS = {"in": "query/kernel", "key_in": "key/kernel", "value_in": "value/kernel"}


def resize_output_shape(config: dict[str, Any], size: int) -> None:
    """Write ``size`` as the last entry of ``config["output_shape"]`` (an int or a list); ``None``
    stays (the width then follows the input)."""
    shape = config.get("output_shape")
    if isinstance(shape, int):
        config["output_shape"] = size
    elif shape is not None:
        config["output_shape"] = [*list(shape)[:-1], size]


class AttentionRule(LayerRule):
    """Heads and feature axes of ``MultiHeadAttention`` (see the module docstring)."""

    def resize_config(self, config: dict[str, Any], axis: str, size: int) -> None:
        if axis == "out":
            resize_output_shape(config, size)
        elif axis == "heads":
            config["num_heads"] = size

    def incoming(self, axis: str, kernel_shape: tuple[int, ...] = ()) -> list[RowsView]:
        if axis == "heads":  # every q/k/v column of the head
            return [RowsView(f"{p}/kernel", _rows_along(1)) for p in _QKV]
        if axis == "out":
            return [RowsView("attention_output/kernel", _rows_along(-1))]
        return []

    def outgoing(self, axis: str) -> list[RowsView]:
        if axis == "heads":
            return [RowsView("attention_output/kernel", _rows_along(0))]
        if axis in _READS:
            return [RowsView(_READS[axis], _rows_along(0))]
        return []


class EinsumProjectionRule(LayerRule):
    """``EinsumDense`` as a ``Dense``: the width is the last entry of ``output_shape``."""

    def resize_config(self, config: dict[str, Any], axis: str, size: int) -> None:
        if axis == "out":
            resize_output_shape(config, size)


ATTENTION_RULES: dict[str, LayerRule] = {
    "MultiHeadAttention": AttentionRule(("MultiHeadAttention",), _MHA_WEIGHTS, {"heads": "num_heads"}, observed="in"),
    "EinsumDense": EinsumProjectionRule(("EinsumDense",), _PROJECTION, {"out": "output_shape", "in": None},
                                        observed="in"),
}
