"""The zoo's convolutional networks: LeNet-5, ResNets (torchvision's module names), MobileNetV2.

Every ``forward`` is traceable by ``torch.fx.symbolic_trace`` (see :mod:`neuroprune.models.zoo`).

Example:
    >>> import torch
    >>> resnet56(num_classes=3)(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 3])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from neuroprune.core.errors import ConfigError
from neuroprune.models.arguments import require_positive

# --------------------------------------------------------------------------- shared blocks


def _init_weights(model: nn.Module) -> nn.Module:
    """He-normal (fan-out) convolutions, BatchNorm at identity, as torchvision does."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """A bias-free ``kernel``x``kernel`` convolution with 'same'-style padding, then BatchNorm."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(out_ch)]


# --------------------------------------------------------------------------- LeNet-5


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling, for 32x32 inputs.

    Example:
        >>> LeNet5()(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        require_positive(num_classes=num_classes, in_channels=in_channels)
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.relu1 = nn.ReLU(inplace=False)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU(inplace=False)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.relu3 = nn.ReLU(inplace=False)
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU(inplace=False)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu3(self.fc1(x))
        x = self.relu4(self.fc2(x))
        return self.fc3(x)


def lenet5(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """Build :class:`LeNet5`; it expects 32x32 images."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels)


# --------------------------------------------------------------------------- ResNets


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with an identity or 1x1 conv+BN projection shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_ch, width, 3, stride)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2, self.bn2 = _conv_bn(width, width, 3)
        self.relu2 = nn.ReLU(inplace=False)
        self.downsample = _projection(in_ch, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as in torchvision's ResNet v1.5), 1x1 expand x4."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1, self.bn1 = _conv_bn(in_ch, width, 1)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv3, self.bn3 = _conv_bn(width, out_ch, 1)
        self.relu3 = nn.ReLU(inplace=False)
        self.downsample = _projection(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    """1x1 conv+BN shortcut (option B) when the block changes shape, else ``None``."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(*_conv_bn(in_ch, out_ch, 1, stride))


def _stage(
    block: type[BasicBlock | Bottleneck], in_ch: int, width: int, depth: int, stride: int
) -> nn.Sequential:
    blocks = [block(in_ch, width, stride)]
    blocks += [block(width * block.expansion, width) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class ResNet(nn.Module):
    """ResNet with torchvision's module names (``conv1, bn1, layer1.., avgpool, fc``).

    ``imagenet_stem`` selects the 7x7 stride-2 stem with 3x3 max-pool; otherwise a CIFAR-style
    3x3 stride-1 stem without pooling. ``stages`` lists ``(width, depth, stride)``.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        stages: Sequence[tuple[int, int, int]],
        num_classes: int,
        in_channels: int,
        imagenet_stem: bool,
    ):
        super().__init__()
        require_positive(num_classes=num_classes, in_channels=in_channels)
        stem_width = stages[0][0]
        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet_stem else None
        channels = stem_width
        for index, (width, depth, stride) in enumerate(stages, start=1):
            setattr(self, f"layer{index}", _stage(block, channels, width, depth, stride))
            channels = width * block.expansion
        self.num_stages = len(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{index}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 10, in_channels: int = 1) -> ResNet:
    """CIFAR-style ResNet-18: 3x3 stem, BasicBlock x [2, 2, 2, 2], widths 64..512.

    Example:
        >>> sum(p.numel() for p in resnet18(in_channels=3).parameters())
        11173962
    """
    stages = [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)]
    return ResNet(BasicBlock, stages, num_classes, in_channels, imagenet_stem=False)


def resnet56(num_classes: int = 10, in_channels: int = 1) -> ResNet:
    """CIFAR ResNet-56: 3x3 stem, 9 BasicBlocks per stage, widths 16/32/64, option-B shortcuts."""
    stages = [(16, 9, 1), (32, 9, 2), (64, 9, 2)]
    return ResNet(BasicBlock, stages, num_classes, in_channels, imagenet_stem=False)


def resnet50(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ImageNet ResNet-50 (torchvision layout): Bottleneck x [3, 4, 6, 3], widths 64..2048.

    Example:
        >>> sum(p.numel() for p in resnet50().parameters())
        25557032
    """
    stages = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]
    return ResNet(Bottleneck, stages, num_classes, in_channels, imagenet_stem=True)


# --------------------------------------------------------------------------- MobileNetV2


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never more than 10 % below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when ``expand_ratio`` is 1), 3x3 depthwise, 1x1 linear projection."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_ch * expand_ratio
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if expand_ratio != 1:
            layers["expand_conv"], layers["expand_bn"] = _conv_bn(in_ch, hidden, 1)
            layers["expand_act"] = nn.ReLU6(inplace=False)
        layers["dw_conv"], layers["dw_bn"] = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        layers["dw_act"] = nn.ReLU6(inplace=False)
        layers["project_conv"], layers["project_bn"] = _conv_bn(hidden, out_ch, 1)
        self.block = nn.Sequential(layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.block(x)
        return self.block(x)


# (expand ratio t, output channels c, repeats n, first stride s); strides suit 32x32 inputs.
MOBILENETV2_SMALL_INPUT_TABLE = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 inputs: stride-1 3x3 stem, the standard block table with the
    first two downsamplings removed (32 -> 16 -> 8 -> 4), 1x1 head conv, pool, Linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0):
        super().__init__()
        require_positive(num_classes=num_classes, in_channels=in_channels)
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ConfigError([f"width_mult must be a number > 0, got {width_mult!r}"])
        channels = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [*_conv_bn(in_channels, channels, 3), nn.ReLU6(inplace=False)]
        for t, c, n, s in MOBILENETV2_SMALL_INPUT_TABLE:
            out_ch = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out_ch, s if i == 0 else 1, t))
                channels = out_ch
        layers += [*_conv_bn(channels, last, 1), nn.ReLU6(inplace=False)]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def mobilenetv2(num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0) -> MobileNetV2:
    """Build :class:`MobileNetV2` for 32x32 inputs; ``width_mult`` scales every width."""
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
