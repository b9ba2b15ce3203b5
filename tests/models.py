"""Tiny hand-built models for the tests (fixed seeds, CPU, milliseconds to run)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuroprune.data import DataSplits


def mlp(widths=(6, 8, 5, 3), norm: str | None = None, dropout: bool = False, seed: int = 0) -> nn.Sequential:
    """A Sequential MLP; ``norm`` in {None, "bn", "ln"} is placed after every hidden Linear."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            if norm == "bn":
                layers.append(nn.BatchNorm1d(b))
            elif norm == "ln":
                layers.append(nn.LayerNorm(b))
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(0.1))
    return nn.Sequential(*layers)


class AttributeMLP(nn.Module):
    """An MLP class whose forward calls Linear attributes (not a Sequential)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(6, 10)
        self.fc2 = nn.Linear(10, 7)
        self.head = nn.Linear(7, 3)

    def forward(self, x):
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


def randomise_norm_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(module.bias.shape, generator=generator) - 0.5)
    return model


def toy_data(n_features: int = 6, classes: int = 3, n: int = 120, seed: int = 0) -> DataSplits:
    """Linearly separable-ish random data split into train/val/test."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, n_features, generator=generator) * 2
    y = torch.randint(0, classes, (n,), generator=generator)
    x = centers[y] + torch.randn(n, n_features, generator=generator) * 0.5
    a, b = int(n * 0.6), int(n * 0.8)
    return DataSplits(name="toy", x_train=x[:a], y_train=y[:a], x_val=x[a:b], y_val=y[a:b],
                      x_test=x[b:], y_test=y[b:], num_classes=classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def masked_and_pruned(model: nn.Module, keep, x: torch.Tensor) -> tuple[torch.Tensor, nn.Module, torch.Tensor]:
    """The model's output with ``keep`` applied as masks, the physically pruned copy, and its output
    (the two outputs must agree: masked == removed)."""
    from neuroprune import apply_masks
    from neuroprune.torch.surgery import apply_keep

    with torch.no_grad():
        with apply_masks(model, keep):
            masked = model(x)
        pruned = apply_keep(model, keep)
        return masked, pruned, pruned(x)
