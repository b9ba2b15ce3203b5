"""Distillation for Keras: fine-tune the pruned model on the task loss blended with the teacher's
temperature-softened predictions, ``(1 - w) * CE + w * T^2 * KL(teacher_T || student_T)`` (Hinton
et al. 2015; the torch side's ``distillation_loss``, same ``distill_weight`` / ``distill_temperature``).

The teacher (the unpruned model) is frozen and deterministic, so its outputs are computed once, in
inference mode, and packed next to the labels; the student is then trained with plain ``model.fit``
and a loss written in ``keras.ops``, which runs unchanged on the torch, jax and tensorflow backends.
``keras.distillation.Distiller`` (Keras >= 3.12) is not used: its ``LogitsDistillation`` softens
the model's *outputs*, which for a model ending in softmax (the write-up's MLP) are probabilities,
not logits, and it runs the teacher again at every step. Here a softmax output is turned back into
logits (``log p``; softmax is shift-invariant) before softening.

Example:
    >>> import keras, numpy as np
    >>> from neuroprune.data import load_digits
    >>> from neuroprune.keras.task import KerasClassificationTask
    >>> task = KerasClassificationTask(load_digits())
    >>> teacher = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    >>> student = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    >>> task.bind(student).from_logits
    False
    >>> history = distill(student, teacher, task, epochs=1, weight=0.5, temperature=4.0)
    >>> len(history)
    1
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuroprune.core.errors import ConfigError


def blended_loss(weight: float, temperature: float, from_logits: bool):
    """A Keras loss over ``y_true = [label, teacher logits...]``: the blend in the module docstring."""
    import keras
    from keras import ops

    def logits_of(outputs):
        return outputs if from_logits else ops.log(ops.clip(outputs, 1e-12, 1.0))

    def loss(y_true, y_pred):
        labels = ops.cast(y_true[:, 0], "int32")
        teacher = ops.cast(y_true[:, 1:], y_pred.dtype)
        hard = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=from_logits)
        target = ops.softmax(teacher / temperature, axis=-1)
        log_student = ops.log_softmax(logits_of(y_pred) / temperature, axis=-1)
        log_target = ops.log(ops.clip(target, 1e-12, 1.0))
        soft = ops.sum(target * (log_target - log_student), axis=-1) * temperature ** 2
        return (1.0 - weight) * hard + weight * soft

    return loss


def teacher_logits(teacher: Any, task, x: np.ndarray) -> np.ndarray:
    """The teacher's logits on ``x`` (inference mode; ``log p`` when the teacher ends in softmax)."""
    outputs = task.predict(teacher, x).astype(np.float64)
    return outputs if task.from_logits else np.log(np.clip(outputs, 1e-12, 1.0))


def distill(model: Any, teacher: Any, task, *, epochs: int, weight: float, temperature: float = 4.0,
            learning_rate: float = 1e-3, progress: bool = False) -> list[float]:
    """Train ``model`` in place for ``epochs`` (Adam, the task's batches and seed) on the blended loss;
    returns the mean loss of every epoch."""
    import keras

    if not 0.0 < weight <= 1.0 or temperature <= 0:
        raise ConfigError([f"distillation needs 0 < distill_weight <= 1 and distill_temperature > 0; got {weight} "
                           f"and {temperature}"])
    if epochs <= 0:
        return []
    x, y = task.splits["train"]
    targets = np.concatenate([y[:, None].astype(np.float64), teacher_logits(teacher, task, x)], axis=1)
    keras.utils.set_random_seed(task.seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=blended_loss(weight, temperature, task.from_logits))
    try:
        history = model.fit(x, targets.astype(np.float32), batch_size=task.batch_size, epochs=epochs, shuffle=True,
                            verbose=1 if progress else 0)
    finally:  # compiled as fine-tuning leaves it: a closure loss would not survive .keras saving or cloning
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=task.from_logits))
    return [float(v) for v in history.history["loss"]]


__all__ = ["blended_loss", "distill", "teacher_logits"]
