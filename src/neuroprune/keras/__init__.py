"""The Keras 3 frontend: structured pruning of Sequential and Functional Keras models.

Works on every Keras backend (torch, jax, tensorflow): the graph comes from ``model.get_config()``,
statistics from probe sub-models, gradients from one small backend-specific function, neurons are
removed by rewriting the config and rebuilding with sliced weights; all maths is numpy.
``neuroprune.prune(keras_model, task, config)`` picks this backend automatically.

If Keras is not imported yet, ``KERAS_BACKEND`` is unset and TensorFlow (Keras's default backend)
is not installed, importing this package selects the torch backend, which neuroprune already needs.
"""

from __future__ import annotations

import importlib.util
import os
import sys

if "keras" not in sys.modules and "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
    os.environ["KERAS_BACKEND"] = "torch"
