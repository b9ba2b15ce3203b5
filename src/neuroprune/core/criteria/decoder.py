"""Criteria from the width-pruning literature on decoder LMs: ``wanda`` and ``flap``.

Both read a neuron where it is *consumed*: the input channel ``j`` of the layers that read it
(the FFN's down projection, the attention output projection), weighing the column ``W[:, j]`` of
those layers by statistics of the channel's activations ``x_j`` over the calibration tokens.

* ``wanda`` (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language
  Models"; structured as in An et al. 2024): ``sum_i |W_ij| * ||x_j||_2``, the per-weight Wanda
  score summed over the neuron's outgoing weights; ``||x_j||`` is the root mean square over tokens.
* ``flap`` (An et al. 2024, "Fluctuation-based Adaptive Structured Pruning for Large Language
  Models"): ``Var(x_j) * ||W[:, j]||_2^2``, how much the neuron's contribution *fluctuates*
  around its mean. A neuron whose output is nearly constant can be removed and its mean
  contribution moved into the consuming layer's bias: ``reconstruct=True`` does this and more
  where that layer has a bias (the least-squares re-fit includes the intercept).

A head (or a key/value group) sums the scores of its channels.

Example:
    >>> import torch, torch.nn as nn
    >>> from neuroprune.torch.graph.discover import discover
    >>> from neuroprune.torch.stats import collect_statistics
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> graph = discover(model, torch.randn(1, 4))
    >>> stats = collect_statistics(model, graph, [torch.randn(32, 4)], lambda m, b: m(b).sum(), progress=False)
    >>> from neuroprune.core.criteria import ScoringInput, score
    >>> score(ScoringInput(model, graph, stats), "flap")["0"].shape
    (8,)
"""

from __future__ import annotations

import numpy as np

from neuroprune.core.criteria.aggregate import sum_to_units
from neuroprune.core.criteria.arrays import row_sums, to_host
from neuroprune.core.criteria.registry import Criterion, Needs, register_criterion
from neuroprune.core.errors import DataError


def _column_norms(data, path: str, axis: str, p: float) -> np.ndarray | None:
    """``sum_i |W_ij|^p`` over the weights that read each position of ``(path, axis)``."""
    # the seam lists the incoming weights first, then the outgoing ones
    reading = data.weight_rows(path, axis, outgoing=True)[len(data.weight_rows(path, axis)):]
    parts = [row_sums(view.rows, p) for view in reading]
    return np.sum(parts, axis=0) if parts else None


def _score_consumers(data, name: str, p: float, per_position) -> dict[str, np.ndarray]:
    """Sum ``per_position(entry, sum_i |W_ij|^p)`` over the consuming members of every group."""
    scores = {}
    for group in data.graph.groups:
        values = {}
        for member in group.members:
            entry = data.stats.axes.get((member.path, member.axis)) if data.stats is not None else None
            if entry is None or entry.act_sq is None or entry.act_n <= 0:
                continue
            columns = _column_norms(data, member.path, member.axis, p)
            if columns is not None:
                values[(member.path, member.axis)] = per_position(entry, columns)
        if not values:
            raise DataError(f"criterion {name!r}: group {group.name!r} has no observed layer that reads its neurons "
                            "(it needs the inputs of the layers that consume them); use magnitude or taylor")
        scores[group.name] = sum_to_units(group, values)
    return scores


def _wanda(entry, columns: np.ndarray) -> np.ndarray:
    return columns * np.sqrt(to_host(entry.act_sq) / entry.act_n)


def _flap(entry, columns: np.ndarray) -> np.ndarray:
    n = entry.act_n
    mean = to_host(entry.act_sum) / n
    variance = np.maximum((to_host(entry.act_sq) - n * mean * mean) / max(n - 1, 1.0), 0)
    return variance * columns


class WandaCriterion(Criterion):
    """|W| x ||x||: outgoing weights times the neuron's activation norm (Wanda, Sun et al. 2023)."""

    name = "wanda"

    def needs(self, options):
        return Needs(activations=True)

    def score(self, data, options):
        return _score_consumers(data, self.name, 1.0, _wanda)


class FlapCriterion(Criterion):
    """Var(x) x ||W||^2: fluctuation of the neuron's contribution (FLAP, An et al. 2024)."""

    name = "flap"

    def needs(self, options):
        return Needs(activations=True)

    def score(self, data, options):
        return _score_consumers(data, self.name, 2.0, _flap)


register_criterion(WandaCriterion())
register_criterion(FlapCriterion())
