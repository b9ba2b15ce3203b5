"""Offline data sets: scikit-learn's bundled digits and user ``.npz`` files.

Nothing here downloads anything. Every loader returns a :class:`DataSplits` with a training,
a validation and a test split. The validation split is held out from the training data and is
what pruning decisions may look at; the test split is only for reporting. The bundled digits are
standardised per feature with statistics of the training split only; ``.npz`` data is used exactly
as stored (cast to float32) unless ``standardize=True`` asks for the same treatment.

Modules: :mod:`~neuroprune.data.splits` (the container, layouts, batching),
:mod:`~neuroprune.data.digits` and :mod:`~neuroprune.data.npz` (the two loaders).

Example:
    >>> splits = load_data("digits", layout="image", image_size=16)
    >>> splits.input_shape, splits.num_classes
    ((1, 16, 16), 10)
"""

from __future__ import annotations

from neuroprune.core.errors import DataError, UnknownNameError
from neuroprune.data.digits import load_digits
from neuroprune.data.npz import LARGE_FEATURE, MIN_VAL_SAMPLES, NPZ_KEYS, load_npz
from neuroprune.data.splits import LAYOUTS, DataSplits, iterate_batches

__all__ = ["DATA_SPECS", "LARGE_FEATURE", "LAYOUTS", "MIN_VAL_SAMPLES", "NPZ_KEYS", "DataSplits", "iterate_batches",
           "load_data", "load_digits", "load_npz"]

DATA_SPECS = ("digits", "npz:PATH")
"""The data specs :func:`load_data` understands."""


def load_data(spec: str, layout: str = "flat", seed: int = 0, image_size: int = 8,
              standardize: bool = False) -> DataSplits:
    """Load a data set by spec: ``"digits"`` or ``"npz:PATH"``.

    Args:
        spec: ``"digits"`` or ``"npz:"`` followed by a file path.
        layout: ``"flat"``, ``"image"`` or ``"sequence"``.
        seed: Random state of the splits.
        image_size: Side of digits images in the ``"image"`` layout; ``npz`` data keep
            their own size.
        standardize: ``npz`` data: centre and scale every feature with the training split's
            statistics (default: used as stored). The bundled digits are always standardised.

    Raises:
        UnknownNameError: ``spec`` is neither form.

    Example:
        >>> load_data("digits", layout="sequence").x_train.shape[1:]
        torch.Size([8, 8])
    """
    if spec == "digits":
        return load_digits(seed=seed, layout=layout, image_size=image_size)
    if isinstance(spec, str) and spec.startswith("npz:"):
        path = spec[len("npz:") :]
        if not path:
            raise DataError("data spec 'npz:' needs a file path, e.g. 'npz:data/my_set.npz'")
        return load_npz(path, layout=layout, seed=seed, standardize=standardize)
    raise UnknownNameError("data spec", str(spec), DATA_SPECS)
