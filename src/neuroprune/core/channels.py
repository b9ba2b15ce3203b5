"""Channel ids: how a frontend records which channels its layers produce, read and tie together.

Every channel a layer produces gets an integer id; operations that tie channels (a residual add)
*couple* ids; what may not be pruned (model inputs and outputs, an unknown operation) is
*frozen*. Coupled ids form one unit. The torch frontend (``neuroprune.torch.graph.context``) and
the Keras one (``neuroprune.keras.grouping``) both record into a :class:`ChannelIds`.

Example:
    >>> ids = ChannelIds()
    >>> a = ids.producer_axis("fc1", "out", 3)
    >>> ids.bind_axis("fc2", "in", a)
    >>> b = ids.producer_axis("skip", "out", 3)
    >>> ids.couple(a, b)
    >>> ids.unit_labels()[a].tolist() == ids.unit_labels()[b].tolist()
    True
"""

from __future__ import annotations

import numpy as np

from neuroprune.core.components import component_labels


class ChannelIds:
    """Ids of channels, their couplings, frozen ids and the axes of every layer seen so far."""

    def __init__(self) -> None:
        self.next_id = 0
        self.edges: list[tuple[np.ndarray, np.ndarray]] = []
        self.frozen: list[tuple[np.ndarray, str]] = []
        #: (layer path, axis) -> channel ids of each position, in discovery order
        self.axes: dict[tuple[str, str], np.ndarray] = {}
        self.producers: list[tuple[str, str]] = []

    def new_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        return ids

    def couple(self, a: np.ndarray, b: np.ndarray) -> None:
        """Tie channels position by position; channels of different widths are frozen instead."""
        a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
        if len(a) != len(b):
            self.freeze(a, "channels tied to a tensor of another width")
            self.freeze(b, "channels tied to a tensor of another width")
            return
        self.edges.append((a, b))

    def freeze(self, ids: np.ndarray, reason: str) -> None:
        self.frozen.append((np.asarray(ids).ravel(), reason))

    def producer_axis(self, path: str, axis: str, size: int) -> np.ndarray:
        """Ids of the units a layer computes; a layer called twice computes the same ones."""
        key = (path, axis)
        if key not in self.axes:
            self.axes[key] = self.new_ids(size)
            self.producers.append(key)
        return self.axes[key]

    def bind_axis(self, path: str, axis: str, ids: np.ndarray) -> None:
        """Record which channels run along an axis a layer reads or carries."""
        key = (path, axis)
        if key in self.axes:
            self.couple(self.axes[key], ids)
        else:
            self.axes[key] = np.asarray(ids)

    def unit_labels(self) -> np.ndarray:
        """The unit (connected component under the couplings) of every channel id."""
        empty = np.zeros(0, dtype=np.int64)
        rows = np.concatenate([a for a, _ in self.edges]) if self.edges else empty
        cols = np.concatenate([b for _, b in self.edges]) if self.edges else empty
        return component_labels(self.next_id, rows, cols)
