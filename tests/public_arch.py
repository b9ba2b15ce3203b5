"""Public architectures (torchvision, timm, torch.nn) and one check of neuroprune on each.

Shared by ``tests/test_public_architectures.py`` and ``benchmarks/architectures.py``. Every
model is built with random weights (``weights=None`` / ``pretrained=False``) at a small input
size; nothing is downloaded. torchvision is imported through :mod:`torchvision_compat`.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Arch:
    """One architecture: where it comes from, how to build it, its input, and its test speed."""

    name: str
    source: str  # "torchvision", "timm" or "torch"
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    slow: bool = False
    #: why neuroprune cannot prune it on this branch (the check then expects a specific error)


def _tv(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from torchvision_compat import import_torchvision

        return getattr(import_torchvision().models, name)(weights=None, **kwargs)

    return build


def _tv_seg(name: str, aux_loss: bool | None = True) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from torchvision_compat import import_torchvision

        extra = {} if aux_loss is None else {"aux_loss": aux_loss}
        return getattr(import_torchvision().models.segmentation, name)(weights=None, weights_backbone=None,
                                                                      num_classes=5, **extra)

    return build


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)

    return build


class TorchEncoderClassifier(nn.Module):
    """Patch embedding, ``nn.TransformerEncoder`` (fused fast path in eval), linear head."""

    def __init__(self, width: int = 32, heads: int = 4, layers: int = 2, classes: int = 10):
        super().__init__()
        self.embed = nn.Conv2d(3, width, 8, stride=8)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (N, patches, width)
        return self.head(self.encoder(tokens).mean(dim=1))


class TorchSeq2Seq(nn.Module):
    """``nn.Transformer`` (encoder and decoder, pre-norm) between two linear maps."""

    def __init__(self, width: int = 32, classes: int = 7):
        super().__init__()
        self.src, self.tgt = nn.Linear(12, width), nn.Linear(12, width)
        self.transformer = nn.Transformer(width, 4, 2, 2, 64, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.transformer(self.src(x), self.tgt(x[:, :5])))


ARCHITECTURES: list[Arch] = [
    Arch("torch.TransformerEncoder", "torch", TorchEncoderClassifier, (2, 3, 32, 32)),
    Arch("torch.Transformer", "torch", TorchSeq2Seq, (2, 9, 12)),
    Arch("resnet18", "torchvision", _tv("resnet18", num_classes=10), (2, 3, 32, 32)),
    Arch("mobilenet_v2", "torchvision", _tv("mobilenet_v2", num_classes=10), (2, 3, 32, 32)),
    Arch("mnasnet0_5", "torchvision", _tv("mnasnet0_5", num_classes=10), (2, 3, 32, 32)),
    Arch("squeezenet1_1", "torchvision", _tv("squeezenet1_1", num_classes=10), (2, 3, 64, 64)),
    Arch("fcn_resnet50", "torchvision", _tv_seg("fcn_resnet50"), (2, 3, 32, 32), slow=True),
    Arch("deeplabv3_mobilenet_v3_large", "torchvision", _tv_seg("deeplabv3_mobilenet_v3_large"), (2, 3, 32, 32)),
    Arch("lraspp_mobilenet_v3_large", "torchvision", _tv_seg("lraspp_mobilenet_v3_large", aux_loss=None),
         (2, 3, 64, 64), slow=True),
    Arch("deeplabv3_resnet50", "torchvision", _tv_seg("deeplabv3_resnet50"), (2, 3, 32, 32), slow=True),
    Arch("resnet50", "torchvision", _tv("resnet50", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("resnext50_32x4d", "torchvision", _tv("resnext50_32x4d", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("wide_resnet50_2", "torchvision", _tv("wide_resnet50_2", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("mobilenet_v3_small", "torchvision", _tv("mobilenet_v3_small", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("mobilenet_v3_large", "torchvision", _tv("mobilenet_v3_large", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("mnasnet1_0", "torchvision", _tv("mnasnet1_0", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("regnet_x_400mf", "torchvision", _tv("regnet_x_400mf", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("regnet_y_400mf", "torchvision", _tv("regnet_y_400mf", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("densenet121", "torchvision", _tv("densenet121", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("squeezenet1_0", "torchvision", _tv("squeezenet1_0", num_classes=10), (2, 3, 64, 64), slow=True),
    Arch("alexnet", "torchvision", _tv("alexnet", num_classes=10), (2, 3, 64, 64), slow=True),
    Arch("vgg11_bn", "torchvision", _tv("vgg11_bn", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("googlenet", "torchvision", _tv("googlenet", num_classes=10, aux_logits=False, init_weights=True),
         (2, 3, 64, 64), slow=True),
    Arch("inception_v3", "torchvision", _tv("inception_v3", num_classes=10, aux_logits=False, init_weights=True),
         (2, 3, 80, 80), slow=True),
    Arch("efficientnet_b0", "torchvision", _tv("efficientnet_b0", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("efficientnet_v2_s", "torchvision", _tv("efficientnet_v2_s", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("convnext_tiny", "torchvision", _tv("convnext_tiny", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("shufflenet_v2_x0_5", "torchvision", _tv("shufflenet_v2_x0_5", num_classes=10), (2, 3, 32, 32),
         slow=True),
    Arch("vit_b_16", "torchvision", _tv("vit_b_16", num_classes=10, image_size=32), (2, 3, 32, 32), slow=True),
    Arch("swin_t", "torchvision", _tv("swin_t", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("maxvit_t", "torchvision", _tv("maxvit_t", num_classes=10), (1, 3, 224, 224), slow=True),
    Arch("timm.resnet18", "timm", _timm("resnet18", num_classes=10), (2, 3, 32, 32)),
    Arch("timm.mobilevit_xxs", "timm", _timm("mobilevit_xxs", num_classes=10), (2, 3, 64, 64)),
    Arch("timm.efficientnet_b0", "timm", _timm("efficientnet_b0", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("timm.convnext_atto", "timm", _timm("convnext_atto", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("timm.regnetx_002", "timm", _timm("regnetx_002", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("timm.ghostnet_050", "timm", _timm("ghostnet_050", num_classes=10), (2, 3, 32, 32), slow=True),
    Arch("timm.vit_tiny_patch16_224", "timm", _timm("vit_tiny_patch16_224", num_classes=10, img_size=32),
         (2, 3, 32, 32), slow=True),
    Arch("timm.deit_tiny_patch16_224", "timm", _timm("deit_tiny_patch16_224", num_classes=10, img_size=32),
         (2, 3, 32, 32), slow=True),
]
BY_NAME = {a.name: a for a in ARCHITECTURES}


def _leaves(output: Any) -> list[torch.Tensor]:
    """Every tensor of a (possibly nested) model output, in a fixed order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for key in output for t in _leaves(output[key])]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _leaves(item)]
    return []


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_seeded(arch: Arch, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = arch.build().eval()
    with torch.no_grad():  # nothing constant, so that masked == removed means something
        for param in model.parameters():  # zero-initialised heads, layer scales of 1e-6, unit norms
            if param.numel() > 1 and bool((param == param.flatten()[0]).all()):
                param.add_(torch.empty_like(param).uniform_(-0.1, 0.1))
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    return model


@dataclass
class Outcome:
    """What one architecture did under neuroprune at a ratio."""

    groups: int
    params_before: int
    params_after: int
    masked_max_error: float  # max |masked - removed| / max(1, max |removed|)
    shapes_kept: bool
    reload_exact: bool
    frozen_modules: dict[str, str]

    @property
    def kept(self) -> float:
        return self.params_after / self.params_before


def prune_with_neuroprune(arch: Arch, ratio: float = 0.4, *, ignore_untraceable: bool = True,
                          seed: int = 0) -> Outcome:
    """Magnitude scores, ``ratio`` of every group's units removed; masked vs removed vs reloaded."""
    import neuroprune as npr
    from neuroprune.core.criteria import ScoringInput, score
    from neuroprune.core.selection import counts_for_ratio, select_units
    from neuroprune.torch.surgery import apply_keep

    model = build_seeded(arch, seed)
    torch.manual_seed(seed + 1)
    x = torch.randn(*arch.input_shape)
    graph = npr.discover(model, x, ignore_untraceable=ignore_untraceable)
    scores = score(ScoringInput(model, graph, None), "magnitude")
    counts = counts_for_ratio(graph, scores, {g.name: g.size for g in graph.groups}, ratio)
    keep = graph.keep_indices(select_units(graph, scores, counts))
    with torch.no_grad():
        reference = _leaves(model(x))
        with npr.apply_masks(model, keep):
            masked = _leaves(model(x))
        pruned = apply_keep(model, keep)
        out = _leaves(pruned(x))
    # relative to the output's scale: random weights make some outputs large (inception_v3: ~1e6)
    error = max(float((a - b).abs().max() / b.abs().max().clamp(min=1)) for a, b in zip(masked, out)) if out else math.inf
    shapes = [t.shape for t in reference] == [t.shape for t in out]
    plan = npr.PruningPlan().compose(keep, graph.module_types, graph.axis_sizes)
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "pruned"
        npr.save(target, pruned, plan)
        reloaded = npr.load(target, lambda: build_seeded(arch, seed))
        with torch.no_grad():
            again = _leaves(reloaded.eval()(x))
    exact = len(again) == len(out) and all(torch.equal(a, b) for a, b in zip(again, out))
    return Outcome(len(graph.groups), count_parameters(model), count_parameters(pruned), error, shapes, exact,
                   dict(graph.frozen_modules))


def prune_with_torch_pruning(arch: Arch, ratio: float = 0.4, seed: int = 0) -> dict[str, Any]:
    """Torch-Pruning's MagnitudePruner at the same ratio: params kept, forward OK, reload OK."""
    import io

    import torch_pruning as tp

    model = build_seeded(arch, seed)
    torch.manual_seed(seed + 1)
    x = torch.randn(*arch.input_shape)
    with torch.no_grad():
        reference = _leaves(model(x))
    before = count_parameters(model)
    heads = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
             and any(getattr(m, "out_features", getattr(m, "out_channels", None)) == t.shape[1] for t in reference)]
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=heads[-2:])
    pruner.step()
    result = {"status": "ok", "params_kept": count_parameters(model) / before, "forward_ok": False,
              "reload_ok": False}
    try:
        with torch.no_grad():
            out = _leaves(model.eval()(x))
    except Exception as error:  # a pruned model that no longer runs
        result["status"] = f"broken model: {type(error).__name__}"
        return result
    result["forward_ok"] = [t.shape for t in out] == [t.shape for t in reference]
    if not result["forward_ok"]:
        result["status"] = "broken model: output shape changed"
    buffer = io.BytesIO()
    torch.save(tp.state_dict(model), buffer)  # Torch-Pruning's own format: pickled module state
    buffer.seek(0)
    try:
        fresh = tp.load_state_dict(build_seeded(arch, seed), torch.load(buffer, weights_only=False))
        with torch.no_grad():
            again = _leaves(fresh.eval()(x))
    except Exception as error:
        result["status"] += f"; reload failed: {type(error).__name__}"
        return result
    result["reload_ok"] = len(again) == len(out) and all(torch.equal(a, b) for a, b in zip(again, out))
    return result
