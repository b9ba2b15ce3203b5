"""Gradients of a loss with respect to a Keras model's trainable weights, on any Keras backend.

The one backend-specific piece of the Keras frontend: torch autograd, ``jax.grad`` over
``stateless_call``, or ``tf.GradientTape``. Everything else works on the numpy arrays returned.

Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> loss = lambda y, p: keras.ops.mean(keras.ops.square(p - y))
    >>> value, grads = loss_and_gradients(model, loss, np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"))
    >>> [g.shape for g in grads]
    [(3, 2), (2,)]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

LossFn = Callable[[Any, Any], Any]  # loss(y_true, y_pred) -> scalar, written with keras.ops


def _torch(model: Any, loss_fn: LossFn, x: Any, y: Any) -> tuple[float, list[np.ndarray]]:
    import torch

    variables = model.trainable_variables
    saved = [v.value.grad for v in variables]
    try:
        for v in variables:
            v.value.grad = None
        with torch.enable_grad():
            loss = loss_fn(y, model(x, training=False))
            loss.backward()
        grads = [np.zeros(v.shape, dtype=np.float32) if v.value.grad is None
                 else v.value.grad.detach().cpu().numpy().copy() for v in variables]
        return float(loss.detach().cpu()), grads
    finally:
        for v, grad in zip(variables, saved):
            v.value.grad = grad


def _jax(model: Any, loss_fn: LossFn, x: Any, y: Any) -> tuple[float, list[np.ndarray]]:
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_of(values):
        prediction, _ = model.stateless_call(values, non_trainable, x, training=False)
        return loss_fn(y, prediction)

    loss, grads = jax.value_and_grad(loss_of)(trainable)
    return float(loss), [np.asarray(g) for g in grads]


def _tensorflow(model: Any, loss_fn: LossFn, x: Any, y: Any) -> tuple[float, list[np.ndarray]]:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=False))
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    return float(loss), [np.zeros(v.shape, np.float32) if g is None else np.asarray(g) for v, g in zip(variables, grads)]


_BY_BACKEND = {"torch": _torch, "jax": _jax, "tensorflow": _tensorflow}


def loss_and_gradients(model: Any, loss_fn: LossFn, x: Any, y: Any) -> tuple[float, list[np.ndarray]]:
    """The loss on ``(x, y)`` and its gradient for each of ``model.trainable_variables`` (numpy).

    The model is left as found (no weight, gradient or mode changes)."""
    import keras

    from neuroprune.core.errors import UnsupportedModelError

    backend = keras.backend.backend()
    if backend not in _BY_BACKEND:
        raise UnsupportedModelError(f"Keras backend {backend!r} is not supported; supported: {', '.join(_BY_BACKEND)}")
    return _BY_BACKEND[backend](model, loss_fn, keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))
