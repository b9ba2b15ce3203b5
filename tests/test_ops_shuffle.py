"""Shape queries do not constrain channels; the view-transpose-view channel shuffle of ShuffleNetV2
is a channel permutation: masked == pruned, parameters drop, reload exact."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from models import count_params, randomise_norm_statistics, masked_and_pruned
from vision_blocks import InvertedResidual, TinyShuffleNet, channel_shuffle

from neuroprune import PruningPlan, apply_masks, apply_plan, discover, load, save
from neuroprune.torch.surgery import apply_keep


def shufflenet(width: int = 8, seed: int = 0) -> TinyShuffleNet:
    torch.manual_seed(seed)
    return randomise_norm_statistics(TinyShuffleNet(width), seed).eval()


def check_widths(pruned: nn.Module, keep) -> None:
    """Every pruned layer has exactly the widths the plan keeps."""
    for path, axes in keep.items():
        module = pruned.get_submodule(path)
        if isinstance(module, nn.Conv2d):
            if "out" in axes:
                assert module.out_channels == len(axes["out"])
            if "in" in axes:
                assert module.in_channels == len(axes["in"])
        elif isinstance(module, nn.BatchNorm2d):
            assert module.num_features == len(axes["features"])


def test_shape_queries_do_not_constrain_channels():
    class Reads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            h = self.a(x)
            batch, channels, height, width = h.size()
            scale = height * width / (h.shape[-1] * width) + (h.dim() - 4) + 0 * h.numel() / channels
            return self.b(h).mean([2, 3]) * scale

    graph = discover(Reads(), torch.randn(2, 3, 4, 4))
    assert [(g.name, g.size) for g in graph.groups] == [("a", 8)]


def test_channel_shuffle_couples_the_same_position_of_every_group():
    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.b(channel_shuffle(self.a(x), 3))

    graph = discover(Shuffle(), torch.randn(1, 3, 2, 2))
    (group,) = graph.groups
    a = next(m for m in group.members if m.path == "a")
    # 3 groups of 2 channels: unit j is channel j of every group
    assert group.size == 2 and a.unit_of.tolist() == [0, 1, 0, 1, 0, 1]


def test_split_and_merge_with_sizes_written_as_numbers_is_fixed():
    class Literal(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            h = self.a(x).view(x.shape[0], 2, 3, 2, 2).transpose(1, 2)
            return self.b(h.reshape(x.shape[0], 6, 2, 2))

    graph = discover(Literal(), torch.randn(1, 3, 2, 2))
    assert graph.groups == []
    assert any("merged back with sizes fixed in the code" in r for r in graph.frozen["a"])


def test_shufflenet_unit_masked_equals_pruned_and_reloads(tmp_path):
    model = shufflenet()
    x = torch.randn(2, 3, 16, 16)
    graph = discover(model, x)
    assert {"conv1.0", "stage.0.branch2.0", "stage.1.branch2.0", "conv5.0"} <= {g.name for g in graph.groups}
    removal = {g.name: np.nonzero(g.prunable)[0][: max(1, g.prunable_count // 2)] for g in graph.groups}
    keep = graph.keep_indices(removal)
    with torch.no_grad():
        reference = model(x)
    masked, pruned, out = masked_and_pruned(model, keep, x)
    torch.testing.assert_close(masked, out, rtol=1e-5, atol=1e-5)
    assert out.shape == reference.shape and count_params(pruned) < count_params(model)
    check_widths(pruned, keep)
    plan = PruningPlan().compose(keep, graph.module_types, graph.axis_sizes)
    save(tmp_path / "out", apply_plan(model, plan), plan)
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "out", functools.partial(shufflenet, seed=3))(x), out)


@settings(max_examples=20, deadline=None)
@given(width=st.sampled_from([4, 6, 8]), seed=st.integers(0, 10_000))
def test_masked_equals_pruned_on_shufflenet_units(width, seed):
    model = shufflenet(width, seed)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    graph = discover(model, x)
    rng = np.random.default_rng(seed)
    removal = {}
    for group in graph.groups:
        candidates = np.nonzero(group.prunable)[0]
        removal[group.name] = np.sort(rng.choice(candidates, size=int(rng.integers(0, len(candidates))), replace=False))
    keep = graph.keep_indices(removal)
    masked, pruned, out = masked_and_pruned(model, keep, x)
    torch.testing.assert_close(out, masked, rtol=1e-4, atol=1e-5)
    check_widths(pruned, keep)


def test_stride_one_unit_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), InvertedResidual(8, 8, 1), nn.Conv2d(8, 2, 1)).eval()
    graph = discover(model, torch.randn(1, 3, 4, 4))
    assert "1.branch2.0" in {g.name for g in graph.groups}


def test_repeat_along_other_dimensions_keeps_channels_and_along_channels_repeats_columns():
    class Repeats(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 3), nn.Linear(4, 5), nn.Linear(6, 2)

        def forward(self, x):
            tiled = self.a(x).repeat(1, 2)                       # channels repeated: c reads each twice
            return self.c(tiled) + self.b(x).unsqueeze(1).repeat(1, 2, 1).sum(1)[:, :2]

    torch.manual_seed(0)
    graph = discover(Repeats(), torch.randn(2, 4))
    (group,) = [g for g in graph.groups if g.name == "a"]
    c_in = next(m for m in group.members if m.path == "c")
    assert c_in.unit_of.tolist() == [0, 1, 2, 0, 1, 2]
    assert any("only some channels" in r for r in graph.frozen["b"])
    model, x = Repeats(), torch.randn(3, 4)
    keep = discover(model, x).keep_indices({"a": np.array([1])})
    with torch.no_grad(), apply_masks(model, keep):
        masked = model(x)
    torch.testing.assert_close(apply_keep(model, keep)(x), masked)
