"""Tests of neuroprune.models.zoo: every model builds, runs on its digits layout and traces with torch.fx."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from neuroprune.data import load_digits
from neuroprune.core.errors import ConfigError, UnknownNameError
from neuroprune.models.zoo import ZOO, ZooEntry, build_model, zoo_entry

EXPECTED_MODELS = {"mlp", "lenet5", "resnet18", "resnet56", "resnet50", "mobilenetv2", "bilstm", "transformer"}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: build_model(name).eval() for name in ZOO}


def _batch(name: str) -> torch.Tensor:
    """Two digits samples in the model's layout; resnet50 gets small random RGB images instead."""
    if name == "resnet50":
        return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    entry = zoo_entry(name)
    return load_digits(layout=entry.layout, image_size=entry.image_size).x_val[:2]


def test_registry_holds_the_expected_models() -> None:
    assert set(ZOO) == EXPECTED_MODELS
    for entry in ZOO.values():
        assert isinstance(entry, ZooEntry) and entry.description
        assert entry.layout in {"flat", "image", "sequence"}
    assert {name for name, e in ZOO.items() if e.layout == "image"} == {
        "lenet5",
        "resnet18",
        "resnet56",
        "resnet50",
        "mobilenetv2",
    }
    assert zoo_entry("resnet50").image_size == 224 and zoo_entry("lenet5").image_size == 32


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_forward_and_fx_trace(models: dict[str, nn.Module], name: str) -> None:
    model, x = models[name], _batch(name)
    num_classes = 1000 if name == "resnet50" else 10
    with torch.no_grad():
        out = model(x)
        traced = torch.fx.symbolic_trace(model)
        assert torch.allclose(traced(x), out, atol=1e-5)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet56", "mobilenetv2", "bilstm", "transformer"])
def test_num_classes_kwarg(name: str) -> None:
    model = build_model(name, num_classes=3).eval()
    with torch.no_grad():
        assert model(_batch(name)).shape == (2, 3)


@pytest.mark.parametrize("name", ["lenet5", "mobilenetv2"])
def test_in_channels_kwarg(name: str) -> None:
    model = build_model(name, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet50_parameter_count_matches_torchvision(models: dict[str, nn.Module]) -> None:
    assert _count(models["resnet50"]) == 25_557_032


def test_resnet18_cifar_parameter_count() -> None:
    assert _count(build_model("resnet18", in_channels=3)) == 11_173_962


def test_resnet56_uses_projection_shortcuts(models: dict[str, nn.Module]) -> None:
    model = models["resnet56"]
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 27
    projections = [b.downsample for b in blocks if b.downsample is not None]
    assert len(projections) == 2  # 16->32 and 32->64
    for proj in projections:
        assert isinstance(proj[0], nn.Conv2d) and proj[0].kernel_size == (1, 1)
        assert isinstance(proj[1], nn.BatchNorm2d)


def test_mlp_layers_and_hidden_kwarg(models: dict[str, nn.Module]) -> None:
    names = [name for name, _ in models["mlp"].named_children()]
    assert names == ["fc1", "act1", "fc2", "act2", "fc3"]
    wide = build_model("mlp", hidden=(32,), num_classes=4)
    assert [type(m).__name__ for m in wide] == ["Linear", "ReLU", "Linear"]
    assert wide.fc1.out_features == 32 and wide.fc2.out_features == 4


def test_mobilenetv2_width_mult_and_depthwise(models: dict[str, nn.Module]) -> None:
    depthwise = [m for m in models["mobilenetv2"].modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert _count(build_model("mobilenetv2", width_mult=0.5)) < _count(models["mobilenetv2"])


def test_sequence_models_structure(models: dict[str, nn.Module]) -> None:
    lstm = models["bilstm"].lstm
    assert lstm.bidirectional and lstm.num_layers == 2 and lstm.hidden_size == 64 and lstm.batch_first
    tr = models["transformer"]
    assert tr.pos.shape == (1, 8, 64)
    assert not any(isinstance(m, nn.TransformerEncoderLayer) for m in tr.modules())
    assert sum(isinstance(m, nn.MultiheadAttention) for m in tr.modules()) == 2


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(UnknownNameError, match="unknown zoo model 'vgg16'; known: bilstm, lenet5, mlp") as info:
        build_model("vgg16")
    assert set(info.value.known) == EXPECTED_MODELS
    with pytest.raises(UnknownNameError, match="unknown zoo model 'alexnet'"):
        zoo_entry("alexnet")


def test_unknown_kwarg_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'mlp' does not accept width_mult; it accepts: num_classes"):
        build_model("mlp", width_mult=2.0)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("mlp", {"num_classes": 0}, "num_classes must be an integer >= 1"),
        ("mlp", {"hidden": (8, -1)}, r"hidden\[1\] must be an integer >= 1"),
        ("lenet5", {"in_channels": 1.5}, "in_channels must be an integer >= 1"),
        ("mobilenetv2", {"width_mult": 0}, "width_mult must be a number > 0"),
        ("transformer", {"d_model": 30}, "divisible by num_heads"),
    ],
)
def test_bad_kwargs_are_config_errors(name: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(name, **kwargs)
