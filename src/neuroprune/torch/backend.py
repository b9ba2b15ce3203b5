"""The torch backend (stand-in): only what the core criteria read, :meth:`weight_rows`.

The full ``TorchBackend`` (discover, statistics, masks, surgery, recovery, ...) comes from the
backend-seam branch and replaces this file; it registers under the same name, ``"fx"``.

Example:
    >>> import torch.nn as nn
    >>> from neuroprune.core.backend import backend_for
    >>> [r.name for r in backend_for(nn.Linear(3, 2)).weight_rows(nn.Sequential(nn.Linear(3, 2)), "0", "out")]
    ['weight']
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from neuroprune.core.backend import WeightRows, register_backend
from neuroprune.torch.weights import weight_rows


class TorchBackend:
    """Torch models (``nn.Module``) through the layer handlers."""

    name = "fx"

    def matches(self, model: Any) -> bool:
        return isinstance(model, nn.Module)

    def weight_rows(self, model: nn.Module, path: str, axis: str, *, outgoing: bool = False) -> list[WeightRows]:
        return weight_rows(model, path, axis, outgoing)


register_backend(TorchBackend(), replace=True)
