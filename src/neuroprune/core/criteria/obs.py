"""``obs``: the output error a neuron's removal leaves after least-squares compensation.

Optimal Brain Surgeon applied to structured removal (Hassibi & Stork 1993; its layer-wise form in
OBC / SparseGPT, Frantar & Alistarh 2022, and ZipLM, Kurtic et al. 2023): for a Linear layer
``y = W x + b`` reading the group, with ``H`` the Gram matrix of its inputs ``[x, 1]`` over the
calibration data (damped by ``damping`` times its mean diagonal), removing the input columns ``B``
of a unit and re-fitting the other columns and the bias by least squares raises the squared output
error by ``tr(W_B (H^-1)_BB^-1 W_B^T)``; for a single column, ``||W_:,j||^2 / (H^-1)_jj``. That
sum over every Linear that reads the unit is its score. It is the criterion that matches
``reconstruct=True``, which performs exactly that re-fit. Every layer that reads the group must
be an ``nn.Linear``; memory: one Gram matrix (inputs x inputs) per such layer.

Example:
    >>> get_criterion("obs").needs({}).gram
    True
"""

from __future__ import annotations

import torch
import torch.nn as nn

from neuroprune.core.errors import ConfigError, DataError
from neuroprune.core.criteria.registry import Criterion, Needs, get_criterion, register_criterion

DEFAULT_DAMPING = 0.01


def removal_costs(weight: torch.Tensor, gram: torch.Tensor, unit_of: torch.Tensor, units: int,
                  damping: float = DEFAULT_DAMPING) -> torch.Tensor:
    """Per unit, the squared-error increase of removing its input columns with optimal compensation.

    ``weight`` is (outputs, inputs), ``gram`` (inputs + 1, inputs + 1) with the bias column last,
    ``unit_of`` maps every input column to a unit (or -1).

    Example:
        >>> x = torch.randn(200, 3, dtype=torch.float64)
        >>> x1 = torch.cat([x, torch.ones(200, 1, dtype=torch.float64)], 1)
        >>> w = torch.randn(2, 3, dtype=torch.float64)
        >>> cost = removal_costs(w, x1.T @ x1, torch.arange(3), 3, damping=0.0)
        >>> refit = torch.linalg.lstsq(x1[:, [1, 2, 3]], x @ w.T).solution  # drop column 0, re-fit
        >>> bool(torch.isclose(cost[0], ((x1[:, [1, 2, 3]] @ refit - x @ w.T) ** 2).sum()))
        True
    """
    h = gram.double()
    inputs = h.shape[0] - 1
    damp = damping * h.diagonal()[:inputs].mean().clamp_min(1e-12)
    h = h + torch.diag(torch.cat([torch.full((inputs,), float(damp), dtype=h.dtype, device=h.device),
                                  torch.zeros(1, dtype=h.dtype, device=h.device)]))
    h_inv = torch.linalg.inv(h)
    w = weight.detach().double()
    costs = torch.zeros(units, dtype=torch.float64)
    counts = torch.bincount(unit_of[unit_of >= 0], minlength=units)
    if bool((counts <= 1).all()):  # one column per unit: the diagonal formula, vectorised
        columns = torch.nonzero(unit_of >= 0).flatten()
        per_column = (w[:, columns] ** 2).sum(dim=0) / h_inv.diagonal()[columns]
        costs.index_add_(0, unit_of[columns], per_column.cpu())
        return costs
    for unit in torch.nonzero(counts).flatten().tolist():
        block = torch.nonzero(unit_of == unit).flatten().to(h.device)
        w_b = w[:, block]
        solved = torch.linalg.solve(h_inv[block][:, block], w_b.T)  # (H^-1)_BB^-1 W_B^T
        costs[unit] = float((w_b * solved.T).sum())
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
        scores = {}
        for group in data.graph.groups:
            total = torch.zeros(group.size, dtype=torch.float64)
            readers = [m for m in group.members if m.axis == "in"]
            for member in readers:
                module = data.model.get_submodule(member.path)
                if not isinstance(module, nn.Linear):
                    raise ConfigError([f"criterion 'obs' scores units read by nn.Linear layers only; group "
                                       f"{group.name!r} is read by {member.path} ({type(module).__name__}). Give that "
                                       "group another criterion (a layer policy) or choose one of the others"])
                entry = data.stats.axes.get((member.path, member.axis)) if data.stats else None
                if entry is None or entry.gram is None:
                    raise DataError(f"criterion 'obs': no input statistics for {member.path}; it did not run on "
                                    "the calibration data")
                total += removal_costs(module.weight, entry.gram, torch.from_numpy(member.unit_of), group.size,
                                       damping)
            if not readers:
                raise ConfigError([f"criterion 'obs': group {group.name!r} is read by no layer, so removing a unit "
                                   "changes no output it could measure"])
            scores[group.name] = total.float()
        return scores


register_criterion(ObsCriterion())

__all__ = ["ObsCriterion", "removal_costs", "get_criterion"]
