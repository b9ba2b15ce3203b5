"""Built-in reference models, hand-written so that no weights or torchvision are needed.

Every model's ``forward`` is traceable by ``torch.fx.symbolic_trace``: no control flow on
tensor values or shapes, ``torch.flatten(x, 1)`` instead of ``x.view``, no in-place ReLU, and
each activation module is used once. Each :class:`ZooEntry` also says how the digits data set
feeds the model (its layout and, for image models, the side images are resized to).

This module is the registry (:data:`ZOO`, :func:`build_model`, :func:`register_model`); the
networks live in :mod:`~neuroprune.models.mlp`, :mod:`~neuroprune.models.convnets` and
:mod:`~neuroprune.models.sequence` (and are importable from here too).

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
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from neuroprune.core.errors import ConfigError, DuplicateNameError, UnknownNameError
from neuroprune.models.convnets import (BasicBlock, Bottleneck, InvertedResidual, LeNet5, MobileNetV2, ResNet, lenet5,
                                        mobilenetv2, resnet18, resnet50, resnet56)
from neuroprune.models.mlp import mlp
from neuroprune.models.sequence import BiLSTM, EncoderBlock, TransformerClassifier, bilstm, transformer

__all__ = ["ZOO", "BasicBlock", "BiLSTM", "Bottleneck", "EncoderBlock", "InvertedResidual", "LeNet5", "MobileNetV2",
           "ResNet", "TransformerClassifier", "ZooEntry", "bilstm", "build_model", "lenet5", "mlp", "mobilenetv2",
           "register_model", "resnet18", "resnet50", "resnet56", "transformer", "zoo_entry"]


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


def register_model(name: str, entry: ZooEntry, *, replace: bool = False) -> ZooEntry:
    """Add ``entry`` to the zoo as ``name`` (``zoo:NAME`` on the command line); a name is
    registered once unless ``replace=True``.

    Example:
        >>> entry = register_model("tiny", ZooEntry(lambda: mlp(hidden=(4,)), "flat", 8, "4 hidden units"))
        >>> build_model("tiny").fc1.out_features
        4
        >>> register_model("tiny", entry)
        Traceback (most recent call last):
        ...
        neuroprune.core.errors.DuplicateNameError: invalid configuration: zoo model 'tiny' is already registered; pass replace=True to replace it
        >>> del ZOO["tiny"]
    """
    if name in ZOO and not replace:
        raise DuplicateNameError("zoo model", name)
    ZOO[name] = entry
    return entry


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
