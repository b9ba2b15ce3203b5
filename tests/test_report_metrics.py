"""Tests of neuroprune.torch.metrics: parameters, FLOPs, size, latency."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch
from torch import nn

from neuroprune.torch.metrics import (
    ModelMetrics,
    count_flops,
    count_parameters,
    measure_latency_ms,
    measure_model,
    serialized_size_bytes,
)


class TiedModel(nn.Module):
    """Embedding whose weight is also the output projection's weight."""

    def __init__(self, vocab: int = 10, dim: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + y


def mlp(hidden: int = 32) -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, 4))


def test_count_parameters_of_linear_stack():
    assert count_parameters(mlp(32)) == (16 * 32 + 32) + (32 * 4 + 4)


def test_tied_weights_counted_once():
    assert count_parameters(TiedModel(10, 4)) == 10 * 4


def test_flops_of_linear_at_batch_one():
    assert count_flops(nn.Linear(64, 128), torch.randn(1, 64)) == 2 * 64 * 128


def test_flops_of_conv2d():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    # every one of 8 x 16 x 16 outputs takes 3 x 3 x 3 multiply-adds
    assert count_flops(conv, torch.randn(1, 3, 16, 16)) == 2 * (8 * 16 * 16) * (3 * 3 * 3)


def test_flops_with_tuple_input():
    assert count_flops(TwoInputs(), (torch.randn(1, 8), torch.randn(1, 4))) == 2 * 8 * 4


def test_count_flops_restores_train_mode():
    model = mlp()
    model.train()
    count_flops(model, torch.randn(1, 16))
    assert all(m.training for m in model.modules())


def test_size_equals_safetensors_length_and_grows_with_model():
    small, large = mlp(8), mlp(64)
    expected = len(safetensors.torch.save(dict(small.state_dict())))
    assert serialized_size_bytes(small) == expected
    assert serialized_size_bytes(large) > serialized_size_bytes(small)


def test_size_of_tied_model_stores_the_shared_weight_once():
    model = TiedModel(10, 4)
    expected = len(safetensors.torch.save({"embed.weight": model.embed.weight.detach()}))
    assert serialized_size_bytes(model) == expected


def test_size_counts_buffers():
    with_bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    assert serialized_size_bytes(with_bn) > serialized_size_bytes(nn.Linear(4, 4))


def test_latency_positive_and_modes_restored():
    model = mlp()
    model.train()
    model[2].eval()  # a mixed state must come back exactly
    latency = measure_latency_ms(model, torch.randn(2, 16), runs=3, warmup=1)
    assert latency > 0
    assert model.training and model[0].training and not model[2].training


def test_latency_keeps_eval_mode():
    model = mlp().eval()
    measure_latency_ms(model, torch.randn(1, 16), runs=1, warmup=0)
    assert not model.training


@pytest.mark.parametrize("runs", [0, -1])
def test_latency_rejects_runs_below_one(runs):
    with pytest.raises(ValueError, match=str(runs)):
        measure_latency_ms(mlp(), torch.randn(1, 16), runs=runs)


def test_latency_rejects_negative_warmup():
    with pytest.raises(ValueError, match="-2"):
        measure_latency_ms(mlp(), torch.randn(1, 16), warmup=-2)


def _half_dtype() -> torch.dtype:
    try:
        nn.Linear(4, 4).half()(torch.randn(1, 4).half())
    except RuntimeError:
        return torch.bfloat16
    return torch.float16


def test_low_precision_model_on_cpu():
    dtype = _half_dtype()
    model = mlp(32).to(dtype)
    metrics = measure_model(
        model,
        lambda b: torch.randn(b, 16, dtype=dtype),
        batch_sizes=(1, 4),
        runs=2,
        warmup=1,
    )
    assert metrics.params == count_parameters(mlp(32))
    assert metrics.flops == 2 * (16 * 32 + 32 * 4)
    # 2-byte weights: roughly half the float32 serialisation
    assert metrics.size_bytes < serialized_size_bytes(mlp(32))
    assert metrics.size_bytes == len(safetensors.torch.save(dict(model.state_dict())))


def test_measure_model_fields_and_to_dict():
    model = nn.Linear(64, 128)
    metrics = measure_model(
        model, lambda b: torch.randn(b, 64), accuracy=0.9, batch_sizes=(1, 8), runs=2, warmup=0
    )
    assert isinstance(metrics, ModelMetrics)
    assert metrics.flops == 2 * 64 * 128
    assert metrics.params == 64 * 128 + 128
    assert metrics.accuracy == 0.9
    data = metrics.to_dict()
    assert set(data) == {"params", "flops", "size_bytes", "accuracy", "latency_ms"}
    assert set(data["latency_ms"]) == {"batch_1", "batch_8"}
    assert all(v > 0 for v in data["latency_ms"].values())


def test_measure_model_rejects_zero_batch_size():
    with pytest.raises(ValueError, match="0"):
        measure_model(nn.Linear(4, 4), lambda b: torch.randn(b, 4), batch_sizes=(1, 0))


def test_attention_flops_are_counted_on_the_fused_fast_path_too():
    attention = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    x = torch.randn(1, 5, 16)
    flops = count_flops(attention, x)
    linear_only = 2 * 5 * (16 * 48 + 16 * 16 + 16 * 32 + 32 * 16)  # qkv, out, ffn up, ffn down
    attention_matmuls = 2 * 2 * (2 * 5 * 5 * 8)  # q @ k^T and weights @ v: 2 heads of width 8, 5 tokens
    assert flops == linear_only + attention_matmuls
    assert torch.backends.mha.get_fastpath_enabled()
