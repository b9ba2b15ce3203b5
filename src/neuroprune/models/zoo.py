"""Built-in reference models, hand-written so that no weights or torchvision are needed.

Every model's ``forward`` is traceable by ``torch.fx.symbolic_trace``: no control flow on
tensor values or shapes, ``torch.flatten(x, 1)`` instead of ``x.view``, no in-place ReLU, and
each activation module is used once. Each :class:`ZooEntry` also says how the digits data set
feeds the model (its layout and, for image models, the side images are resized to).

Example:
    >>> import torch
    >>> model = build_model("lenet5")
    >>> model(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 10])
    >>> zoo_entry("bilstm").layout
    'sequence'
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from neuroprune.core.errors import ConfigError, UnknownNameError

# --------------------------------------------------------------------------- checks


def _require_positive(**values: int) -> None:
    """Raise :class:`ConfigError` naming every value that is not an integer >= 1."""
    problems = [
        f"{name} must be an integer >= 1, got {value!r}"
        for name, value in values.items()
        if isinstance(value, bool) or not isinstance(value, int) or value < 1
    ]
    if problems:
        raise ConfigError(problems)


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


# --------------------------------------------------------------------------- MLP


def mlp(num_classes: int = 10, in_features: int = 64, hidden: Sequence[int] = (128, 64)) -> nn.Sequential:
    """Fully connected net ``fc1, act1, ..., fcK`` on flat inputs.

    Example:
        >>> mlp().fc1
        Linear(in_features=64, out_features=128, bias=True)
    """
    hidden = tuple(hidden)
    _require_positive(num_classes=num_classes, in_features=in_features)
    _require_positive(**{f"hidden[{i}]": width for i, width in enumerate(hidden)})
    widths = (in_features, *hidden)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(len(hidden)):
        layers[f"fc{i + 1}"] = nn.Linear(widths[i], widths[i + 1])
        layers[f"act{i + 1}"] = nn.ReLU(inplace=False)
    layers[f"fc{len(hidden) + 1}"] = nn.Linear(widths[-1], num_classes)
    return nn.Sequential(layers)


# --------------------------------------------------------------------------- LeNet-5


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling, for 32x32 inputs.

    Example:
        >>> LeNet5()(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        _require_positive(num_classes=num_classes, in_channels=in_channels)
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
        _require_positive(num_classes=num_classes, in_channels=in_channels)
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
        _require_positive(num_classes=num_classes, in_channels=in_channels)
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


# --------------------------------------------------------------------------- sequence models


class BiLSTM(nn.Module):
    """Bidirectional LSTM; the last layer's final forward and backward states feed a Linear.

    Example:
        >>> BiLSTM()(torch.zeros(2, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, num_classes: int = 10, input_size: int = 8, hidden_size: int = 64, num_layers: int = 2
    ):
        super().__init__()
        _require_positive(
            num_classes=num_classes, input_size=input_size, hidden_size=hidden_size, num_layers=num_layers
        )
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_n = self.lstm(x)[1][0]  # (num_layers * 2, N, hidden); indexing keeps fx tracing simple
        return self.fc(torch.cat([h_n[-2], h_n[-1]], dim=1))


def bilstm(
    num_classes: int = 10, input_size: int = 8, hidden_size: int = 64, num_layers: int = 2
) -> BiLSTM:
    """Build :class:`BiLSTM` for (N, T, input_size) sequences."""
    return BiLSTM(num_classes, input_size, hidden_size, num_layers)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))``, then ``x + ffn(ln2(x))``."""

    def __init__(self, d_model: int, num_heads: int, ffn_mult: int = 4):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(d_model, ffn_mult * d_model),
                act=nn.GELU(),
                fc2=nn.Linear(ffn_mult * d_model, d_model),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ffn(self.ln2(x))


class TransformerClassifier(nn.Module):
    """Small transformer encoder over (N, seq_len, input_size) sequences, mean-pooled.

    Example:
        >>> TransformerClassifier()(torch.zeros(2, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_size: int = 8,
        seq_len: int = 8,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
    ):
        super().__init__()
        _require_positive(
            num_classes=num_classes,
            input_size=input_size,
            seq_len=seq_len,
            d_model=d_model,
            num_heads=num_heads,
            num_layers=num_layers,
        )
        if d_model % num_heads:
            raise ConfigError([f"d_model ({d_model}) must be divisible by num_heads ({num_heads})"])
        self.embed = nn.Linear(input_size, d_model)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(d_model, num_heads) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


def transformer(
    num_classes: int = 10,
    input_size: int = 8,
    seq_len: int = 8,
    d_model: int = 64,
    num_heads: int = 4,
    num_layers: int = 2,
) -> TransformerClassifier:
    """Build :class:`TransformerClassifier`; sequences must be exactly ``seq_len`` long."""
    return TransformerClassifier(num_classes, input_size, seq_len, d_model, num_heads, num_layers)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model's builder and how the digits data set feeds it.

    ``layout`` is ``"flat"``, ``"image"`` or ``"sequence"``; ``image_size`` is the side digits
    images are resized to for image models (8 for the others, where it is unused).
    """

    build: Callable[..., nn.Module]
    layout: str
    image_size: int
    description: str


ZOO: dict[str, ZooEntry] = {
    "mlp": ZooEntry(mlp, "flat", 8, "MLP 64-128-64-10 on flattened 8x8 digits"),
    "lenet5": ZooEntry(lenet5, "image", 32, "LeNet-5 (ReLU, max-pool) on 32x32 images"),
    "resnet18": ZooEntry(resnet18, "image", 32, "CIFAR-style ResNet-18, 3x3 stem, no max-pool"),
    "resnet56": ZooEntry(resnet56, "image", 32, "CIFAR ResNet-56, widths 16/32/64, 1x1 conv shortcuts"),
    "resnet50": ZooEntry(resnet50, "image", 224, "ImageNet ResNet-50 (torchvision layout), 1000 classes"),
    "mobilenetv2": ZooEntry(mobilenetv2, "image", 32, "MobileNetV2 for 32x32 inputs, width_mult option"),
    "bilstm": ZooEntry(bilstm, "sequence", 8, "2-layer bidirectional LSTM over the 8 rows of a digit"),
    "transformer": ZooEntry(transformer, "sequence", 8, "2-block pre-norm transformer encoder, 4 heads"),
}


def zoo_entry(name: str) -> ZooEntry:
    """Return the registry entry of zoo model ``name``.

    Example:
        >>> zoo_entry("resnet56").image_size
        32
    """
    try:
        return ZOO[name]
    except (KeyError, TypeError):
        raise UnknownNameError("zoo model", str(name), ZOO) from None


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build zoo model ``name``; ``kwargs`` go to its builder (e.g. ``num_classes``).

    Raises:
        UnknownNameError: ``name`` is not in :data:`ZOO`.
        ConfigError: A keyword is not accepted by the builder, or a value is invalid.

    Example:
        >>> build_model("mlp", num_classes=3).fc3.out_features
        3
    """
    entry = zoo_entry(name)
    signature = inspect.signature(entry.build)
    unknown = sorted(set(kwargs) - set(signature.parameters))
    if unknown:
        accepted = ", ".join(signature.parameters)
        problem = f"zoo model {name!r} does not accept {', '.join(unknown)}; it accepts: {accepted}"
        raise ConfigError([problem])
    return entry.build(**kwargs)
