"""How channels flow through one Keras layer or ``keras.ops`` node (channels last).

A flow is the numpy array of channel ids along a tensor's last dimension (ids repeat after a
``Flatten``: channel ``c`` of an ``(H, W, C)`` map lands on every ``p * C + c``). :func:`propagate`
records a layer's axes in the :class:`~neuroprune.keras.grouping.ChannelIds` and returns the flows
of its outputs; ``None`` marks an output whose channels are fixed (an unsupported layer's).

Example:
    >>> from neuroprune.keras.grouping import ChannelIds
    >>> ids = ChannelIds()
    >>> x = ids.fixed(4, "model input")
    >>> out = propagate(ids, Call("d", "Dense", {"units": 3, "activation": "relu"}, [x], [(None, 4)]))
    >>> out[0].tolist(), ids.axes[("d", "in")].tolist()
    ([4, 5, 6], [0, 1, 2, 3])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neuroprune.keras.bidirectional import propagate_bidirectional
from neuroprune.keras.grouped_conv import channelwise_flow, is_channelwise
from neuroprune.keras.groupnorm import propagate_group_norm
from neuroprune.keras.grouping import ChannelIds
from neuroprune.keras.layer_scale import is_layer_scale
from neuroprune.keras.layers import rule_for
from neuroprune.keras.recurrent import GATES, propagate_recurrent
from neuroprune.keras.separable import DEPTHWISE, SEPARABLE, propagate_depthwise

# --- attention (MultiHeadAttention heads, EinsumDense projections): their own modules -----------


def _attention_flow(ids: ChannelIds, call: Call) -> list[np.ndarray | None]:
    from neuroprune.keras.attention import propagate_attention

    return propagate_attention(ids, call)


def _einsum_flow(ids: ChannelIds, call: Call) -> list[np.ndarray | None]:
    from neuroprune.keras.einsum import propagate_einsum

    return propagate_einsum(ids, call)


ATTENTION_FLOWS = {"MultiHeadAttention": _attention_flow, "EinsumDense": _einsum_flow}
# ---------------------------------------------------------------------------------------------

#: layers that act on every channel alone and keep the channel dimension last
PASS_LAYERS = frozenset({
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "ActivityRegularization", "Identity", "ReLU", "LeakyReLU", "ELU", "Activation",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
})
#: ``keras.ops`` functions (class names of their graph nodes) that act elementwise
PASS_OPS = frozenset({
    "Relu", "Relu6", "Sigmoid", "Tanh", "Gelu", "Silu", "Swish", "Elu", "Selu", "LeakyRelu", "Softplus",
    "Softsign", "HardSigmoid", "HardSilu", "HardSwish", "Abs", "Absolute", "Negative", "Exp", "Log", "Square",
    "Sqrt", "Cast", "Clip", "Mish",
})
#: layers and ops that combine inputs elementwise (their channels are tied)
MERGE = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Divide", "TrueDivide"})
#: activations that mix the channels of the last axis
MIXING_ACTIVATIONS = frozenset({"softmax", "log_softmax", "sparsemax"})


@dataclass
class Call:
    """One call of a layer: its path, class, config, input flows and input shapes (channels last)."""

    path: str
    class_name: str
    config: dict[str, Any]
    inputs: list[np.ndarray | None]
    shapes: list[tuple | None]
    is_op: bool = False
    constants: int = 0  # non-tensor arguments (e.g. the 2.0 of ``ops.multiply(x, 2.0)``)
    reason: str = field(default="")
    node: dict | None = None  # the serialised call (its args and kwargs), where the config has one


def supported_names() -> list[str]:
    """Layer class names the Keras frontend prunes through."""
    return sorted(PASS_LAYERS | MERGE | set(ATTENTION_FLOWS) | {"Dense", "Conv1D", "Conv2D", "Conv3D", "BatchNormalization", "Embedding",
                                         *DEPTHWISE, *SEPARABLE, "Bidirectional", "LayerNormalization",
                                         "RMSNormalization", "LayerScale", "Flatten", "Reshape", "Concatenate", "Softmax"}
                  | set(GATES) | {"GroupNormalization"})


def _activation_name(config: dict[str, Any]) -> str:
    activation = config.get("activation")
    if isinstance(activation, dict):  # a serialised function
        activation = activation.get("config", activation.get("class_name"))
    return str(activation).lower()


def _channels_last(config: dict[str, Any]) -> bool:
    return config.get("data_format", "channels_last") in (None, "channels_last")


def _freeze_inputs(ids: ChannelIds, call: Call, reason: str) -> list[None]:
    for flow in call.inputs:
        if flow is not None:
            ids.freeze(flow, f"{call.path}: {reason}")
    return [None]


def _merge(ids: ChannelIds, call: Call) -> list[np.ndarray | None]:
    flows = [f for f in call.inputs if f is not None]
    ranks = {len(s) for s in call.shapes if s is not None}
    if len(flows) < len(call.inputs) - call.constants or len(flows) == 0 or len(ranks) > 1 \
            or len({len(f) for f in flows}) > 1:
        return _freeze_inputs(ids, call, f"{call.class_name} of tensors whose channels cannot be matched")
    for other in flows[1:]:
        ids.couple(flows[0], other)
    return [flows[0]]


def _concatenate(ids: ChannelIds, call: Call) -> list[np.ndarray | None]:
    if any(f is None for f in call.inputs) or any(s is None for s in call.shapes):
        return _freeze_inputs(ids, call, "concatenation with fixed channels")
    rank = len(call.shapes[0])
    axis = call.config.get("axis", -1)
    if axis in (-1, rank - 1):
        return [np.concatenate(call.inputs)]
    return _merge(ids, Call(call.path, "Concatenate", call.config, call.inputs, call.shapes))


def _projection(ids: ChannelIds, call: Call) -> list[np.ndarray | None]:
    config = call.config
    if _channels_last(config) and call.inputs[0] is not None and is_channelwise(config, len(call.inputs[0])):
        return channelwise_flow(ids, call)
    if not _channels_last(config) or config.get("groups", 1) != 1:
        why = "channels_first data" if not _channels_last(config) else "grouped convolution"
        _freeze_inputs(ids, call, f"{why} is not supported")
        return [None]
    if call.inputs[0] is not None:
        ids.bind_axis(call.path, "in", call.inputs[0])
    size = config.get("units", config.get("filters"))
    out = ids.producer_axis(call.path, "out", int(size))
    if _activation_name(config) in MIXING_ACTIVATIONS:
        ids.freeze(out, f"{call.path}: its {_activation_name(config)} activation mixes the units")
    return [out]


def _flatten(ids: ChannelIds, call: Call) -> list[np.ndarray | None]:
    flow, shape = call.inputs[0], call.shapes[0]
    if flow is None or shape is None or any(d is None for d in shape[1:]) or not _channels_last(call.config):
        return _freeze_inputs(ids, call, "Flatten of a tensor whose shape is not known")
    positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
    return [np.tile(flow, positions)]


def _reshape(ids: ChannelIds, call: Call) -> list[np.ndarray | None]:
    flow, shape = call.inputs[0], call.shapes[0]
    target = list(call.config.get("target_shape", ()))
    if flow is None or shape is None or not target or target[-1] != shape[-1]:
        return _freeze_inputs(ids, call, "Reshape that moves channels off the last dimension")
    ids.bind_axis(call.path, "features", flow)
    return [flow]


def _channelwise(ids: ChannelIds, call: Call) -> list[np.ndarray | None]:
    flow, shape = call.inputs[0], call.shapes[0]
    axis = call.config.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if flow is None or shape is None or axis not in (-1, len(shape) - 1):
        return _freeze_inputs(ids, call, "normalisation over an axis other than the channels")
    ids.bind_axis(call.path, "features", flow)
    return [flow]


def propagate(ids: ChannelIds, call: Call) -> list[np.ndarray | None]:
    """Record ``call``'s axes and couplings; return the flows of its outputs."""
    name = call.class_name
    call.inputs = [ids.fixed(int(shape[-1]), "channels computed by a layer that is not followed")
                   if flow is None and shape and shape[-1] else flow for flow, shape in zip(call.inputs, call.shapes)]
    if name in MERGE:
        return _merge(ids, call)
    if is_layer_scale(call):  # keras.applications' ConvNeXt
        return channelwise_flow(ids, call)
    if call.is_op:
        if name in PASS_OPS and len(call.inputs) == 1:
            return [call.inputs[0]]
        return _freeze_inputs(ids, call, f"keras.ops node {name!r} is not followed; its channels are kept")
    if name in ("Dense", "Conv1D", "Conv2D", "Conv3D", *SEPARABLE):
        return _projection(ids, call)
    if name in ATTENTION_FLOWS:
        return ATTENTION_FLOWS[name](ids, call)
    if name in ("BatchNormalization", "LayerNormalization", "RMSNormalization"):
        return _channelwise(ids, call)
    if name == "Embedding":
        return [ids.producer_axis(call.path, "out", int(call.config["output_dim"]))]
    if name in DEPTHWISE:  # any depth multiplier (neuroprune.keras.separable)
        return propagate_depthwise(ids, call)
    if name in GATES:  # LSTM, GRU, SimpleRNN (neuroprune.keras.recurrent)
        return propagate_recurrent(ids, call)
    if name == "Bidirectional":
        return propagate_bidirectional(ids, call)
    if name == "GroupNormalization":
        return propagate_group_norm(ids, call)
    if name in ("Activation", "Softmax") and (name == "Softmax" or _activation_name(call.config) in MIXING_ACTIVATIONS):
        axis = call.config.get("axis", -1)
        if name == "Activation" or axis in (-1, [-1]):
            _freeze_inputs(ids, call, "softmax mixes the channels")
        return [call.inputs[0]]
    if name in PASS_LAYERS:
        if not _channels_last(call.config):
            return _freeze_inputs(ids, call, "channels_first data is not supported")
        return [call.inputs[0]]
    if name == "Flatten":
        return _flatten(ids, call)
    if name == "Reshape":
        return _reshape(ids, call)
    if name == "Concatenate":
        return _concatenate(ids, call)
    if rule_for(name) is not None:  # a rule without a flow: keep it safe
        return _freeze_inputs(ids, call, f"layer type {name} is not followed")
    return _freeze_inputs(ids, call, call.reason or f"layer type {name} is not supported (its channels are kept)")
