"""core.components partitions nodes exactly as scipy's connected_components does."""

from __future__ import annotations

import numpy as np
import pytest

from neuroprune.core.components import component_labels

scipy_csgraph = pytest.importorskip("scipy.sparse.csgraph")
scipy_sparse = pytest.importorskip("scipy.sparse")


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labelings agree when each label of one maps to exactly one label of the other."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("seed", range(20))
def test_partition_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    edges = int(rng.integers(0, 2 * n))
    rows, cols = rng.integers(0, n, edges), rng.integers(0, n, edges)
    ours = component_labels(n, rows, cols)
    matrix = scipy_sparse.coo_matrix((np.ones(edges), (rows, cols)), shape=(n, n))
    theirs = scipy_csgraph.connected_components(matrix, directed=False)[1]
    assert _same_partition(ours, theirs)
    assert (ours <= np.arange(n)).all() and (ours[ours] == ours).all()  # each label is its component's root


def test_long_chain_and_no_edges() -> None:
    n = 10_000
    chain = np.arange(n - 1)
    assert (component_labels(n, chain[::-1], chain[::-1] + 1) == 0).all()
    assert component_labels(3, np.zeros(0, int), np.zeros(0, int)).tolist() == [0, 1, 2]
    assert component_labels(0, np.zeros(0, int), np.zeros(0, int)).tolist() == []
