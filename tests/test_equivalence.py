"""Masked == removed, parameter counts, rollback and plan replay on random MLPs."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from models import AttributeMLP, count_params, mlp, randomise_norm_statistics

from neuroprune import PruningPlan, apply_masks, apply_plan, discover
from neuroprune.torch.surgery import apply_keep


def random_removal(graph, rng):
    removal = {}
    for group in graph.groups:
        candidates = np.nonzero(group.prunable)[0]
        k = int(rng.integers(0, len(candidates)))  # never all of them
        removal[group.name] = np.sort(rng.choice(candidates, size=k, replace=False))
    return removal


def expected_param_count(model, graph, removal) -> int:
    """Independent count for Linear/BN/LN MLPs: each layer's parameters at its new widths."""
    lost: dict[tuple[str, str], int] = {}
    for group in graph.groups:
        for member in group.members:
            lost[(member.path, member.axis)] = len(removal.get(group.name, []))
    total = 0
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            rows = module.out_features - lost.get((path, "out"), 0)
            cols = module.in_features - lost.get((path, "in"), 0)
            total += rows * cols + (rows if module.bias is not None else 0)
        elif isinstance(module, (torch.nn.BatchNorm1d, torch.nn.LayerNorm)):
            total += 2 * (module.weight.numel() - lost.get((path, "features"), 0))
    return total


@settings(max_examples=60, deadline=None)
@given(depth=st.integers(1, 4), width=st.lists(st.integers(2, 12), min_size=5, max_size=5),
       norm=st.sampled_from([None, "bn", "ln"]), dropout=st.booleans(), seed=st.integers(0, 10_000))
def test_masked_equals_removed_on_random_mlps(depth, width, norm, dropout, seed):
    widths = (5, *width[:depth], 3)
    model = randomise_norm_statistics(mlp(widths, norm=norm, dropout=dropout, seed=seed), seed).eval()
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(seed))
    graph = discover(model, x)
    assert [g.size for g in graph.groups] == list(widths[1:-1])
    removal = random_removal(graph, np.random.default_rng(seed))
    keep = graph.keep_indices(removal)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(x)
        with apply_masks(model, keep):
            masked = model(x)
        pruned = apply_keep(model, keep)
        removed_out = pruned(x)
        restored = model(x)
    torch.testing.assert_close(masked, removed_out, rtol=1e-5, atol=1e-5)
    assert torch.equal(restored, reference)  # masks lifted: bit-identical behaviour
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state_before.items())
    assert count_params(pruned) == expected_param_count(model, graph, removal)
    # plan replay onto a freshly built original
    plan = PruningPlan().compose(keep, graph.module_types, graph.axis_sizes)
    fresh = randomise_norm_statistics(mlp(widths, norm=norm, dropout=dropout, seed=seed), seed).eval()
    replayed = apply_plan(fresh, plan)
    replayed.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(replayed(x), removed_out)


def test_attribute_mlp_is_pruned_like_a_sequential():
    model = AttributeMLP().eval()
    x = torch.randn(4, 6)
    graph = discover(model, x)
    assert [(g.name, g.size) for g in graph.groups] == [("fc1", 10), ("fc2", 7)]
    assert "head" in graph.frozen  # the output layer is never pruned
    keep = graph.keep_indices({"fc1": np.array([0, 3, 4]), "fc2": np.array([6])})
    pruned = apply_keep(model, keep)
    assert (pruned.fc1.out_features, pruned.fc2.in_features, pruned.fc2.out_features, pruned.head.in_features) == (7, 7, 6, 6)
    with torch.no_grad(), apply_masks(model, keep):
        torch.testing.assert_close(model(x), pruned(x))


def test_caller_model_untouched_unless_inplace():
    model = mlp((4, 6, 2))
    graph = discover(model, torch.randn(2, 4))
    keep = graph.keep_indices({"0": np.array([1, 2])})
    copy = apply_keep(model, keep)
    assert model[0].out_features == 6 and copy[0].out_features == 4
    same = apply_keep(model, keep, inplace=True)
    assert same is model and model[0].out_features == 4
