"""Devices, dtypes and train/eval modes (issue 12, part 1).

Mixed-precision models keep every parameter's dtype through pruning and fine-tuning; a submodule
the user froze in eval mode stays frozen; statistics count in int64 and sum in float64; index
math in the surgery handlers builds its tensors on the weight's device (proved with the ``meta``
device, which refuses to mix with CPU tensors, and with a recorder of tensor factory calls).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import neuroprune as npr
from neuroprune.data import load_digits
from neuroprune.core.errors import NonFiniteError
from neuroprune.torch.graph.discover import discover
from neuroprune.torch.modes import evaluation_mode, training_mode
from neuroprune.torch.recover.finetune import finetune
from neuroprune.torch.stats import collect_statistics
from neuroprune.torch.layers import attention, rnn
from neuroprune.torch.layers.conv import ConvHandler
from neuroprune.torch.masks import _removed
from neuroprune.torch.layers.norm import GroupNormHandler, LayerNormHandler
from neuroprune.torch.layers.registry import handler_for


class MixedMLP(nn.Module):
    """Low-precision Linears around a LayerNorm kept in float32 (as mixed-precision recipes do)."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.fc1 = nn.Linear(64, 32).to(dtype)
        self.norm = nn.LayerNorm(32)
        self.fc2 = nn.Linear(32, 10).to(dtype)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        return self.fc2(self.norm(h.float()).to(h.dtype))


class FrozenBN(nn.Module):
    """An MLP whose BatchNorm the user froze in eval mode while the rest trains."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.bn = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.bn(self.fc1(x))))


def _dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    return {name: p.dtype for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_finetune_keeps_each_parameter_dtype_of_a_mixed_model(digits, dtype):
    model = MixedMLP(dtype)
    before = _dtypes(model)
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    losses = finetune(model, npr.ClassificationTask(digits), epochs=1, progress=False)
    assert len(losses) == 1 and losses[0] == losses[0]
    assert _dtypes(model) == before
    assert model.norm.weight.dtype == torch.float32 and model.fc1.weight.dtype == dtype
    assert any(not torch.equal(weights[name], p) for name, p in model.named_parameters())  # it trained


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_prune_and_finetune_keep_each_parameter_dtype(digits, dtype):
    model = MixedMLP(dtype)
    result = npr.prune(model, npr.ClassificationTask(digits),
                       npr.PruneConfig(criterion="magnitude", ratio=0.5, tolerance=1.0, finetune_epochs=1,
                                       progress=False, latency_runs=1))
    assert result.model.fc1.out_features < 32
    assert _dtypes(result.model) == _dtypes(model)
    assert _dtypes(model) == {"fc1.weight": dtype, "fc1.bias": dtype, "norm.weight": torch.float32,
                              "norm.bias": torch.float32, "fc2.weight": dtype, "fc2.bias": dtype}


def test_evaluate_restores_a_frozen_batchnorm_to_eval_mode(digits):
    model = FrozenBN().train()
    model.bn.eval()
    npr.ClassificationTask(digits).evaluate(model, "val")
    assert model.training and model.fc1.training and not model.bn.training


def test_finetune_keeps_a_frozen_batchnorm_frozen(digits):
    model = FrozenBN().train()
    model.bn.eval()
    running = model.bn.running_mean.clone()
    finetune(model, npr.ClassificationTask(digits), epochs=1, progress=False)
    assert torch.equal(model.bn.running_mean, running)  # eval mode: running statistics untouched
    assert model.training and not model.bn.training


def test_prune_leaves_the_frozen_batchnorm_in_eval_mode(digits):
    model = FrozenBN().train()
    model.bn.eval()
    result = npr.prune(model, npr.ClassificationTask(digits),
                       npr.PruneConfig(criterion="magnitude", ratio=0.5, tolerance=1.0, finetune_epochs=1,
                                       progress=False, latency_runs=1))
    assert model.training and not model.bn.training  # the caller's model
    assert not result.model.bn.training


def test_mode_context_managers_restore_each_submodule_even_on_error():
    model = FrozenBN().train()
    model.bn.eval()
    with pytest.raises(RuntimeError, match="boom"), evaluation_mode(model):
        assert not model.training
        raise RuntimeError("boom")
    assert model.training and not model.bn.training
    with training_mode(model):
        assert model.fc1.training and not model.bn.training
    model.eval()
    with training_mode(model):  # nothing is frozen under a model in eval mode: all train
        assert model.training and model.bn.training
    assert not model.training and not model.bn.training


def _stats(model, batches, gradients=True):
    graph = discover(model, torch.randn(2, 8))
    loss = lambda m, b: F.cross_entropy(m(b[0]), b[1])  # noqa: E731
    return collect_statistics(model, graph, batches, loss, gradients=gradients, gram=True, progress=False)


def test_statistics_count_in_int64_and_sum_in_float64():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    batches = [(torch.randn(32, 8), torch.randint(0, 3, (32,))) for _ in range(3)]
    stats = _stats(model, batches)
    produced, entry = stats.axes[("0", "out")], stats.axes[("2", "in")]
    assert entry.act_count.dtype == torch.int64 and produced.grad_numel.dtype == torch.int64
    for name in ("act_abs", "act_sum", "act_sq", "gram"):
        assert getattr(entry, name).dtype == torch.float64, name
    tensors = {name: getattr(e, name) for e in stats.axes.values() for name in ("grad_abs", "taylor")
               if getattr(e, name) is not None}
    assert set(tensors) == {"grad_abs", "taylor"}
    assert all(t.dtype == torch.float64 for t in tensors.values())
    hidden = torch.cat([F.relu(model[0](x)) for x, _ in batches])
    assert torch.equal(entry.act_count, (hidden > 0).sum(0))
    assert entry.act_n == 96
    assert torch.allclose(entry.act_sq, hidden.double().square().sum(0))


def test_statistics_report_the_first_non_finite_batch_after_the_pass():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    good = (torch.randn(4, 8), torch.randint(0, 3, (4,)))
    bad = (torch.full((4, 8), float("nan")), torch.randint(0, 3, (4,)))
    with pytest.raises(NonFiniteError, match="loss is nan on calibration batch 1"):
        _stats(model, [good, bad, good])


class _FactoryRecorder(TorchFunctionMode):
    """Records tensor factory calls that give no ``device`` (they would land on the CPU)."""

    FACTORIES = {torch.arange, torch.ones, torch.zeros, torch.full, torch.empty, torch.tensor}

    def __init__(self):
        super().__init__()
        self.deviceless = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.FACTORIES and "device" not in kwargs:
            self.deviceless.append(func.__name__)
        return func(*args, **kwargs)


def test_head_and_gate_rows_follow_the_index_device():
    heads = torch.tensor([0, 2], device="meta")
    assert attention._head_rows(heads, 4).device.type == "meta"
    assert rnn._gate_rows(4, 8, heads).device.type == "meta"


def test_masking_heads_and_recurrent_units_on_meta_creates_no_cpu_tensor():
    mha = nn.MultiheadAttention(8, 4, batch_first=True, device="meta")
    handler_for(mha).mask(mha, "heads", torch.tensor([1], device="meta"))
    lstm = nn.LSTM(3, 8, bidirectional=True, device="meta")
    handler_for(lstm).mask(lstm, "hidden", torch.tensor([1, 5], device="meta"))
    # the meta device refuses to mix with CPU tensors: any CPU index tensor above would have raised
    assert mha.out_proj.weight.is_meta and lstm.weight_ih_l0_reverse.is_meta


def _handler_call(case: str):
    """(function, arguments) of one piece of handler index math; the arguments are built here."""
    if case == "layernorm_mask":
        return LayerNormHandler().mask_hooks, (nn.LayerNorm(6), "features", torch.tensor([1, 4]))
    if case == "groupnorm_prune":
        return GroupNormHandler().prune, (nn.GroupNorm(2, 8), {"channels": torch.arange(4, 8)})
    if case == "depthwise_prune":
        keep = {"in": torch.tensor([0, 2]), "out": torch.tensor([0, 1, 4, 5])}
        return ConvHandler().prune, (nn.Conv2d(4, 8, 3, groups=4), keep)
    if case == "removed":
        return _removed, (8, torch.tensor([1, 2]))
    lstm = nn.LSTM(3, 8, bidirectional=True)
    return handler_for(lstm).prune, (lstm, {"input": torch.tensor([0, 2])})


@pytest.mark.parametrize("case", ["layernorm_mask", "groupnorm_prune", "depthwise_prune", "removed", "lstm_prune"])
def test_handler_index_math_names_a_device_for_every_tensor_it_creates(case):
    function, args = _handler_call(case)
    recorder = _FactoryRecorder()
    with recorder:
        result = function(*args)
    for handle in result if isinstance(result, list) else []:
        handle.remove()
    assert recorder.deviceless == []
