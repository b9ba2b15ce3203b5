"""Analytic cost model: a model's parameters or FLOPs as a function of its groups' widths.

Budget search asks "what would the model cost with these widths?" hundreds of times. Instead of
pruning a copy and tracing it for each question, the cost is recorded once: every module's own
cost (parameters it holds, FLOPs ``FlopCounterMode`` attributes to it and not to a child) is
measured on a few physically pruned copies with random widths, and fitted exactly by a polynomial
of total degree two in the kept fractions of the groups that touch the module (a Linear or Conv
costs in x out, a norm its width, an LSTM hidden x (input + hidden)). Held-out copies check the
fit; a model the polynomial cannot describe gets no cost model (``record`` returns ``None``) and
the caller measures as before.

Example:
    >>> import torch
    >>> from neuroprune.core.backend import backend_for
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> graph = backend_for(model).discover(model, torch.randn(1, 4))
    >>> cost = CostModel.record(model, graph, "flops", torch.randn(1, 4))
    >>> cost.value({graph.groups[0].name: 4}), cost.value({})
    (48.0, 96.0)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.nn as nn

MAX_GROUPS_PER_MODULE = 8  # 45 unknowns; beyond that the model falls back to measuring


@dataclass
class _Term:
    """One module's cost: ``coefficients`` over the monomials of its groups' kept fractions."""

    groups: tuple[str, ...]
    coefficients: np.ndarray


def _monomials(x: np.ndarray) -> np.ndarray:
    """Rows of (1, x_i, x_i * x_j for i <= j) for the columns of ``x`` (samples x groups)."""
    n, d = x.shape
    cols = [np.ones(n)] + [x[:, i] for i in range(d)]
    cols += [x[:, i] * x[:, j] for i, j in itertools.combinations_with_replacement(range(d), 2)]
    return np.stack(cols, axis=1)


def module_costs(model: nn.Module, quantity: str, example: Any = None) -> dict[str, float]:
    """Each module's own parameters or FLOPs (not its children's), by module path ("" = root).

    Example:
        >>> import torch
        >>> module_costs(torch.nn.Sequential(torch.nn.Linear(4, 2)), "params")
        {'': 0.0, '0': 10.0}
    """
    if quantity == "params":
        seen: set[int] = set()
        costs = {}
        for path, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            seen.update(id(p) for p in own)
            costs[path] = float(sum(p.numel() for p in own))
        return costs
    from neuroprune.torch.metrics import run_flop_counter

    counter = run_flop_counter(model, example)
    root = type(model).__name__
    totals = {k: float(sum(v.values())) for k, v in counter.get_flop_counts().items()}
    subtree = {path: totals.get(f"{root}.{path}" if path else root, 0.0) for path, _ in model.named_modules()}
    costs = dict(subtree)
    for path, module in model.named_modules():
        for name, _ in module.named_children():
            costs[path] -= subtree.get(f"{path}.{name}" if path else name, 0.0)
    costs[""] += totals.get("Global", 0.0) - subtree[""]  # anything outside the root's forward
    return costs


def _related(owner: str, path: str) -> bool:
    """Whether module ``path`` is ``owner``, inside it, or one of its ancestors."""
    return owner == "" or path == owner or path.startswith(owner + ".") or owner.startswith(path + ".")


class CostModel:
    """Parameters or FLOPs of the model for given kept widths, by arithmetic (see module docstring)."""

    def __init__(self, terms: dict[str, _Term], sizes: dict[str, int], full: float):
        self.terms, self.sizes, self.full = terms, sizes, full

    def value(self, kept: dict[str, int]) -> float:
        """Cost with ``kept`` units in the named groups (others at full width); costs are counts,
        so the sum is rounded to the nearest whole number."""
        total = 0.0
        for term in self.terms.values():
            x = np.array([[kept.get(g, self.sizes[g]) / self.sizes[g] for g in term.groups]])
            total += float(_monomials(x)[0] @ term.coefficients)
        return float(round(total))

    @classmethod
    def record(cls, model: nn.Module, graph, quantity: str, example: Any = None, *, seed: int = 0,
               skip: set[str] | frozenset[str] = frozenset(), min_widths: dict[str, int] | None = None,
               checks: int = 2) -> CostModel | None:
        """Fit the cost of ``model`` (``quantity`` "params" or "flops") over the widths of ``graph``'s
        groups, from a few pruned copies; ``None`` where the polynomial does not reproduce held-out
        copies exactly. Groups in ``skip`` keep their width; ``min_widths`` bound the random widths."""
        from neuroprune.torch.surgery import apply_keep

        min_widths = min_widths or {}
        groups = [g for g in graph.groups if g.name not in skip and g.prunable.any()]
        sizes = {g.name: g.size for g in graph.groups}
        full_costs = module_costs(model, quantity, example)
        paths = {g.name: {m.path for m in g.members} for g in groups}
        # a module's own cost depends on the groups with a member in its subtree or at an ancestor
        # (nn.MultiheadAttention's heads resize its out_proj child); none if it costs nothing
        # (a module costing nothing unpruned may cost something pruned: a pruned attention calls
        # its out_proj as a module, so its FLOPs move there)
        touching = {owner: [g for g in paths if any(_related(owner, p) for p in paths[g])] for owner in full_costs}
        costly = [len(touching[path]) for path, cost in full_costs.items() if cost]
        if max(costly, default=0) > MAX_GROUPS_PER_MODULE:
            return None
        unknowns = _monomials(np.zeros((1, max(costly, default=0)))).shape[1]
        rng = np.random.default_rng(seed)
        samples: list[dict[str, int]] = [{}]
        for _ in range(unknowns + 1 + checks):
            kept = {}
            for g in groups:
                fixed = g.size - int(g.prunable.sum())
                low = max(1, fixed, min(min_widths.get(g.name, 1), g.size))
                kept[g.name] = int(rng.integers(low, g.size + 1))
            samples.append(kept)
        measured = [full_costs]
        for kept in samples[1:]:
            removal = {}
            for g in groups:
                candidates = np.nonzero(g.prunable)[0]
                drop = g.size - kept[g.name]
                if drop:
                    removal[g.name] = np.sort(rng.choice(candidates, size=drop, replace=False))
            keep = graph.keep_indices(removal)
            measured.append(module_costs(apply_keep(model, keep) if keep else model, quantity, example))
        fit, held = slice(0, len(samples) - checks), slice(len(samples) - checks, len(samples))
        terms = {}
        for path, group_names in touching.items():
            y = np.array([m.get(path, 0.0) for m in measured])
            if not y.any():
                continue
            if _monomials(np.zeros((1, len(group_names)))).shape[1] > fit.stop:
                return None  # more unknowns than pruned copies measured
            x = np.array([[s.get(g, sizes[g]) / sizes[g] for g in group_names] for s in samples])
            a = _monomials(x)
            coefficients = np.linalg.lstsq(a[fit], y[fit], rcond=None)[0]
            terms[path] = _Term(tuple(group_names), coefficients)
        model_ = cls(terms, sizes, sum(full_costs.values()))
        for kept, costs in zip(samples[held], measured[held]):
            truth = sum(costs.values())
            if abs(model_.value(kept) - truth) > 1e-6 * max(1.0, model_.full):
                return None
        return model_

