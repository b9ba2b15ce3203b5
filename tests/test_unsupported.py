"""What discovery cannot follow raises UnsupportedModuleError naming the place; ignore= works around it."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from neuroprune import discover
from neuroprune.core.errors import UnsupportedModuleError


class HandWrittenAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.out = nn.Linear(8, 8)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        b, t, _ = x.shape
        q = q.view(b, t, 2, 4).transpose(1, 2)  # the head split
        k = k.view(b, t, 2, 4).transpose(1, 2)
        v = v.view(b, t, 2, 4).transpose(1, 2)
        y = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, t, 8))


class WithBlock(nn.Module):
    def __init__(self, block: nn.Module, width: int = 8):
        super().__init__()
        self.inp = nn.Linear(4, width)
        self.block = block
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        return self.head(self.block(torch.relu(self.inp(x))))


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


class Cumsum(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=-1)


def test_hand_written_head_split_without_a_head_count_keeps_its_heads():
    model = nn.Sequential(HandWrittenAttention(), nn.Linear(8, 2))
    graph = discover(model, torch.randn(2, 3, 8))  # the split is followed; 2 is written as a number
    assert [g.name for g in graph.groups] == ["0.out"]
    assert any("has no head-count attribute" in r for r in graph.frozen["0.qkv"])
    graph = discover(model, torch.randn(2, 3, 8), ignore=["0"])
    assert graph.groups == []  # the ignored block is opaque; nothing else is prunable


def test_unknown_layer_type_lists_supported_ones():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ConvTranspose2d(4, 2, 3))
    with pytest.raises(UnsupportedModuleError, match=r"1: layer type ConvTranspose2d is not supported; supported: .*Conv2d.*Linear.*ignore=\['1'\]"):
        discover(model, torch.randn(1, 1, 6, 6))
    assert discover(model, torch.randn(1, 1, 6, 6), ignore=["1"]).groups == []


def test_lstm_projection():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 8, proj_size=3, batch_first=True)
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    with pytest.raises(UnsupportedModuleError, match="lstm: LSTM with proj_size=3 is not supported"):
        discover(Net(), torch.randn(2, 5, 4))
    assert discover(Net(), torch.randn(2, 5, 4), ignore=["lstm"]).groups == []


def test_data_dependent_control_flow_names_the_module():
    model = WithBlock(DataDependent())
    with pytest.raises(UnsupportedModuleError, match=r"cannot trace module 'block' \(DataDependent\).*ignore=\['block'\]"):
        discover(model, torch.randn(2, 4))
    graph = discover(model, torch.randn(2, 4), ignore=["block"])
    assert graph.groups == [] and "inp" in graph.frozen  # channels entering an ignored module are fixed


def test_unknown_operation_on_prunable_channels():
    with pytest.raises(UnsupportedModuleError, match="operation 'cumsum' on prunable channels is not supported.*ignore=\\['block'\\]"):
        discover(WithBlock(Cumsum()), torch.randn(2, 4))


def test_matmul_on_prunable_channels():
    class Gram(nn.Module):
        def forward(self, x):
            return x @ x.transpose(-1, -2)

    model = nn.Sequential(nn.Linear(4, 6), Gram(), nn.Linear(3, 2))
    graph = discover(model, torch.randn(2, 3, 4))  # channels summed over are fixed, not guessed
    assert graph.groups == [] and any("summed over by a matrix product" in r for r in graph.frozen["0"])


def test_ignore_names_must_exist():
    with pytest.raises(UnsupportedModuleError, match="ignore names modules the model does not have: nope"):
        discover(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)), torch.randn(1, 2), ignore=["nope"])


def test_channel_slices_and_fixed_tensors_freeze_instead_of_guessing():
    class Slicer(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(4, 8)
            self.bias = nn.Parameter(torch.zeros(8))
            self.head = nn.Linear(5, 2)
            self.head2 = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.a(x)[:, :5]) + self.head2(self.b(x) + self.bias)

    graph = discover(Slicer(), torch.randn(2, 4))
    assert graph.groups == []
    assert any("only some channels" in r for r in graph.frozen["a"])
    assert any("fixed tensor" in r for r in graph.frozen["b"])


def test_custom_layers_without_handler_are_named_not_a_crash():
    class RawLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 4))

        def forward(self, x):
            return x @ self.weight.t()

    with pytest.raises(UnsupportedModuleError, match=r"no handler: 0 \(RawLinear\).*Register a handler"):
        discover(nn.Sequential(RawLinear(), nn.ReLU()), torch.randn(2, 4))
    assert discover(nn.Sequential(nn.BatchNorm1d(4)), torch.randn(2, 4)).groups == []  # nothing to prune, no crash
