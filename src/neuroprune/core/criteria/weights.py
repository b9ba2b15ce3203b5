"""Criteria read from the weights: ``magnitude``, ``gradient`` and the write-up's ``seed`` formula.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.8, 0.3, 0.5], [0.2, 0.6, 0.1]])
    >>> g = torch.tensor([[0.4, 0.1, 0.2], [0.05, 0.3, 0.1]])
    >>> f = torch.tensor([[10.0, 5, 7], [5, 10, 8]])
    >>> seed_formula(w, g, f)
    tensor([2.5312, 2.1444])

The write-up prints 2.98 / 0.9 = 3.3111 for neuron j; its own inputs give 1.93 / 0.9 = 2.1444.
"""

from __future__ import annotations

import torch

from neuroprune.torch.layers.registry import handler_for
from neuroprune.core.criteria.aggregate import sum_to_units
from neuroprune.core.criteria.registry import Criterion, Needs, ScoringInput, register_criterion


def seed_formula(weights: torch.Tensor, gradients: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """``s = sum_i |w_i| g_i f_i / sum_i |w_i|`` for each row (one neuron's incoming connections)."""
    magnitude = weights.abs()
    return (magnitude * gradients * frequencies).sum(dim=1) / magnitude.sum(dim=1)


def _views(data: ScoringInput, path: str, axis: str, outgoing: bool):
    module = data.model.get_submodule(path)
    handler = handler_for(module)
    views = handler.incoming(module, axis) + (handler.outgoing(module, axis) if outgoing else [])
    return module, views


class MagnitudeCriterion(Criterion):
    """L1 (``p=1``) or L2 (``p=2``, default) norm of a neuron's incoming weights.

    ``outgoing=True`` adds the weights that read the neuron.
    """

    name = "magnitude"
    options = ("p", "outgoing")

    def score(self, data, options):
        p = float(options.get("p", 2))
        outgoing = bool(options.get("outgoing", False))
        scores = {}
        for group in data.graph.groups:
            per_position = {}
            for member in group.members:
                module, views = _views(data, member.path, member.axis, outgoing)
                parts = [torch.linalg.vector_norm(view.rows(module.get_parameter(view.name).detach().float()),
                                                  ord=p, dim=1).pow(p) for view in views]
                if parts:
                    per_position[(member.path, member.axis)] = torch.stack(parts).sum(dim=0)
            scores[group.name] = sum_to_units(group, per_position).pow(1.0 / p)
        return scores


class GradientCriterion(Criterion):
    """Mean |dL/dw| over a neuron's incoming weights, accumulated over the calibration batches."""

    name = "gradient"

    def needs(self, options):
        return Needs(gradients=True)

    def score(self, data, options):
        scores = {}
        for group in data.graph.groups:
            sums, counts = {}, {}
            for member in group.members:
                entry = data.stats.axes.get((member.path, member.axis))
                if entry is not None and entry.grad_abs is not None:
                    sums[(member.path, member.axis)] = entry.grad_abs
                    counts[(member.path, member.axis)] = entry.grad_numel
            scores[group.name] = sum_to_units(group, sums) / sum_to_units(group, counts).clamp_min(1)
        return scores


class SeedCriterion(Criterion):
    """The write-up's formula: sum |w| * mean |gradient| * input activation frequency / sum |w|.

    Over the neuron's incoming connections; the frequency is 1 where the input is not observed."""

    name = "seed"

    def needs(self, options):
        return Needs(activations=True, gradients=True, per_weight=True)

    def score(self, data, options):
        stats = data.stats
        scores = {}
        for group in data.graph.groups:
            numerators, denominators = {}, {}
            for member in group.members:
                module, views = _views(data, member.path, member.axis, outgoing=False)
                num, den = [], []
                for view in views:
                    grads = stats.weight_grad_abs.get((member.path, view.name))
                    if grads is None:
                        continue
                    weights = view.rows(module.get_parameter(view.name).detach().float()).abs()
                    mean_grads = view.rows(grads) / max(stats.batches, 1)
                    freq = torch.ones_like(weights)
                    observed = stats.axes.get((member.path, view.input_axis)) if view.input_axis else None
                    if observed is not None and observed.act_count is not None and observed.act_n > 0:
                        freq = view.input_columns(observed.act_count / observed.act_n).to(weights.device).expand_as(weights)
                    num.append((weights * mean_grads * freq).sum(dim=1))
                    den.append(weights.sum(dim=1))
                if num:
                    numerators[(member.path, member.axis)] = torch.stack(num).sum(dim=0)
                    denominators[(member.path, member.axis)] = torch.stack(den).sum(dim=0)
            den_units = sum_to_units(group, denominators)
            scores[group.name] = sum_to_units(group, numerators) / den_units.clamp_min(torch.finfo(torch.float32).tiny)
        return scores


for _criterion in (MagnitudeCriterion(), GradientCriterion(), SeedCriterion()):
    register_criterion(_criterion)
