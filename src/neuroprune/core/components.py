"""Connected components of an undirected graph given as edge arrays, in numpy alone.

Discovery couples channel ids with edges and needs the partition they induce. This replaces
``scipy.sparse.csgraph.connected_components`` (the one reason scipy loaded, ~1 s) with a
union-find by pointer jumping: every id points at the smallest id of its component.

Example:
    >>> import numpy as np
    >>> component_labels(5, np.array([0, 3]), np.array([1, 4])).tolist()
    [0, 0, 2, 3, 3]
"""

from __future__ import annotations

import numpy as np


def component_labels(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Label each of ``n`` nodes with the smallest node of its component (int64).

    ``rows[i] -- cols[i]`` are the edges (direction ignored, repeats and self-loops allowed).
    Two nodes share a label exactly when a path joins them, as with scipy's
    ``connected_components(..., directed=False)``; only the label values differ.
    """
    parent = np.arange(n, dtype=np.int64)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    while True:
        root_a, root_b = parent[rows], parent[cols]
        apart = root_a != root_b
        if not apart.any():
            return parent
        low, high = np.minimum(root_a[apart], root_b[apart]), np.maximum(root_a[apart], root_b[apart])
        np.minimum.at(parent, high, low)  # hook each larger root under a smaller one: parent[i] <= i stays true
        while True:  # jump pointers until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
