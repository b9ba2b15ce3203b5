"""Keras frontend on the jax backend, in a subprocess (one process has one Keras backend).

The subprocess computes gradients with ``jax.grad`` over ``stateless_call`` and checks masked ==
pruned there; this process compares its gradients with the torch backend's for the same weights.
Skipped where jax is not installed; CI runs every keras test on jax too (``make test-keras-jax``).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("keras")
if importlib.util.find_spec("jax") is None:
    pytest.skip("jax is not installed (pip install 'jax[cpu]')", allow_module_level=True)

import numpy as np  # noqa: E402
from keras_models import keras, mlp  # noqa: E402

from neuroprune.keras.gradients import loss_and_gradients  # noqa: E402

SCRIPT = """
import json, sys
import numpy as np
import keras
sys.path.insert(0, {tests!r})
from keras_models import as_numpy_keep, first_units, mlp, outputs
from neuroprune.keras.gradients import loss_and_gradients
from neuroprune.keras.graph import discover
from neuroprune.keras.masks import apply_masks
from neuroprune.keras.surgery import apply_keep
model = mlp((5, 7, 6, 3))
x = np.linspace(-1, 1, 40, dtype="float32").reshape(8, 5)
y = np.arange(8) % 3
loss = lambda t, p: keras.ops.mean(keras.losses.sparse_categorical_crossentropy(t, p))
value, grads = loss_and_gradients(model, loss, x, y)
keep = as_numpy_keep(discover(model).keep_indices(first_units(discover(model))))
handle = apply_masks(model, keep)
masked = outputs(model, x)
handle.remove()
print(json.dumps({{"backend": keras.backend.backend(), "loss": value, "grads": [g.tolist() for g in grads],
                  "masked_equals_pruned": bool(np.allclose(outputs(apply_keep(model, keep), x), masked, atol=1e-6))}}))
"""


@pytest.mark.slow  # ~20 s: a second process imports keras and jax; `make test-keras-jax` covers jax in CI
def test_jax_backend_gradients_and_surgery():
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["backend"] == "jax" and found["masked_equals_pruned"]
    model = mlp((5, 7, 6, 3))
    x = np.linspace(-1, 1, 40, dtype="float32").reshape(8, 5)
    loss = lambda t, p: keras().ops.mean(keras().losses.sparse_categorical_crossentropy(t, p))  # noqa: E731
    value, grads = loss_and_gradients(model, loss, x, np.arange(8) % 3)
    assert found["loss"] == pytest.approx(value, rel=1e-5)
    for theirs, ours in zip(found["grads"], grads):
        np.testing.assert_allclose(np.asarray(theirs), ours, rtol=1e-4, atol=1e-6)
