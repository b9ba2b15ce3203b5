"""The analytic cost model (neuroprune.torch.cost_model) against a real count on the pruned model.

For random keep sets, the parameters and FLOPs the model predicts from the kept widths alone must
equal ``count_parameters`` and ``FlopCounterMode`` on the physically pruned model.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuroprune.core.backend import backend_for
from neuroprune.torch.cost_model import CostModel, module_costs
from neuroprune.torch.metrics import count_flops, count_parameters
from neuroprune.torch.surgery import apply_keep
from neuroprune.models.zoo import build_model

INPUTS = {  # zoo model -> example input shape (ResNet-56 on small 8x8 images to stay fast)
    "mlp": (1, 64),
    "lenet5": (1, 1, 32, 32),
    "resnet56": (1, 1, 8, 8),
    "transformer": (1, 8, 8),
    "bilstm": (1, 8, 8),
}


@functools.lru_cache(maxsize=None)
def recorded(name: str):
    torch.manual_seed(0)
    kwargs = {"num_classes": 10} if name != "mlp" else {}
    if name == "resnet56":
        kwargs["in_channels"] = 1
    model = build_model(name, **kwargs).eval()
    example = torch.randn(*INPUTS[name])
    graph = backend_for(model).discover(model, example)
    costs = {q: CostModel.record(model, graph, q, example) for q in ("params", "flops")}
    return model, example, graph, costs


@pytest.mark.parametrize("name", sorted(INPUTS))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1))
def test_analytic_cost_equals_counted_cost_of_pruned_model(name, seed):
    model, example, graph, costs = recorded(name)
    assert costs["params"] is not None and costs["flops"] is not None, "the polynomial must fit the zoo model"
    rng = np.random.default_rng(seed)
    removal, kept = {}, {}
    for group in graph.groups:
        candidates = np.nonzero(group.prunable)[0]
        if len(candidates) == 0:
            continue
        drop = int(rng.integers(0, min(len(candidates), group.size - 1) + 1))
        if drop:
            removal[group.name] = rng.choice(candidates, size=drop, replace=False)
            kept[group.name] = group.size - drop
    pruned = apply_keep(model, graph.keep_indices(removal))
    assert costs["params"].value(kept) == count_parameters(pruned)
    assert costs["flops"].value(kept) == count_flops(pruned, example)


def test_full_widths_give_the_unpruned_cost():
    model, example, _, costs = recorded("lenet5")
    assert costs["params"].value({}) == count_parameters(model)
    assert costs["flops"].value({}) == count_flops(model, example)


def test_module_costs_sum_to_the_model_total():
    model, example, _, _ = recorded("transformer")
    assert sum(module_costs(model, "flops", example).values()) == count_flops(model, example)
    assert sum(module_costs(model, "params").values()) == count_parameters(model)


def test_a_module_with_too_many_groups_gives_no_model_and_budget_search_measures(monkeypatch):
    import neuroprune.torch.cost_model as cost_model

    model, example, graph, _ = recorded("mlp")
    monkeypatch.setattr(cost_model, "MAX_GROUPS_PER_MODULE", 0)
    assert CostModel.record(model, graph, "flops", example) is None
