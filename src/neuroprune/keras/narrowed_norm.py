"""Normalisations over all channels, narrowed to the kept channels while a model is masked.

``LayerNormalization`` and ``RMSNormalization`` compute their mean / root mean square over every
channel, so zeroing weights alone cannot make a masked model compute what the physically pruned
model computes (the zeros would still count). While masked, :func:`narrow` gives such a layer a
``call`` that normalises only the kept channels, with the layer's own ``keras.ops`` function and
its own ``gamma`` / ``beta`` / ``scale`` entries, and writes zeros at the removed ones: exactly the
pruned layer's output, on every Keras backend. :func:`widen` puts the layer's own ``call`` back.
(The torch side does the same with a forward hook.)

Example:
    >>> import keras, numpy as np
    >>> layer = keras.layers.LayerNormalization()
    >>> x = np.array([[1.0, 2.0, 30.0, 4.0]], dtype="float32")
    >>> _ = layer(x)
    >>> narrow(layer, np.array([0, 1, 3]), 4)
    True
    >>> small = keras.layers.LayerNormalization()
    >>> _ = small(x[:, [0, 1, 3]])
    >>> as_numpy = keras.ops.convert_to_numpy
    >>> np.allclose(as_numpy(layer(x))[:, [0, 1, 3]], as_numpy(small(x[:, [0, 1, 3]])))
    True
    >>> widen(layer)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _take(weight: Any, kept: np.ndarray) -> Any:
    import keras

    return None if weight is None else keras.ops.take(weight, kept, axis=0)


def _layer_norm(layer: Any, x: Any, kept: np.ndarray) -> Any:
    import keras

    out = keras.ops.layer_normalization(x, _take(layer.gamma, kept), _take(layer.beta, kept), layer.axis,
                                        layer.epsilon, rms_scaling=layer.rms_scaling)
    return keras.ops.cast(out, layer.compute_dtype)


def _rms_norm(layer: Any, x: Any, kept: np.ndarray) -> Any:
    import keras

    return keras.ops.rms_normalization(x, scale=_take(layer.scale, kept), axis=layer.axis, epsilon=layer.epsilon)


#: layer classes whose statistics span the channels, and their computation on the kept channels
NARROWED: dict[str, Callable[[Any, Any, np.ndarray], Any]] = {
    "LayerNormalization": _layer_norm,
    "RMSNormalization": _rms_norm,
}


def narrow(layer: Any, kept: np.ndarray, size: int) -> bool:
    """Make ``layer`` normalise only channels ``kept`` of its ``size``; ``False`` if it needs nothing."""
    normalise = NARROWED.get(type(layer).__name__)
    kept = np.asarray(kept, dtype=np.int64)
    if normalise is None or len(kept) == size:
        return False
    # position of every channel in the narrowed output; removed channels read an appended zero
    gather = np.full(size, len(kept), dtype=np.int64)
    gather[kept] = np.arange(len(kept))

    def call(inputs, *args, **kwargs):
        import keras

        small = normalise(layer, keras.ops.take(inputs, kept, axis=-1), kept)
        padded = keras.ops.concatenate([small, keras.ops.zeros_like(small[..., :1])], axis=-1)
        return keras.ops.take(padded, gather, axis=-1)

    object.__setattr__(layer, "call", call)
    return True


def widen(layer: Any) -> None:
    """Give ``layer`` its own ``call`` back (nothing if it was not narrowed)."""
    layer.__dict__.pop("call", None)
