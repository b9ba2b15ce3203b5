"""Classification on numpy arrays for Keras models: cross-entropy, accuracy, ``model.fit`` recovery.

Implements :class:`neuroprune.core.tasks.Task` with Keras batches (``(x, y)`` numpy pairs). The
loss knows whether the model ends in a softmax (``from_logits=False``) or gives logits.

Example:
    >>> import keras, numpy as np
    >>> from neuroprune.data import load_digits
    >>> task = KerasClassificationTask(load_digits())
    >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    >>> task.bind(model).from_logits, task.metric_name, task.example_input().shape
    (False, 'accuracy', (2, 64))
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from neuroprune.core.errors import DataError


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray) else np.asarray(value)


def _ends_in_softmax(model: Any) -> bool:
    layer = model.layers[-1]
    while hasattr(layer, "layers") and layer.layers:  # a nested model at the end
        layer = layer.layers[-1]
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", "") if activation is not None else ""
    return name == "softmax" or type(layer).__name__ == "Softmax"


class KerasClassificationTask:
    """Train/val/test arrays (a :class:`~neuroprune.data.DataSplits`, or anything with ``x_train``,
    ``y_train``, ``x_val``, ... attributes) for a Keras classifier.

    Args:
        batch_size: batch size for fine-tuning, calibration and evaluation.
        calibration_samples: training samples used to score neurons.
        channels_last: move the channel axis of 4-D image inputs stored ``(N, C, H, W)`` (the torch
            layout of :func:`~neuroprune.data.load_digits` with ``layout="image"``) to the end.
        seed: seed of the fine-tuning shuffles.
    """

    metric_name = "accuracy"
    lower_is_better = False
    capabilities = frozenset({"binds_to_model", "own_recovery", "fingerprint"})

    def __init__(self, data: Any, *, batch_size: int = 64, calibration_samples: int = 1024,
                 channels_last: bool = True, seed: int = 0):
        self.splits = {}
        for split in ("train", "val", "test"):
            x, y = _numpy(getattr(data, f"x_{split}")).astype(np.float32), _numpy(getattr(data, f"y_{split}"))
            if channels_last and x.ndim == 4 and x.shape[1] < x.shape[-1]:
                x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
            if len(x) == 0:
                raise DataError(f"data set {getattr(data, 'name', '?')!r} has an empty {split} split")
            self.splits[split] = (x, y.astype(np.int64))
        if batch_size < 1 or calibration_samples < 1:
            raise DataError(f"batch_size and calibration_samples must be >= 1, got {batch_size} and {calibration_samples}")
        self.batch_size, self.calibration_samples, self.seed = batch_size, calibration_samples, seed
        self.from_logits = True
        self.name = getattr(data, "name", "arrays")

    def bind(self, model: Any) -> KerasClassificationTask:
        """Check that ``model`` takes the inputs and can output every label; read whether it ends in softmax."""
        import keras

        x, y = self.splits["train"]
        try:
            out = keras.ops.convert_to_numpy(model(x[:2], training=False))
        except Exception as error:  # noqa: BLE001 - the model's own message says what does not fit
            raise DataError(f"the model does not take inputs shaped {x.shape[1:]}: {error}") from error
        if out.ndim != 2 or out.shape[1] <= int(y.max()):
            raise DataError(f"the model outputs shape {out.shape[1:]}, but the labels go up to {int(y.max())}")
        self.from_logits = not _ends_in_softmax(model)
        return self

    def loss_fn(self, y_true: Any, y_pred: Any) -> Any:
        """Mean sparse categorical cross-entropy (``keras.ops``; differentiable on every backend)."""
        import keras

        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=self.from_logits))

    def example_input(self) -> np.ndarray:
        return self.splits["train"][0][:2]

    def make_input(self, batch_size: int) -> np.ndarray:
        x = self.splits["train"][0]
        return x[np.arange(batch_size) % len(x)]

    def calibration_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        x, y = self.splits["train"]
        n = min(self.calibration_samples, len(x))
        return [(x[i:i + self.batch_size], y[i:i + self.batch_size]) for i in range(0, n, self.batch_size)]

    def train_batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        x, y = self.splits["train"]
        order = np.random.default_rng(self.seed * 100_003 + epoch).permutation(len(x))
        for i in range(0, len(x), self.batch_size):
            yield x[order[i:i + self.batch_size]], y[order[i:i + self.batch_size]]

    def loss(self, model: Any, batch: tuple[np.ndarray, np.ndarray]) -> Any:
        x, y = batch
        return self.loss_fn(y, model(x, training=False))

    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        import keras

        step = max(self.batch_size, 256)
        return np.concatenate([keras.ops.convert_to_numpy(model(x[i:i + step], training=False))
                               for i in range(0, len(x), step)])

    def evaluate(self, model: Any, split: str) -> float:
        """Accuracy on ``"train"``, ``"val"`` or ``"test"``."""
        if split not in self.splits:
            raise DataError(f"unknown split {split!r}; splits: train, val, test")
        x, y = self.splits[split]
        return float((self.predict(model, x).argmax(axis=-1) == y).mean())

    def finetune(self, model: Any, *, epochs: int, learning_rate: float = 1e-3, progress: bool = False,
                 desc: str = "fine-tuning") -> None:
        """``model.fit`` with Adam for ``epochs`` on the training split (compiles ``model``)."""
        import keras

        if epochs <= 0:
            return
        keras.utils.set_random_seed(self.seed)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=self.from_logits))
        x, y = self.splits["train"]
        model.fit(x, y, batch_size=self.batch_size, epochs=epochs, shuffle=True, verbose=1 if progress else 0)

    def split_sizes(self) -> dict[str, int]:
        """Samples per split (the CLI's report entry)."""
        return {f"{split}_samples": len(x) for split, (x, _) in self.splits.items()}

    def fingerprint(self) -> str:
        """A sha256 of every split and of how batches are drawn."""
        digest = hashlib.sha256()
        for x, y in self.splits.values():
            digest.update(np.ascontiguousarray(x).tobytes())
            digest.update(np.ascontiguousarray(y).tobytes())
        digest.update(f"{self.batch_size},{self.calibration_samples},{self.seed}".encode())
        return digest.hexdigest()
