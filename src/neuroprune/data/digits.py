"""scikit-learn's bundled 8x8 digits, split and standardised; scikit-learn loads only when called.

Example:
    >>> load_digits(layout="sequence").x_train.shape[1:]
    torch.Size([8, 8])
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from neuroprune.core.errors import DataError
from neuroprune.data.splits import DataSplits, check_fraction, check_layout, check_seed, standardise


def load_digits(
    seed: int = 0,
    layout: str = "flat",
    image_size: int = 8,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
) -> DataSplits:
    """Load scikit-learn's bundled 8x8 digits (1797 samples, 10 classes), split and standardised.

    The test split is ``test_fraction`` of all samples; the validation split is ``val_fraction``
    of the remaining training part. Both splits are stratified and fixed by ``seed``.

    Args:
        seed: Random state of both splits.
        layout: ``"flat"`` (N, 64), ``"image"`` (N, 1, S, S) or ``"sequence"`` (N, 8, 8).
        image_size: S for the ``"image"`` layout; other sizes than 8 are resized bilinearly
            after standardising. Ignored by the other layouts.
        test_fraction: Share of all samples held out for testing, in (0, 1).
        val_fraction: Share of the training part held out for validation, in (0, 1).

    Example:
        >>> load_digits(layout="image", image_size=32).x_test.shape
        torch.Size([360, 1, 32, 32])
    """
    check_layout(layout)
    check_seed(seed)
    check_fraction("test_fraction", test_fraction)
    check_fraction("val_fraction", val_fraction)
    if layout == "image":
        _check_image_size(image_size)
    from sklearn.datasets import load_digits as load_bundled_digits  # noqa: PLC0415 (heavy, used here only)
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    bunch = load_bundled_digits()
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=val_fraction, stratify=y_train, random_state=seed
    )
    x_train, x_val, x_test = standardise(x_train, x_val, x_test)
    tensors = [_digits_layout(part, layout, image_size) for part in (x_train, x_val, x_test)]
    labels = [torch.from_numpy(part) for part in (y_train, y_val, y_test)]
    return DataSplits(
        name="digits",
        x_train=tensors[0],
        y_train=labels[0],
        x_val=tensors[1],
        y_val=labels[1],
        x_test=tensors[2],
        y_test=labels[2],
        num_classes=10,
        standardized=True,
    )


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be an integer >= 1, got {image_size!r}")


def _digits_layout(x: np.ndarray, layout: str, image_size: int) -> torch.Tensor:
    tensor = torch.from_numpy(x)
    if layout == "flat":
        return tensor
    if layout == "sequence":
        return tensor.reshape(-1, 8, 8)
    images = tensor.reshape(-1, 1, 8, 8)
    if image_size == 8:
        return images
    return F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
