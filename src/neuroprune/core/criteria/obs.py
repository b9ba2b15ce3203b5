"""``obs``: the output error a neuron's removal leaves after least-squares compensation.

Optimal Brain Surgeon applied to structured removal (Hassibi & Stork 1993; its layer-wise form in
OBC / SparseGPT, Frantar & Alistarh 2022, and ZipLM, Kurtic et al. 2023): for a Linear layer
``y = W x + b`` reading the group, with ``H`` the Gram matrix of its inputs ``[x, 1]`` over the
calibration data (damped by ``damping`` times its mean diagonal), removing the input columns ``B``
of a unit and re-fitting the other columns and the bias by least squares raises the squared output
error by ``tr(W_B (H^-1)_BB^-1 W_B^T)``; for a single column, ``||W_:,j||^2 / (H^-1)_jj``. That
sum over every Linear that reads the unit is its score. It is the criterion that matches
``reconstruct=True``, which performs exactly that re-fit. Every layer that reads the group must
be a Linear layer (``nn.Linear``, or the ``(in, out)``-stored ``Conv1D`` of GPT-2); memory: one
Gram matrix (inputs x inputs) per such layer. ``H^-1`` comes from the Cholesky factor of ``H``, and
the blocks of multi-column units (heads) are solved as one batch against their own factors, on the
device the statistics live on.

Example:
    >>> get_criterion("obs").needs({}).gram
    True
"""

from __future__ import annotations

import functools
from typing import Any

import array_api_compat as compat
import numpy as np

from neuroprune.core.criteria.arrays import like, namespace, to_host
from neuroprune.core.criteria.owned import run_on_owners
from neuroprune.core.criteria.registry import Criterion, Needs, get_criterion, register_criterion
from neuroprune.core.errors import ConfigError, DataError

DEFAULT_DAMPING = 0.01
#: layer types (class names) whose units are read by a weight of shape (outputs, inputs) or its transpose
LINEAR_TYPES = ("Linear", "Conv1D")


def _inverse_factor(h: Any) -> Any:
    """``L^-1`` for the Cholesky factor ``L`` of a symmetric positive-definite ``h``, so that
    ``h^-1 = L^-T L^-1``: its columns give the diagonal and the diagonal blocks of ``h^-1``."""
    xp = namespace(h)
    factor = xp.linalg.cholesky(h)
    identity = xp.eye(h.shape[0], dtype=h.dtype, device=compat.device(h))
    if compat.is_torch_array(factor):  # a triangular solve (the standard API has none; numpy neither)
        return xp.linalg.solve_triangular(factor, identity, upper=False)
    return xp.linalg.inv(factor)


def removal_costs(weight: Any, gram: Any, unit_of: Any, units: int, damping: float = DEFAULT_DAMPING) -> np.ndarray:
    """Per unit, the squared-error increase of removing its input columns with optimal compensation.

    ``weight`` is (outputs, inputs), ``gram`` (inputs + 1, inputs + 1) with the bias column last
    (any array-API arrays, e.g. torch tensors on a GPU: the maths runs there), ``unit_of`` maps
    every input column to a unit (or -1). Returns float64 costs on the host.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((200, 3))
        >>> x1 = np.concatenate([x, np.ones((200, 1))], 1)
        >>> w = rng.standard_normal((2, 3))
        >>> cost = removal_costs(w, x1.T @ x1, np.arange(3), 3, damping=0.0)
        >>> refit = np.linalg.lstsq(x1[:, [1, 2, 3]], x @ w.T, rcond=None)[0]  # drop column 0, re-fit
        >>> bool(np.isclose(cost[0], ((x1[:, [1, 2, 3]] @ refit - x @ w.T) ** 2).sum()))
        True
    """
    xp = namespace(gram)
    device = compat.device(gram)
    h = xp.astype(gram, xp.float64)
    size = h.shape[0]
    inputs = size - 1
    damp = damping * max(float(xp.mean(xp.linalg.diagonal(h)[:inputs])), 1e-12)
    on_diagonal = xp.asarray(np.r_[np.full(inputs, damp), 0.0], dtype=xp.float64, device=device)
    inverse_factor = _inverse_factor(h + xp.eye(size, dtype=xp.float64, device=device) * on_diagonal)
    w = xp.astype(like(weight, h), xp.float64)
    unit_of = np.asarray(unit_of, dtype=np.int64)
    costs = np.zeros(units, dtype=np.float64)
    counts = np.bincount(unit_of[unit_of >= 0], minlength=units)
    order = np.argsort(unit_of, kind="stable")  # input columns grouped by unit, ascending within each
    for width in np.unique(counts[counts > 0]).tolist():
        members = np.flatnonzero(counts == width)
        # (units of this width, width): the input columns of each unit
        first = np.searchsorted(unit_of[order], members)
        blocks = order[first[:, None] + np.arange(width)[None, :]]
        index = xp.asarray(blocks, device=device)
        if width == 1:  # one column per unit: ||W_:,j||^2 / (H^-1)_jj, (H^-1)_jj = ||L^-1 e_j||^2
            column = index[:, 0]
            inverse_diagonal = xp.sum(xp.take(inverse_factor, column, axis=1) ** 2, axis=0)
            per_unit = xp.sum(xp.take(w, column, axis=1) ** 2, axis=0) / inverse_diagonal
        else:  # tr(W_B ((H^-1)_BB)^-1 W_B^T) = ||C^-1 W_B^T||^2 with C C^T = (H^-1)_BB, all blocks at once
            block_columns = xp.permute_dims(inverse_factor[:, index], (1, 0, 2))  # (units, inputs + 1, width)
            inverse_blocks = xp.matrix_transpose(block_columns) @ block_columns  # (H^-1)_BB: (units, width, width)
            factor = xp.linalg.cholesky(inverse_blocks)
            columns = xp.permute_dims(w[:, index], (1, 2, 0))  # (units, width, outputs)
            solved = xp.linalg.solve(factor, columns)
            per_unit = xp.sum(solved * solved, axis=(1, 2))
        costs[members] = to_host(per_unit)
    return costs


class ObsCriterion(Criterion):
    """Output error its removal leaves once the Linear layers reading it are re-fitted (pairs with reconstruct)."""

    name = "obs"
    options = ("damping",)

    def needs(self, options):
        return Needs(gram=True)

    def score(self, data, options):
        damping = float(options.get("damping", DEFAULT_DAMPING))
        if not damping >= 0:
            raise ConfigError([f"criterion 'obs': damping must be >= 0, got {damping}"])
        owners = getattr(data.stats, "gram_owners", None) or {}
        jobs, readers_of = {}, {}
        for group in data.graph.groups:
            readers = [m for m in group.members if m.axis == "in"]
            for member in readers:
                key = (member.path, member.axis)
                entry = data.stats.axes.get(key) if data.stats else None
                held = (entry is not None and entry.gram is not None) or key in owners  # here or on its owner rank
                kind = data.graph.module_types.get(member.path, "?")
                if kind not in LINEAR_TYPES and not held:
                    raise ConfigError([f"criterion 'obs' scores units read by nn.Linear layers only; group "
                                       f"{group.name!r} is read by {member.path} ({kind}). Give that "
                                       "group another criterion (a layer policy) or choose one of the others"])
                if not held:
                    raise DataError(f"criterion 'obs': no input statistics for {member.path}; it did not run on "
                                    "the calibration data")
                jobs[(group.name, member.path)] = (key, functools.partial(_member_costs, data, member, group.size,
                                                                          damping))
            if not readers:
                raise ConfigError([f"criterion 'obs': group {group.name!r} is read by no layer, so removing a unit "
                                   "changes no output it could measure"])
            readers_of[group.name] = [(group.name, m.path) for m in readers]
        costs = run_on_owners(data, jobs)  # each Gram matrix is solved where it is held
        scores = {}
        for group in data.graph.groups:
            total = np.zeros(group.size, dtype=np.float64)
            for job in readers_of[group.name]:
                total += costs[job]
            scores[group.name] = total
        return scores


def _member_costs(data, member, units: int, damping: float) -> np.ndarray:
    entry = data.stats.axes[(member.path, member.axis)]
    return removal_costs(_reader_weight(data, member.path), entry.gram, member.unit_of, units, damping)


def _reader_weight(data, path: str) -> Any:
    """The (outputs, inputs) weight of the Linear layer at ``path``, from the seam's rows of its input axis."""
    reading = data.weight_rows(path, "in", outgoing=True)[len(data.weight_rows(path, "in")):]
    rows = reading[0].rows  # (inputs, outputs): one row per input unit
    return namespace(rows).matrix_transpose(rows)


register_criterion(ObsCriterion())

__all__ = ["ObsCriterion", "removal_costs", "get_criterion"]
