"""Property tests over random architectures and every zoo model.

For each model: masked == removed (allclose), the pruned model runs, every pruned layer has
the parameter shapes a freshly constructed layer of its new size has (so the parameter count
drops exactly as the plan's widths say), and replaying the plan on a fresh copy of the original
reproduces the outputs exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from arch import build, conv_specs, example_input, seq_specs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models import randomise_norm_statistics

from neuroprune import PruningPlan, apply_masks, apply_plan, discover
from neuroprune.core.selection import lowest_units
from neuroprune.torch.surgery import apply_keep
from neuroprune.torch.layers.attention import HeadPrunedMultiheadAttention
from neuroprune.models.zoo import ZOO, build_model


def fresh_like(module: nn.Module) -> nn.Module | None:
    """A newly constructed layer with the hyper-parameters ``module`` now claims."""
    if isinstance(module, nn.Linear):
        return nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, groups=module.groups,
                         bias=module.bias is not None)
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(module.num_features)
    if isinstance(module, nn.LayerNorm):
        return nn.LayerNorm(module.normalized_shape)
    if isinstance(module, nn.GroupNorm):
        return nn.GroupNorm(module.num_groups, module.num_channels)
    if isinstance(module, (nn.LSTM, nn.GRU)):
        return type(module)(module.input_size, module.hidden_size, module.num_layers,
                            bidirectional=module.bidirectional, batch_first=module.batch_first)
    if isinstance(module, HeadPrunedMultiheadAttention):
        return HeadPrunedMultiheadAttention(module.embed_dim, module.num_heads, module.head_dim,
                                            batch_first=module.batch_first)
    return None


def check_pruning(model: nn.Module, rebuild, x: torch.Tensor, seed: int, tolerance: float = 1e-4) -> int:
    graph = discover(model, x)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    removal = {group.name: lowest_units(group, torch.rand(group.size, generator=generator),
                                        int(rng.integers(0, group.prunable_count)))
               for group in graph.groups}
    keep = graph.keep_indices(removal)
    with torch.no_grad():
        reference = model(x)
        with apply_masks(model, keep):
            masked = model(x)
        pruned = apply_keep(model, keep)
        out = pruned(x)
        assert torch.equal(model(x), reference)
    assert out.shape == reference.shape
    torch.testing.assert_close(masked, out, rtol=tolerance, atol=tolerance)
    for path in keep:
        module = pruned.get_submodule(path)
        fresh = fresh_like(module)
        if fresh is not None:
            assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in module.state_dict().items()}, path
    plan = PruningPlan().compose(keep, graph.module_types, graph.axis_sizes)
    replayed = apply_plan(rebuild(), plan)
    replayed.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(replayed.eval()(x), out)
    return sum(len(v) for v in removal.values())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=conv_specs, seed=st.integers(0, 10_000))
def test_random_conv_architectures(specs, seed):
    make = lambda: randomise_norm_statistics(build("conv", specs, seed), seed)  # noqa: E731
    check_pruning(make(), make, example_input("conv", seed), seed)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=seq_specs, seed=st.integers(0, 10_000))
def test_random_sequence_architectures(specs, seed):
    make = lambda: randomise_norm_statistics(build("seq", specs, seed), seed)  # noqa: E731
    check_pruning(make(), make, example_input("seq", seed), seed)


def zoo_input(name: str) -> torch.Tensor:
    entry = ZOO[name]
    if entry.layout == "flat":
        return torch.randn(3, 64)
    if entry.layout == "sequence":
        return torch.randn(3, 8, 8)
    if name == "resnet50":
        return torch.randn(2, 3, 64, 64)
    return torch.randn(3, 1, entry.image_size, entry.image_size)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models(name):
    torch.manual_seed(0)
    make = lambda: randomise_norm_statistics(build_model(name).eval())  # noqa: E731
    model = make()
    removed = check_pruning(model, make, zoo_input(name), seed=1, tolerance=5e-4)
    assert removed > 0
