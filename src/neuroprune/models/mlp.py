"""The zoo's fully connected network.

Example:
    >>> mlp(hidden=(16,)).fc2.in_features
    16
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from torch import nn

from neuroprune.core.errors import ConfigError
from neuroprune.models.arguments import require_positive


def mlp(num_classes: int = 10, in_features: int = 64, hidden: Sequence[int] = (128, 64)) -> nn.Sequential:
    """Fully connected net ``fc1, act1, ..., fcK`` on flat inputs.

    Example:
        >>> mlp().fc1
        Linear(in_features=64, out_features=128, bias=True)
    """
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
        raise ConfigError([f"hidden must be a sequence of layer widths, e.g. (128, 64), got {hidden!r}"])
    hidden = tuple(hidden)
    require_positive(num_classes=num_classes, in_features=in_features)
    require_positive(**{f"hidden[{i}]": width for i, width in enumerate(hidden)})
    widths = (in_features, *hidden)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(len(hidden)):
        layers[f"fc{i + 1}"] = nn.Linear(widths[i], widths[i + 1])
        layers[f"act{i + 1}"] = nn.ReLU(inplace=False)
    layers[f"fc{len(hidden) + 1}"] = nn.Linear(widths[-1], num_classes)
    return nn.Sequential(layers)
