"""Heads of hand-written attention (timm-style fused qkv, separate q/k/v, SDPA or explicit softmax)
are units: masked == pruned, parameters drop as the plan says, num_heads follows, reload is exact."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from models import count_params, toy_data, masked_and_pruned
from vision_blocks import (
    MaxViTStyleAttention,
    Mlp,
    SeparateQKVAttention,
    StochasticDepthBlock,
    SwinStyleAttention,
    TimmAttention,
    TinyViT,
    window_attention,
)

from neuroprune import ClassificationTask, PruneConfig, PruningPlan, apply_plan, discover, load, prune, save
from neuroprune.core.errors import ConfigError, UnsupportedModuleError
from neuroprune.torch.graph import ops
from neuroprune.torch.graph.attention_ops import opaque_attention_rule
from neuroprune.torch.surgery import apply_keep

ATTENTIONS = {
    "timm-sdpa": functools.partial(TimmAttention, num_heads=4),
    "timm-explicit-softmax": functools.partial(TimmAttention, num_heads=4, fused_attn=False),
    "timm-merge-C": functools.partial(TimmAttention, num_heads=4, merge="C"),
    "separate-qkv": functools.partial(SeparateQKVAttention, n_heads=4),
}


def vit(kind: str, seed: int = 0, **kwargs) -> TinyViT:
    torch.manual_seed(seed)
    return TinyViT(ATTENTIONS[kind], **kwargs).eval()


def expected_linear_params(model: nn.Module, keep) -> int:
    """Parameters once every Linear keeps the rows/columns ``keep`` lists (others unchanged)."""
    total = 0
    for path, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, nn.Linear):
                rows = len(keep.get(path, {}).get("out", range(module.out_features)))
                cols = len(keep.get(path, {}).get("in", range(module.in_features)))
                total += rows * cols if name == "weight" else rows
            else:
                total += param.numel()
    return total


def half_of_every_group(graph):
    return {g.name: np.nonzero(g.prunable)[0][: max(1, g.prunable_count // 2)] for g in graph.groups}


@pytest.mark.parametrize("kind", sorted(ATTENTIONS))
def test_heads_are_units_coupled_across_qkv_and_output_projection(kind):
    model = vit(kind)
    graph = discover(model, torch.randn(2, 3, 8, 8))
    heads = [g for g in graph.groups if any(m.axis == "heads" for m in g.members)]
    assert [g.size for g in heads] == [4, 4]
    members = {(m.path, m.axis) for m in heads[0].members}
    projections = {("blocks.0.attn.qkv", "out")} if kind.startswith("timm") else {
        ("blocks.0.attn.q", "out"), ("blocks.0.attn.k", "out"), ("blocks.0.attn.v", "out")}
    out_proj = "blocks.0.attn.proj" if kind.startswith("timm") else "blocks.0.attn.out"
    assert members == projections | {(out_proj, "in"), ("blocks.0.attn", "heads")}
    # the MLP of the blocks is prunable too
    assert {"blocks.0.mlp.fc1", "blocks.1.mlp.fc1"} <= {g.name for g in graph.groups}


@pytest.mark.parametrize("kind", sorted(ATTENTIONS))
def test_masked_equals_pruned_params_drop_and_reload_exact(kind, tmp_path):
    model = vit(kind)
    x = torch.randn(3, 3, 8, 8)
    graph = discover(model, x)
    keep = graph.keep_indices(half_of_every_group(graph))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(x)
    masked, pruned, out = masked_and_pruned(model, keep, x)
    torch.testing.assert_close(masked, out, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # masks lifted bit for bit
    assert out.shape == reference.shape and not torch.allclose(out, reference)
    assert count_params(pruned) == expected_linear_params(model, keep) < count_params(model)
    attn = pruned.blocks[0].attn
    assert getattr(attn, "num_heads", getattr(attn, "n_heads", None)) == 2
    if kind.startswith("timm"):
        assert (attn.attn_dim, attn.head_dim) == (2 * 4, 4)
    assert model.blocks[0].attn.__dict__.get("num_heads", 4) == 4  # the caller's model is untouched
    plan = PruningPlan().compose(keep, graph.module_types, graph.axis_sizes)
    assert plan.modules["blocks.0.attn"]["axes"]["heads"] == {"size": 4, "keep": [2, 3]}
    save(tmp_path / "out", apply_plan(model, plan), plan)
    reloaded = load(tmp_path / "out", functools.partial(vit, kind, seed=1))
    with torch.no_grad():
        assert torch.equal(reloaded(x), out)


def test_merge_with_width_read_from_the_input_gets_a_rewritten_forward():
    model = vit("timm-merge-C")
    x = torch.randn(2, 3, 8, 8)
    graph = discover(model, x)
    pruned = apply_keep(model, graph.keep_indices(half_of_every_group(graph)))
    assert "forward" in pruned.blocks[0].attn.__dict__ and "forward" not in model.blocks[0].attn.__dict__
    with torch.no_grad():
        pruned(x)
    # pruning the pruned model again (a second step) keeps it working
    again = discover(pruned, x)
    assert [g.size for g in again.groups if g.name.endswith("qkv")] == [2, 2]
    smaller = apply_keep(pruned, again.keep_indices({"blocks.0.attn.qkv": np.array([0])}))
    assert smaller.blocks[0].attn.num_heads == 1 and smaller(x).shape == (2, 3)


class Tokens(nn.Module):
    """toy_data's 6 features as 3 tokens of 2 values, through one attention and one MLP block."""

    def __init__(self, merge="attn_dim"):
        super().__init__()
        self.embed = nn.Linear(2, 16)
        self.attn = TimmAttention(16, num_heads=4, merge=merge)
        self.mlp = Mlp(16, 32)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x.view(x.shape[0], 3, 2))
        h = h + self.attn(h)
        return self.head((h + self.mlp(h)).mean(1))


@pytest.mark.parametrize("merge,criterion", [("attn_dim", "magnitude"), ("C", "taylor")])
def test_iterative_pruning_run_saves_and_reloads(merge, criterion, tmp_path):
    torch.manual_seed(0)
    model = Tokens(merge)
    task = ClassificationTask(toy_data())
    result = prune(model, task, PruneConfig(criterion=criterion, ratio=0.5, steps=2, tolerance=1.0, progress=False,
                                            latency_runs=1, finetune_epochs=1, reconstruct=True))
    widths = {layer["name"]: (layer["width_before"], layer["width_after"]) for layer in result.report["layers"]}
    assert widths["attn.qkv"] == (4, 2) and result.model.attn.num_heads == 2 and model.attn.num_heads == 4
    result.save(tmp_path / "out", html=False)
    x = task.data.x_test[:5]
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "out", functools.partial(Tokens, merge))(x), result.model(x))


settings_fast = settings(max_examples=25, deadline=None)


@settings_fast
@given(heads=st.integers(1, 4), head_dim=st.integers(1, 4), kind=st.sampled_from(["sdpa", "explicit", "C", "sep"]),
       seed=st.integers(0, 10_000))
def test_masked_equals_pruned_over_head_counts_and_dims(heads, head_dim, kind, seed):
    dim = heads * head_dim
    if kind == "sep":
        factory = functools.partial(SeparateQKVAttention, n_heads=heads)
    else:
        factory = functools.partial(TimmAttention, num_heads=heads, fused_attn=kind != "explicit",
                                    merge="C" if kind == "C" else "attn_dim")
    torch.manual_seed(seed)
    model = TinyViT(factory, depth=1, dim=dim, hidden=5).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    graph = discover(model, x)
    rng = np.random.default_rng(seed)
    removal = {g.name: np.sort(rng.choice(g.size, size=int(rng.integers(0, g.size)), replace=False)) for g in graph.groups}
    keep = graph.keep_indices(removal)
    masked, pruned, out = masked_and_pruned(model, keep, x)
    torch.testing.assert_close(out, masked, rtol=1e-5, atol=1e-5)
    assert count_params(pruned) == expected_linear_params(model, keep)


def test_heads_without_a_head_count_attribute_are_kept_with_the_reason():
    class Literal(nn.Module):  # head count written as a number: nothing to update after pruning
        def __init__(self):
            super().__init__()
            self.qkv, self.out = nn.Linear(8, 24), nn.Linear(8, 8)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(x).view(b, t, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
            return self.out(torch.softmax(q @ k.transpose(-1, -2), dim=-1).matmul(v).transpose(1, 2).reshape(b, t, 8))

    graph = discover(nn.Sequential(nn.Linear(4, 8), Literal(), nn.Linear(8, 2)), torch.randn(2, 3, 4))
    assert "1.qkv" not in {g.name for g in graph.groups}
    assert any("has no head-count attribute" in r and "num_heads" in r for r in graph.frozen["1.qkv"])


def test_head_count_attribute_that_disagrees_with_the_forward_keeps_the_heads():
    class Mismatch(TimmAttention):  # num_heads says 2, the forward splits 4 heads written as a number
        def forward(self, x):
            B, N, C = x.shape
            q, k, v = self.qkv(x).reshape(B, N, 3, 4, 4).permute(2, 0, 3, 1, 4).unbind(0)
            return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, -1))

    attn = Mismatch(16, num_heads=4)
    attn.num_heads = 2
    graph = discover(nn.Sequential(nn.Linear(4, 16), attn, nn.Linear(16, 2)), torch.randn(2, 3, 4))
    assert "1.qkv" not in {g.name for g in graph.groups}
    assert any("Mismatch.num_heads is 2 but its forward splits 4 heads" in r for r in graph.frozen["1.qkv"])


def test_attention_mask_that_differs_between_heads_keeps_them():
    class Masked(TimmAttention):
        def forward(self, x):
            return super().forward(x, attn_mask=torch.zeros(1, self.num_heads, 1, 1))

    model = nn.Sequential(nn.Linear(4, 16), Masked(16, num_heads=4), nn.Linear(16, 2))
    graph = discover(model, torch.randn(2, 3, 4))
    assert "1.qkv" not in {g.name for g in graph.groups}
    assert any("attention mask that differs between heads" in r for r in graph.frozen["1.qkv"])


def test_attention_function_taking_its_weights_is_an_opaque_op():
    """torchvision Swin's shifted_window_attention: known by name, input width kept, MLP prunable."""
    model = nn.Sequential(nn.Linear(8, 16), SwinStyleAttention(16), Mlp(16, 32), nn.Linear(16, 2)).eval()
    x = torch.randn(2, 5, 8)
    with pytest.raises(UnsupportedModuleError, match="operation 'window_attention' on prunable channels"):
        discover(model, x)
    assert ops.rule_for("call_function", _named("shifted_window_attention", "torchvision.models.swin_transformer")) \
        is opaque_attention_rule
    ops.register_function_rule(window_attention, opaque_attention_rule)
    try:
        with pytest.raises(ConfigError, match="flow rule for 'window_attention' is already registered"):
            ops.register_function_rule(window_attention, opaque_attention_rule)
        graph = discover(model, x)
    finally:
        del ops.FUNCTION_RULES[window_attention]
    assert [g.name for g in graph.groups] == ["2.fc1", "2.fc2"]
    assert any("input width of an attention function is kept" in r for r in graph.frozen["0"])


def _named(name: str, module: str):
    def fn(*args):
        return args[0]

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = module
    return fn


@pytest.mark.parametrize("training", [False, True])
def test_stochastic_depth_and_drop_path_keep_channels(training):
    model = nn.Sequential(nn.Linear(4, 16), StochasticDepthBlock(16, 32), nn.Linear(16, 2)).train(training)
    graph = discover(model, torch.randn(2, 4))
    assert [(g.name, g.size) for g in graph.groups] == [("0", 16), ("1.mlp.fc1", 32)]
    assert model.training is training
    vit_model = vit("timm-sdpa").train(training)  # DropPath(0.1) traced through: new_empty, bernoulli_, mul
    assert "blocks.0.mlp.fc1" in {g.name for g in discover(vit_model, torch.randn(2, 3, 8, 8)).groups}


@pytest.mark.parametrize("bias", [False, True])
def test_einsum_attention_as_in_maxvit(bias, tmp_path):
    def build(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(3, 16), MaxViTStyleAttention(16, 4, 5, bias=bias), nn.Linear(16, 2)).eval()

    model, x = build(), torch.randn(2, 3, 5, 3)
    graph = discover(model, x)
    # the merge is sized with D read from the input: the input width is tied to the heads' width
    assert any("read from the shape to size other channels" in r for r in graph.frozen["0"])
    if bias:  # a per-head bias added to the scores is a tensor the heads cannot follow
        assert [g.name for g in graph.groups] == ["1.merge"]
        assert any("fixed tensor" in r for r in graph.frozen["1.to_qkv"])
        return
    assert graph.group("1.to_qkv").size == 4
    keep = graph.keep_indices({"1.to_qkv": np.array([0, 3])})
    masked, pruned, out = masked_and_pruned(model, keep, x)
    torch.testing.assert_close(out, masked, rtol=1e-5, atol=1e-6)
    assert pruned[1].n_heads == 2 and "forward" in pruned[1].__dict__  # D from x.size() merged with -1
    plan = PruningPlan().compose(keep, graph.module_types, graph.axis_sizes)
    save(tmp_path / "out", pruned, plan)
    assert torch.equal(load(tmp_path / "out", functools.partial(build, 1))(x), pruned(x))


def test_merge_sized_by_the_input_width_fixes_that_width():
    """reshape(B, N, C) with C read from the attention's input: pruning that input's channels
    alone would break the merge, so they are fixed (the heads stay prunable)."""
    model = nn.Sequential(nn.Linear(4, 16), TimmAttention(16, num_heads=4, merge="C"), nn.Linear(16, 2)).eval()
    graph = discover(model, torch.randn(2, 3, 4))
    assert [g.name for g in graph.groups] == ["1.qkv", "1.proj"]
    assert any("read from the shape to size other channels" in r for r in graph.frozen["0"])
    plain = nn.Sequential(nn.Linear(4, 16), TimmAttention(16, num_heads=4), nn.Linear(16, 2)).eval()
    assert [g.name for g in discover(plain, torch.randn(2, 3, 4)).groups] == ["0", "1.qkv", "1.proj"]


def test_roll_fixes_channels_along_rolled_dimensions_only():
    class Shift(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(torch.roll(h, 1, dims=1)) + self.b(torch.roll(h, 2, dims=-1))

    graph = discover(Shift(), torch.randn(2, 3, 4))
    assert graph.groups == [] and any("channels rolled" in r for r in graph.frozen["a"])


def test_attention_whose_forward_cannot_be_retraced_keeps_its_heads():
    class WithConstant(TimmAttention):
        def forward(self, x):
            return super().forward(x * torch.ones(1))  # a tensor made during tracing: a constant

    attn = WithConstant(16)
    graph = discover(nn.Sequential(nn.Linear(4, 16), attn, nn.Linear(16, 2)), torch.randn(2, 3, 4))
    assert "1.qkv" not in {g.name for g in graph.groups}
    assert any("creates constant tensors" in r for r in graph.frozen["1.qkv"])
    assert "_tensor_constant0" not in attn.__dict__ and attn.training  # discovery left the module as it was


def test_timm_mask_helpers_are_known_by_name():
    assert ops.rule_for("call_function", _named("maybe_add_mask", "timm.layers.attention")) is ops.broadcast_rule
    assert ops.rule_for("call_function", _named("resolve_self_attn_mask", "timm.layers.attention")) \
        is ops.returned_mask_rule
    assert ops.rule_for("call_function", _named("stochastic_depth", "torchvision.ops.stochastic_depth")) \
        is ops.first_rule
