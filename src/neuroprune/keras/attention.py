"""``keras.layers.MultiHeadAttention``: heads as units, and the per-head output for statistics.

Discovery (:func:`propagate_attention`): the heads are one group of their own (``num_heads``
units; head ``h`` is every q/k/v column of head ``h`` and row ``h`` of the output kernel, so
``key_dim`` never changes and the softmax scale holds). The query, key and value feature axes
read the channels they are given, and the output features are channels too: with
``output_shape=None`` they are the query's (coupled to it; a residual ``Add`` then joins them to
the stream), else ``output_shape[-1]`` new ones. Gated attention (``use_gate``), a multi-dimensional
``output_shape`` or returned attention scores keep the layer whole, with the reason.

Statistics (:class:`HeadActivations`): activation criteria on heads read the attention output
before the output projection, per head. It is recomputed from the layer's input with the layer's
own sublayers, so it is known for self-attention (query, key and value one tensor, optionally
``use_causal_mask``) without an explicit or implicit (``mask_zero``) mask; otherwise an activation
criterion gets a :class:`~neuroprune.core.errors.ConfigError` that names the layer. Weight and
gradient criteria (``magnitude``, ``gradient``, ``taylor``, ``seed``, ``rank``, ``random``) always work.

Example:
    >>> import keras, numpy as np
    >>> from neuroprune.keras.graph import discover
    >>> x = keras.Input((5, 8))
    >>> y = keras.layers.MultiHeadAttention(4, 2, name="mha")(x, x)
    >>> model = keras.Model(x, keras.layers.Dense(3, name="out")(keras.layers.Dense(6, name="ffn")(y)))
    >>> [(g.name, g.size) for g in discover(model).groups]
    [('mha:heads', 4), ('ffn', 6)]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuroprune.core.errors import ConfigError
from neuroprune.core.groups import DependencyGraph
from neuroprune.keras.grouping import ChannelIds
from neuroprune.keras.paths import layer_at

#: call arguments of MultiHeadAttention, in order
ARGUMENTS = ("query", "value", "key", "query_mask", "value_mask", "key_mask", "attention_mask")


def _is_tensor(value: Any) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def argument_positions(node: dict | None) -> dict[str, int]:
    """Which of a serialised call's tensors (args, then kwargs, in order) is which argument."""
    positions, index = {}, 0
    for name, value in zip(ARGUMENTS, (node or {}).get("args", [])):
        if _is_tensor(value):
            positions[name], index = index, index + 1
    for name, value in (node or {}).get("kwargs", {}).items():
        if _is_tensor(value):
            positions[name], index = index, index + 1
    return positions


def _keeps_whole(config: dict[str, Any], node: dict | None) -> str | None:
    shape = config.get("output_shape")
    if config.get("use_gate"):
        return "gated attention (use_gate) is not supported yet"
    if shape is not None and not isinstance(shape, int) and len(shape) != 1:
        return f"a multi-dimensional output_shape {list(shape)} is not supported"
    if (node or {}).get("kwargs", {}).get("return_attention_scores"):
        return "its attention scores are returned (they are laid out by head)"
    return None


def propagate_attention(ids: ChannelIds, call: Any) -> list[np.ndarray | None]:
    """Record a MultiHeadAttention call: its heads, its feature axes and the flow of its output."""
    from neuroprune.keras.flow import _freeze_inputs

    node = getattr(call, "node", None)
    positions = argument_positions(node)
    outputs = 2 if (node or {}).get("kwargs", {}).get("return_attention_scores") else 1
    problem = _keeps_whole(call.config, node)
    if problem is None and ("query" not in positions or "value" not in positions):
        problem = "its query and value inputs cannot be told apart"
    query = call.inputs[positions["query"]] if problem is None else None
    if problem is None and query is None:
        problem = "the width of its query is not known"
    if problem is not None:
        return _freeze_inputs(ids, call, f"MultiHeadAttention: {problem}; it is kept whole") * outputs
    value = call.inputs[positions["value"]]
    key = call.inputs[positions.get("key", positions["value"])]
    for name, index in positions.items():
        if name not in ("query", "value", "key") and call.inputs[index] is not None:
            ids.freeze(call.inputs[index], f"{call.path}: attention mask")
    for axis, flow in (("in", query), ("value_in", value), ("key_in", key)):
        if flow is not None:
            ids.bind_axis(call.path, axis, flow)
    ids.producer_axis(call.path, "heads", int(call.config["num_heads"]))
    shape = call.config.get("output_shape")
    if shape is None:
        out = ids.producer_axis(call.path, "out", len(query))
        ids.couple(out, query)  # the output is as wide as the query: both shrink together
    else:
        out = ids.producer_axis(call.path, "out", int(shape if isinstance(shape, int) else list(shape)[-1]))
    return [out] + [None] * (outputs - 1)


def _self_attention(node: Any) -> tuple[bool, bool]:
    """(observable, causal) of one call node of a MultiHeadAttention layer."""
    args, kwargs = list(node.arguments.args), dict(node.arguments.kwargs)
    query = args[0] if args else kwargs.get("query")
    value = args[1] if len(args) > 1 else kwargs.get("value")
    key = args[2] if len(args) > 2 else kwargs.get("key")
    extra = [v for v in args[3:] if v is not None] + [v for n, v in kwargs.items() if n.endswith("mask")
                                                      and n != "use_causal_mask" and v is not None]
    same = value is query and (key is None or key is query)
    implicit = getattr(query, "_keras_mask", None) is not None
    return same and not extra and not implicit, bool(kwargs.get("use_causal_mask", False))


class HeadActivations:
    """Per-head attention outputs of the MultiHeadAttention layers whose heads a group prunes.

    ``paths`` are the layers whose (query) input the probe must return; :meth:`record` turns those
    inputs into per-head statistics under the ``heads`` axis. ``required``: refuse (ConfigError)
    where the per-head output cannot be recomputed, instead of leaving it unobserved.
    """

    def __init__(self, model: Any, graph: DependencyGraph, *, required: bool):
        self.model, self.causal, self.paths = model, {}, set()
        refused = []
        for group in graph.groups:
            for member in group.members:
                if member.axis != "heads" or graph.module_types.get(member.path) != "MultiHeadAttention":
                    continue
                layer = layer_at(model, member.path)
                calls = [_self_attention(node) for node in layer._inbound_nodes]
                if calls and all(ok for ok, _ in calls) and len({c for _, c in calls}) == 1:
                    self.paths.add(member.path)
                    self.causal[member.path] = calls[0][1]
                elif required:
                    refused.append(member.path)
        if refused:
            raise ConfigError([f"MultiHeadAttention {path!r}: an activation criterion needs the per-head attention "
                               "output, which neuroprune recomputes only for self-attention (query, value and key one "
                               "tensor) without attention_mask, query/value/key masks or mask_zero; use a weight or "
                               "gradient criterion (magnitude, gradient, taylor, seed) or ignore=[...] this layer"
                               for path in refused])

    def context(self, path: str, query: np.ndarray) -> np.ndarray:
        """The attention output of layer ``path`` before its output projection, ``(..., heads, value_dim)``."""
        import keras

        layer = layer_at(self.model, path)
        x = keras.ops.convert_to_tensor(query)
        mask = layer._compute_attention_mask(x, x, use_causal_mask=self.causal[path])
        q, k, v = layer._query_dense(x), layer._key_dense(x), layer._value_dense(x)
        context, _ = layer._compute_attention(q, k, v, mask, False)
        return keras.ops.convert_to_numpy(context)

    def record(self, stats: Any, path: str, values: list[np.ndarray], threshold: float) -> None:
        """Add the per-head statistics of one batch's inputs of layer ``path``."""
        entry = stats.axis(path, "heads")
        for query in values:
            context = np.moveaxis(self.context(path, query), -2, -1)
            rows = context.reshape(-1, context.shape[-1])
            count = (rows > threshold).sum(axis=0, dtype=np.int64)
            entry.act_count = count if entry.act_count is None else entry.act_count + count
            for field, value in (("act_abs", np.abs(rows).sum(axis=0, dtype=np.float64)),
                                 ("act_sum", rows.sum(axis=0, dtype=np.float64)),
                                 ("act_sq", np.square(rows, dtype=np.float64).sum(axis=0))):
                current = getattr(entry, field)
                setattr(entry, field, value if current is None else current + value)
            entry.act_n += float(rows.shape[0])
