"""User data from ``.npz`` files (never unpickled), checked before any work.

Example:
    >>> NPZ_KEYS
    ('x_train', 'y_train', 'x_test', 'y_test')
"""

from __future__ import annotations

import os
import warnings
import zipfile

import numpy as np
import torch

from neuroprune.core.errors import DataError, DataWarning
from neuroprune.data.splits import DataSplits, check_fraction, check_layout, check_seed, standardise

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
"""Arrays an ``.npz`` file must hold for :func:`load_npz`."""

MIN_VAL_SAMPLES = 10
"""A validation split smaller than this gets a :class:`~neuroprune.core.errors.DataWarning`."""

LARGE_FEATURE = 1e4
"""Unstandardised features beyond this magnitude get a :class:`~neuroprune.core.errors.DataWarning`."""

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def load_npz(
    path: str | os.PathLike[str],
    layout: str = "flat",
    val_fraction: float = 0.1,
    seed: int = 0,
    standardize: bool = False,
) -> DataSplits:
    """Load ``x_train, y_train, x_test, y_test`` from an ``.npz`` file, never unpickling.

    The inputs are used exactly as stored, only cast to float32, so a model trained on the
    same arrays sees what it was trained on; ``standardize=True`` centres and scales every
    feature with the training split's mean and standard deviation instead. The validation
    split is ``val_fraction`` of the training arrays (stratified where every class has at least
    two samples, otherwise a plain random split). Labels must be integers >= 0 (integral floats
    are accepted); ``num_classes`` is the largest label plus one.

    A single class, a validation split of fewer than :data:`MIN_VAL_SAMPLES` samples and
    unstandardised features beyond :data:`LARGE_FEATURE` in magnitude give a
    :class:`~neuroprune.core.errors.DataWarning`.

    Args:
        path: The ``.npz`` file, e.g. written by ``np.savez``.
        layout: ``"flat"`` flattens each sample; ``"image"`` keeps (N, C, H, W) and turns
            (N, H, W) into (N, 1, H, W); ``"sequence"`` needs (N, T, F).
        val_fraction: Share of the training arrays held out for validation, in (0, 1).
        seed: Random state of the validation split.
        standardize: Centre and scale every feature with the training split's statistics.

    Raises:
        DataError: The file is missing, not an ``.npz``, lacks keys, holds pickled objects,
            empty, mismatched, non-finite or float32-overflowing arrays, or bad labels.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "d.npz")
        >>> rng = np.random.default_rng(0)
        >>> np.savez(p, x_train=rng.normal(size=(20, 3)), y_train=np.arange(20) % 2,
        ...          x_test=rng.normal(size=(4, 3)), y_test=np.array([0, 1, 0, 1]))
        >>> s = load_npz(p, val_fraction=0.25)
        >>> s.num_classes, s.input_shape, len(s.x_val), s.standardized
        (2, (3,), 5, False)
    """
    check_layout(layout)
    check_fraction("val_fraction", val_fraction)
    _check_flag("standardize", standardize)
    check_seed(seed)
    arrays = _read_npz(path)
    _check_arrays(arrays, layout)
    x_train, y_train = arrays["x_train"].astype(np.float64), _labels(arrays["y_train"])
    x_test, y_test = arrays["x_test"].astype(np.float64), _labels(arrays["y_test"])
    if len(x_train) < 2:
        raise DataError(f"{path}: x_train needs at least 2 samples to hold out a validation split")
    x_train, x_val, y_train, y_val = _split_validation(x_train, y_train, val_fraction, seed)
    if standardize:
        x_train, x_val, x_test = standardise(x_train, x_val, x_test)
    else:
        x_train, x_val, x_test = (part.astype(np.float32) for part in (x_train, x_val, x_test))
    _warn_about_splits(os.fspath(path), y_train, y_val, x_train, standardize)
    inputs = [torch.from_numpy(_npz_layout(part, layout)) for part in (x_train, x_val, x_test)]
    return DataSplits(
        name=f"npz:{os.fspath(path)}",
        x_train=inputs[0],
        y_train=torch.from_numpy(y_train),
        x_val=inputs[1],
        y_val=torch.from_numpy(y_val),
        x_test=inputs[2],
        y_test=torch.from_numpy(y_test),
        num_classes=int(max(y_train.max(), y_val.max(), y_test.max())) + 1,
        standardized=bool(standardize),
    )


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise DataError(f"{name} must be True or False, got {value!r}")


def _warn_about_splits(path: str, y_train: np.ndarray, y_val: np.ndarray, x_train: np.ndarray,
                       standardized: bool) -> None:
    classes = np.unique(np.concatenate([y_train, y_val]))
    if len(classes) == 1:
        warnings.warn(DataWarning(f"{path}: every training label is {int(classes[0])}: a single class gives "
                                  "accuracy 1.0 for any model, so pruning decisions are meaningless"), stacklevel=3)
    if len(y_val) < MIN_VAL_SAMPLES:
        warnings.warn(DataWarning(f"{path}: the validation split has only {len(y_val)} samples (fewer than "
                                  f"{MIN_VAL_SAMPLES}), so each rollback decision rests on a handful of samples; "
                                  "a larger x_train (or val_fraction) gives steadier decisions"), stacklevel=3)
    largest = float(np.abs(x_train).max()) if x_train.size else 0.0
    if not standardized and largest > LARGE_FEATURE:
        warnings.warn(DataWarning(f"{path}: features reach {largest:.3g} in magnitude; they are fed to the model "
                                  "as stored, so pass --standardize (standardize=True) if the model was trained "
                                  "on standardised inputs"), stacklevel=3)


def _read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the required arrays of an ``.npz`` without ever unpickling."""
    if not os.path.isfile(path):
        raise DataError(f"no such data file: {os.fspath(path)!r}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{os.fspath(path)!r} is not a valid .npz archive ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{os.fspath(path)!r} is not a valid .npz archive (it holds a single array)")
    with archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise DataError(
                f"{os.fspath(path)!r} lacks arrays {', '.join(missing)}; "
                f"it holds: {', '.join(sorted(archive.files)) or 'nothing'}"
            )
        return {key: _read_array(archive, key, path) for key in NPZ_KEYS}


def _read_array(archive: np.lib.npyio.NpzFile, key: str, path: str | os.PathLike[str]) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:  # numpy refuses object arrays when allow_pickle=False
        raise DataError(
            f"array {key!r} in {os.fspath(path)!r} holds pickled Python objects, "
            "which are never loaded; save plain numeric arrays"
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"array {key!r} in {os.fspath(path)!r} cannot be read ({exc})") from exc


def _check_arrays(arrays: dict[str, np.ndarray], layout: str) -> None:
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        _check_inputs(f"x_{part}", x)
        _check_label_array(f"y_{part}", y)
        if len(x) != len(y):
            raise DataError(f"x_{part} has {len(x)} samples but y_{part} has {len(y)}")
    train_shape, test_shape = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
    if train_shape != test_shape:
        raise DataError(f"x_train samples have shape {train_shape} but x_test samples {test_shape}")
    _check_layout_shape(arrays["x_train"].ndim, layout)


def _check_inputs(key: str, x: np.ndarray) -> None:
    if x.size == 0:
        raise DataError(f"array {key!r} is empty (shape {x.shape})")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"array {key!r} must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"array {key!r} must have shape (N, features...), got {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"array {key!r} contains NaN or infinite values")
    largest = float(np.abs(x).max())
    if largest > _FLOAT32_MAX:
        raise DataError(f"array {key!r} holds values as large as {largest:.3g}, which overflow float32 (largest "
                        f"{_FLOAT32_MAX:.3g}); rescale the data")


def _check_label_array(key: str, y: np.ndarray) -> None:
    if y.size == 0:
        raise DataError(f"array {key!r} is empty (shape {y.shape})")
    if y.ndim != 1:
        raise DataError(f"array {key!r} must be 1-D class labels, got shape {y.shape}")
    is_int = np.issubdtype(y.dtype, np.integer)
    is_float = np.issubdtype(y.dtype, np.floating)
    if not (is_int or (is_float and np.isfinite(y).all() and (y == np.round(y)).all())):
        raise DataError(f"array {key!r} must hold integer class labels, got dtype {y.dtype}")
    if (y < 0).any():
        raise DataError(f"array {key!r} holds negative labels; labels must be integers >= 0")


def _check_layout_shape(ndim: int, layout: str) -> None:
    if layout == "image" and ndim not in (3, 4):
        raise DataError(f"layout 'image' needs x of shape (N, H, W) or (N, C, H, W), got {ndim}-D")
    if layout == "sequence" and ndim != 3:
        raise DataError(f"layout 'sequence' needs x of shape (N, T, F), got {ndim}-D")


def _labels(y: np.ndarray) -> np.ndarray:
    return y.astype(np.int64)


def _split_validation(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of ``(x, y)``, stratified when every class allows it."""
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 (heavy, used here only)

    try:
        return train_test_split(x, y, test_size=fraction, stratify=y, random_state=seed)
    except ValueError:  # a class with one sample, or fewer held-out samples than classes
        pass
    try:
        return train_test_split(x, y, test_size=fraction, random_state=seed)
    except ValueError as exc:
        raise DataError(f"cannot hold out val_fraction={fraction} of {len(x)} samples ({exc})") from exc


def _npz_layout(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "flat":
        return x.reshape(len(x), -1)
    if layout == "image" and x.ndim == 3:
        return np.ascontiguousarray(x[:, None])
    return x
