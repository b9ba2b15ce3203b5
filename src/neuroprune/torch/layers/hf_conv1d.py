"""Hugging Face ``Conv1D`` (GPT-2 and kin): a Linear whose weight is stored transposed, ``(in, out)``.

``out`` neurons are columns of the weight (and entries of the bias), ``in`` features are its rows.
Registered when the hf adapter loads (this module imports transformers).

Example:
    >>> import torch
    >>> from transformers.pytorch_utils import Conv1D
    >>> layer = Conv1DHandler().prune(Conv1D(3, 4), {"out": torch.tensor([0, 2]), "in": torch.tensor([1, 2, 3])})
    >>> (layer.nx, layer.nf, tuple(layer.weight.shape))
    (3, 2, (3, 2))
"""

from __future__ import annotations

from neuroprune.core.errors import DependencyError
from neuroprune.torch.layers.linear import LinearHandler

try:
    from transformers.pytorch_utils import Conv1D
except ImportError as error:  # pragma: no cover - only imported by the hf adapter
    raise DependencyError("the Conv1D handler needs transformers: pip install 'neuroprune[hf]'") from error


class Conv1DHandler(LinearHandler):
    """``transformers.pytorch_utils.Conv1D``: ``y = x @ weight + bias`` with ``weight`` shaped ``(nx, nf)``."""

    module_types = (Conv1D,)
    out_dim = 1
    width_attributes = {"in": "nx", "out": "nf"}
