"""Keras ``GroupNormalization``: a neuron is a whole group of channels.

GroupNormalization normalises each group of ``channels // groups`` neighbouring channels on its
own, so removing whole groups leaves the others computing exactly what they did: the channels of
one group are coupled into one unit (like the torch side's ``nn.GroupNorm``), ``gamma``/``beta``
are sliced and ``groups`` decreases. A masked group sees zeros in and has zero ``gamma``/``beta``,
so it outputs zeros, as the smaller layer does. ``groups=-1`` (one group per channel) stays -1.

Example:
    >>> import numpy as np
    >>> config = {"groups": 3}
    >>> GROUP_NORM_RULE.resize_layer_config(config, "features", np.array([2, 3, 4, 5]), channels=6)
    >>> config["groups"]
    2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from neuroprune.core.errors import PlanError
from neuroprune.keras.layers import LayerRule


def _channels_per_group(groups: int, channels: int) -> int:
    return 1 if groups in (-1, channels) else channels // groups


@dataclass(frozen=True)
class GroupNormRule(LayerRule):
    """``features`` of a GroupNormalization, resized in whole groups."""

    def resize_layer_config(self, config: dict[str, Any], axis: str, kept: np.ndarray, channels: int) -> None:
        """Write the new ``groups`` into ``config``; refuse a ``kept`` that is not made of whole groups."""
        groups = int(config.get("groups", 32))
        per_group = _channels_per_group(groups, channels)
        kept = np.asarray(kept, dtype=np.int64)
        table = kept.reshape(-1, per_group) if len(kept) % per_group == 0 else None
        if table is None or (table[:, 0] % per_group != 0).any() or (np.diff(table, axis=1) != 1).any():
            raise PlanError(f"{config.get('name', 'GroupNormalization')}: keeps whole groups of {per_group} "
                            f"channels only (channels {channels}, groups {groups})")
        if groups != -1:
            config["groups"] = len(kept) // per_group


GROUP_NORM_RULE = GroupNormRule(("GroupNormalization",), {"features": {"gamma": 0, "beta": 0}}, {"features": None})


def propagate_group_norm(ids: Any, call: Any) -> list[np.ndarray | None]:
    """Bind ``features`` to the input channels and couple the channels of each group into one unit."""
    flow, shape = call.inputs[0], call.shapes[0]
    axis = call.config.get("axis", -1)
    if flow is None or shape is None or axis not in (-1, len(shape) - 1):
        for other in call.inputs:
            if other is not None:
                ids.freeze(other, f"{call.path}: group normalisation over an axis other than the channels")
        return [None]
    ids.bind_axis(call.path, "features", flow)
    table = flow.reshape(-1, _channels_per_group(int(call.config.get("groups", 32)), len(flow)))
    for column in range(1, table.shape[1]):
        ids.couple(table[:, 0], table[:, column])
    return [flow]
