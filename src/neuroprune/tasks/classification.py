"""Labelled data: cross-entropy loss and accuracy.

:class:`ClassificationTask` covers labelled data (digits, an .npz, any tensors). Other problems
(e.g. sentence embeddings without labels) implement the same :class:`~neuroprune.core.tasks.Task`
protocol and declare what more they can do in ``capabilities``.

Example:
    >>> from neuroprune.data import load_digits
    >>> task = ClassificationTask(load_digits())
    >>> (task.metric_name, tuple(task.example_input().shape))
    ('accuracy', (2, 64))
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuroprune.data import DataSplits, iterate_batches
from neuroprune.core.errors import DataError
from neuroprune.core.tasks import Task  # noqa: F401  (its old import path)
from neuroprune.tasks.metric_sums import evaluate_by_sums


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU / float32 if none)."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.device, param.dtype
    return torch.device("cpu"), torch.float32


class ClassificationTask:
    """Cross-entropy loss and accuracy on :class:`~neuroprune.data.DataSplits`.

    Args:
        data: train/val/test splits (validation drives pruning decisions; test is only reported).
        batch_size: batch size for training, calibration and evaluation.
        calibration_samples: training samples used to score neurons.
        seed: seed of the training shuffles.
    """

    metric_name = "accuracy"
    lower_is_better = False
    capabilities = frozenset({"binds_to_model", "fingerprint"})

    def __init__(self, data: DataSplits, *, batch_size: int = 64, calibration_samples: int = 1024, seed: int = 0):
        if len(data.x_train) == 0 or len(data.x_val) == 0 or len(data.x_test) == 0:
            raise DataError(f"data set {data.name!r} has an empty split (train {len(data.x_train)}, "
                            f"val {len(data.x_val)}, test {len(data.x_test)})")
        if batch_size < 1 or calibration_samples < 1:
            raise DataError(f"batch_size and calibration_samples must be >= 1, got {batch_size} and {calibration_samples}")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.calibration_samples = calibration_samples
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None

    def bind(self, model: nn.Module) -> ClassificationTask:
        """Put inputs on the model's device and dtype from now on, after checking that the model
        takes the data and can output every training label (:func:`neuroprune.torch.probe.probe_model`)."""
        from neuroprune.torch.probe import probe_model

        probe_model(model, self.data)
        self.device, self.dtype = model_device_dtype(model)
        return self

    def _inputs(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """``x`` on the device and in the dtype of ``model`` (or of the bound model)."""
        device, dtype = model_device_dtype(model) if model is not None else (self.device, self.dtype)
        return x.to(device=device or "cpu", dtype=dtype or torch.float32)

    def example_input(self) -> torch.Tensor:
        return self._inputs(self.data.x_train[:2])

    def make_input(self, batch_size: int) -> torch.Tensor:
        x = self.data.x_train
        index = torch.arange(batch_size) % len(x)
        return self._inputs(x[index])

    def calibration_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        n = min(self.calibration_samples, len(self.data.x_train))
        return list(iterate_batches(self.data.x_train[:n], self.data.y_train[:n], self.batch_size))

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return iterate_batches(self.data.x_train, self.data.y_train, self.batch_size, shuffle=True, generator=generator)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        logits = model(self._inputs(x, model))
        return F.cross_entropy(logits.float(), y.to(logits.device))

    def distillation_loss(self, model: nn.Module, teacher: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                          weight: float, temperature: float = 4.0) -> torch.Tensor:
        """Cross-entropy blended with the KL divergence to ``teacher``'s softened predictions.

        ``(1 - weight) * CE + weight * T^2 * KL(teacher_T || student_T)`` (Hinton et al. 2015).
        """
        x, y = batch
        logits = model(self._inputs(x, model)).float()
        with torch.no_grad():
            target = teacher(self._inputs(x, teacher)).float()
        hard = F.cross_entropy(logits, y.to(logits.device))
        soft = F.kl_div(F.log_softmax(logits / temperature, dim=-1), F.softmax(target / temperature, dim=-1),
                        reduction="batchmean") * temperature**2
        return (1 - weight) * hard + weight * soft

    def fingerprint(self) -> str:
        """A sha256 of every split and of how batches are drawn (checkpoints refuse to resume on other data)."""
        from neuroprune.torch.fingerprint import fingerprint_values

        d = self.data
        return fingerprint_values([d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test],
                                  [self.batch_size, self.calibration_samples, self.seed])

    def evaluate(self, model: nn.Module, split: str) -> float:
        """Accuracy on ``"val"`` or ``"test"`` (eval mode; the model's mode is restored). Under
        torchrun each rank counts a share of the batches (:mod:`neuroprune.tasks.metric_sums`)."""
        return evaluate_by_sums(self, model, split)

    def metric_batches(self, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The evaluation batches of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in ("val", "test", "train"):
            raise DataError(f"unknown split {split!r}; splits: train, val, test")
        x, y = getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")
        return list(iterate_batches(x, y, max(self.batch_size, 256)))

    def metric_sums(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[int, int]:
        """(correct predictions, samples) of one batch."""
        xb, yb = batch
        return int((model(self._inputs(xb, model)).argmax(dim=-1).cpu() == yb).sum()), len(yb)

    @staticmethod
    def metric_value(correct: float, samples: float) -> float:
        return correct / samples
