"""Memory of a prune: only what must be restored is copied, and statistics allocate up front.

The peak itself is measured by ``benchmarks/peak_memory.py`` (one process per run); these tests
check the mechanisms: masks that keep only the slices they zero and still restore bit for bit,
one clone per prune, a teacher that shares the untouched original's weights, layer-by-layer
surgery equal to the all-at-once kind, and a statistics pass that preallocates float64 / int64
accumulators and asks for gradients only where a criterion reads them.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn as nn

from neuroprune import PruneConfig, prune
from neuroprune.data import load_digits
from neuroprune.models.zoo import build_model
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.torch.backend import TorchBackend
from neuroprune.torch.graph.discover import discover
from neuroprune.torch.lean_surgery import apply_keep_streaming
from neuroprune.torch.masks import apply_masks
from neuroprune.torch.recover.rollback import ChangedSlices
from neuroprune.torch.stats import collect_statistics
from neuroprune.torch.surgery import apply_keep
from neuroprune.torch.teacher import frozen_teacher


def _bits(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: (v.view(torch.int32) if v.dtype == torch.float32 else v).clone() for k, v in model.state_dict().items()}


def _same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_changed_slices_restore_negative_zeros_and_nans_bit_for_bit():
    weight = torch.randn(6, 5)
    weight[0, 0], weight[2, 1], weight[4, 4] = -0.0, float("nan"), 0.0
    before = weight.view(torch.int32).clone()
    changes = ChangedSlices()
    changes.record([weight], lambda: weight.index_fill_(1, torch.tensor([1, 4]), 0.0))  # two columns
    assert changes.saved_elements() == 12  # 2 columns of 6, not the 30 elements of the tensor
    changes.restore()
    assert torch.equal(weight.view(torch.int32), before)


def test_masks_that_keep_only_the_zeroed_slices_restore_the_model_bit_for_bit():
    model = build_model("resnet56")
    with torch.no_grad():
        model.conv1.weight[0] = -0.0  # a sign a value comparison would miss
    graph = discover(model, torch.randn(1, 1, 32, 32))
    keep = graph.keep_indices({g.name: list(range(g.size // 2)) for g in graph.groups})
    before = _bits(model)
    full = apply_masks(model, keep)
    full_elements = sum(saved.numel() for _, saved in full._snapshot)
    full.remove()
    handle = TorchBackend().mask(model, keep)
    assert handle._snapshot == [] and 0 < handle._changes.saved_elements() < 0.75 * full_elements
    handle.remove()
    assert _same_bits(_bits(model), before)


def test_a_rolled_back_prune_clones_once_and_leaves_the_callers_model_bit_for_bit(monkeypatch):
    class EveryWeightCounts(ClassificationTask):  # any masked neuron is a total loss: always rolled back
        def evaluate(self, model, split):
            return float(bool((model.fc2.weight != 0).any(dim=0).all()))  # no fc1 unit masked

    model, task = build_model("mlp"), EveryWeightCounts(load_digits())
    before = _bits(model)
    clones = []
    original_clone = TorchBackend.clone
    monkeypatch.setattr(TorchBackend, "clone", lambda self, m: clones.append(m) or original_clone(self, m))
    result = prune(model, task, PruneConfig(criterion="magnitude", ratio=0.9, tolerance=0.0, max_retries=1,
                                            progress=False, latency_runs=1))
    assert [s["accepted"] for s in result.report["steps"]] == [False, False]
    assert len(clones) == 1  # the working copy only: no teacher, no per-attempt copy
    assert _same_bits(_bits(model), before) and _same_bits(_bits(result.model), before)


def test_the_teacher_of_an_untouched_clone_shares_the_originals_weights():
    original = build_model("mlp")
    work = TorchBackend().clone(original)
    teacher = frozen_teacher(work)
    assert all(t is o for t, o in zip(teacher.parameters(), original.parameters()))
    assert not teacher.training and original.training
    with torch.no_grad():
        work.fc1.weight.mul_(2)
    copied = frozen_teacher(work)  # a touched clone: a copy of its own, gradients off
    assert all(not p.requires_grad for p in copied.parameters())
    assert not any(t is o for t, o in zip(copied.parameters(), original.parameters()))


def test_layer_by_layer_surgery_equals_the_all_at_once_kind():
    model = build_model("transformer")
    model.eval()
    graph = discover(model, torch.randn(2, 8, 8))
    keep = graph.keep_indices({g.name: list(range(0, g.size, 3))[:max(1, g.size // 3)] for g in graph.groups})
    expected = apply_keep(model, keep)
    streamed = apply_keep_streaming(model, keep)
    assert streamed is model
    assert _same_bits(_bits(streamed), _bits(expected))
    x = torch.randn(3, 8, 8)
    assert torch.equal(streamed(x), expected(x))


def test_statistics_preallocate_wide_accumulators_and_grad_only_what_criteria_read():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    graph = discover(model, torch.randn(1, 4))
    flags = []

    def loss(m, batch):
        flags.append({name for name, p in m.named_parameters() if p.requires_grad})
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    batches = [(torch.randn(16, 4), torch.randint(0, 2, (16,))) for _ in range(2)]
    stats = collect_statistics(model, graph, batches, loss, gradients=True, progress=False)
    assert "0.weight" in flags[0] and "4.bias" not in flags[0]  # the output bias: no criterion reads it
    assert all(p.requires_grad and p.grad is None for p in model.parameters())  # flags restored
    expected = torch.zeros(8, dtype=torch.float64)
    for batch in batches:
        model.zero_grad()
        loss(model, batch).backward()
        expected += model[0].weight.grad.abs().sum(dim=1, dtype=torch.float64)
    model.zero_grad()
    entry = stats.axes[("0", "out")]
    assert torch.equal(entry.grad_abs, expected)
    for entry in stats.axes.values():
        for name in ("act_abs", "act_sum", "act_sq", "grad_abs", "taylor"):
            value = getattr(entry, name)
            assert value is None or value.dtype == torch.float64
        for name in ("act_count", "grad_numel"):
            value = getattr(entry, name)
            assert value is None or value.dtype == torch.int64


def test_masks_on_an_untouched_clone_keep_nothing_and_read_the_original_back():
    original = build_model("mlp")
    work = TorchBackend().clone(original)
    graph = discover(work, torch.randn(1, 64))
    keep = graph.keep_indices({g.name: list(range(g.size // 2)) for g in graph.groups})
    before = _bits(work)
    handle = TorchBackend().mask(work, keep)
    assert handle._changes.saved_elements() == 0 and not _same_bits(_bits(work), before)
    handle.remove()
    assert _same_bits(_bits(work), before)
    handle = TorchBackend().mask(work, keep)  # restored, so no longer untouched: values are kept
    assert handle._changes.saved_elements() > 0
    handle.remove()
    assert _same_bits(_bits(work), before)
