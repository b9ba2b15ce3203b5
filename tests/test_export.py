"""Export of pruned folders: ONNX (onnxruntime at several batch sizes), TorchScript, torch.export, the CLI."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torch.nn as nn

import neuroprune
import neuroprune.data
from neuroprune.cli import export as export_cli
from neuroprune.core.errors import CheckpointError, ConfigError, OutputExistsError, UnknownNameError
from neuroprune.torch.export import (ExportCheck, ExportError, export_folder, export_model, export_onnx, export_program,
                               export_torchscript, load_folder_for_export, parse_input_shape)
from neuroprune.torch.layers.attention import HeadPrunedMultiheadAttention

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# Small residual CNNs as user model files: cheap to prune and trace, yet conv + BN + projection
# shortcuts (ResNet) and expand / depthwise / project blocks (MobileNetV2).
NET_SOURCE = """\
from neuroprune.models.zoo import BasicBlock, ResNet, mobilenetv2

def tiny_resnet():
    return ResNet(BasicBlock, [(8, 1, 1), (16, 1, 2)], num_classes=10, in_channels=1, imagenet_stem=False)

def tiny_mobilenet():
    return mobilenetv2(num_classes=10, in_channels=1, width_mult=0.25)
"""

# name -> (model spec, layout, image size); "file:" specs are completed with the written net file
MODELS = {
    "mlp": ("zoo:mlp", "flat", 8),
    "lenet5": ("zoo:lenet5", "image", 32),
    "bilstm": ("zoo:bilstm", "sequence", 8),
    "transformer": ("zoo:transformer", "sequence", 8),
    "tiny_resnet": ("file:tiny_resnet", "image", 8),
    "tiny_mobilenet": ("file:tiny_mobilenet", "image", 8),
}


def _calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Real BN statistics: untrained nets with identity BN stats can collapse to a constant output in eval mode,
    which would make every output comparison vacuous."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    for norm in norms:
        norm.momentum = 0.1


class Pruned:
    """Pruned folders, made once per module on first use."""

    def __init__(self, root):
        self.root = root
        self.net_file = root / "net.py"
        self.net_file.write_text(NET_SOURCE)
        self.folders = {}

    def spec(self, name: str) -> str:
        spec = MODELS[name][0]
        return f"{self.net_file}:{spec[5:]}" if spec.startswith("file:") else spec

    def data(self, name: str):
        _, layout, size = MODELS[name]
        return neuroprune.data.load_digits(layout=layout, image_size=size)

    def folder(self, name: str):
        if name not in self.folders:
            data = self.data(name)
            from neuroprune.models.spec import build_from_spec
            torch.manual_seed(0)
            model = build_from_spec(self.spec(name), data)
            _calibrate_batchnorm(model, data.x_train[:256])
            result = neuroprune.prune(model, neuroprune.ClassificationTask(data), neuroprune.PruneConfig(
                criterion="magnitude", ratio=0.5, tolerance=1.0, progress=False, latency_runs=1))
            assert result.report["after"]["params"] < result.report["before"]["params"]
            folder = self.root / name
            result.save(folder, html=False)
            self.folders[name] = folder
        return self.folders[name]

    def load(self, name: str):
        _, layout, size = MODELS[name]
        return load_folder_for_export(self.folder(name), self.spec(name), layout=layout, image_size=size)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    return Pruned(tmp_path_factory.mktemp("pruned"))


def _ort_run(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _inputs_like(example: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.randn((batch, *example.shape[1:]), generator=torch.Generator().manual_seed(batch))


def _eager(model, x):
    with torch.no_grad():
        return model.eval()(x)


# --------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_of_pruned_model_matches_pytorch_at_several_batch_sizes(pruned, name, tmp_path):
    model, (x,) = pruned.load(name)
    if name == "transformer":
        assert any(isinstance(m, HeadPrunedMultiheadAttention) for m in model.modules())
    if name == "bilstm":
        assert model.lstm.hidden_size < 64
    reference = _eager(model, x)
    assert not torch.allclose(reference[0], reference[1]), "a constant model would make the check vacuous"

    check = export_onnx(model, (x,), tmp_path / "model.onnx")
    assert isinstance(check, ExportCheck) and check.format == "onnx" and check.dynamic_batch
    assert check.batch_sizes == (2, 3) and check.max_abs_diff <= 1e-4 and check.max_rel_diff is not None
    assert "TorchScript-based" in check.exporter and check.size_bytes == (tmp_path / "model.onnx").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary file left

    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    for value in (*graph.input, *graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (1, 5):  # independently of the built-in check
        xb = _inputs_like(x, batch)
        np.testing.assert_allclose(_ort_run(tmp_path / "model.onnx", xb), _eager(model, xb).numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_onnx_of_unpruned_attention_avoids_the_fused_fast_path(tmp_path):
    model = neuroprune.build_model("transformer").eval()  # eval + no_grad would pick the fused MHA kernel
    x = torch.randn(2, 8, 8)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    check = export_onnx(model, x, tmp_path / "t.onnx", opset=17)
    assert check.details["opset"] == 17 and check.batch_sizes == (2, 3)
    assert torch.backends.mha.get_fastpath_enabled() == fastpath and not model.training


def test_export_restores_training_mode(tmp_path):
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2)).train()
    check = export_onnx(model, torch.randn(4, 4), tmp_path / "m.onnx")  # exported (and compared) in eval mode
    assert check.batch_sizes == (4, 5) and model.training and all(m.training for m in model.modules())


def test_static_batch_checks_only_the_example_batch(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3))
    check = export_onnx(model, torch.randn(2, 4), tmp_path / "m.onnx", dynamic_batch=False, check=True)
    assert not check.dynamic_batch and check.batch_sizes == (2,)
    assert onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    unchecked = export_onnx(model, torch.randn(2, 4), tmp_path / "m.onnx", check=False)
    assert not unchecked.checked and unchecked.max_abs_diff is None and "not checked" in unchecked.summary()


def test_dynamo_onnx_exporter_and_auto_fallback(tmp_path):
    pytest.importorskip("onnxscript")
    check = export_onnx(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), torch.randn(2, 4), tmp_path / "m.onnx",
                        exporter="dynamo")
    assert "torch.export-based" in check.exporter and check.batch_sizes == (2, 3)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [v.type.tensor_type.shape.dim[0].dim_param for v in (*graph.input, *graph.output)] == ["batch", "batch"]
    model = nn.Sequential()
    model.add_module("odd", Odd())
    with pytest.raises(ExportError, match=r"TorchScript-based .*special_zeta.*; torch.export-based"):
        export_onnx(model, torch.rand(2, 3) + 2, tmp_path / "odd.onnx", exporter="auto")
    with pytest.raises(UnknownNameError, match="unknown ONNX exporter 'tf2onnx'"):
        export_onnx(model, torch.rand(2, 3), tmp_path / "odd.onnx", exporter="tf2onnx")


# --------------------------------------------------------------------------- TorchScript and torch.export


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:DeprecationWarning")
@pytest.mark.parametrize("name", list(MODELS))
def test_torchscript_and_program_of_pruned_model(pruned, name, tmp_path):
    model, (x,) = pruned.load(name)
    xb = _inputs_like(x, 5)

    script = export_torchscript(model, x, tmp_path / "model.pt")
    assert script.format == "torchscript" and script.batch_sizes == (2, 3) and script.max_abs_diff <= 1e-5
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(xb), _eager(model, xb), rtol=1e-4, atol=1e-5)

    program = export_program(model, x, tmp_path / "model.pt2")
    assert program.format == "program" and program.dynamic_batch and program.batch_sizes == (2, 3)
    module = torch.export.load(str(tmp_path / "model.pt2")).module()
    with torch.no_grad():
        torch.testing.assert_close(module(xb), _eager(model, xb), rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt2"]


class BakesBatch(nn.Module):
    """Reads the batch size as a Python int: traces and programs specialise it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(x.reshape(int(x.shape[0]), 12))


class DataDependent(nn.Module):
    def forward(self, x):
        # control flow on a value: torch.export cannot capture it
        if x.sum() > 0:
            return x * 2
        return x - 1


class Odd(nn.Module):
    def forward(self, x):
        return torch.special.zeta(x, x)  # no ONNX translation


def test_trace_that_bakes_in_the_batch_is_caught_and_nothing_is_written(tmp_path):
    x = torch.randn(2, 3, 4)
    with pytest.raises(ExportError, match=r"onnx check failed: .*batch size 3"):
        export_onnx(BakesBatch(), x, tmp_path / "m.onnx")
    with pytest.raises(ExportError, match=r"torchscript check failed: .*batch size 3"):
        export_torchscript(BakesBatch(), x, tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one
    program = export_program(BakesBatch(), x, tmp_path / "m.pt2")  # torch.export falls back to a fixed batch
    assert not program.dynamic_batch and program.batch_sizes == (2,)


def test_unsupported_model_gives_a_clear_error(tmp_path, capfd):
    located = r"in module <top level> \(DataDependent\) at .*test_export.py:\d+ \(`if x.sum\(\) > 0:`\): .*dependent"
    with pytest.raises(ExportError, match=r"torch.export of DataDependent failed " + located):
        export_program(DataDependent(), torch.randn(2, 3), tmp_path / "m.pt2")
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(3, 3))
    model.add_module("odd", Odd())
    with pytest.raises(ExportError, match=r"operator aten::special_zeta used by odd \(Odd\).*not supported"):
        export_onnx(model, torch.rand(2, 3) + 2, tmp_path / "m.onnx")
    assert "Torch IR graph" not in capfd.readouterr().err  # the exporter's C++ graph dump is silenced
    with pytest.raises(ExportError, match=r"does not run on example inputs of shape \(2, 5\) in module <top level> "
                                          r"\(Linear\): RuntimeError: mat1 and mat2"):
        export_onnx(nn.Linear(3, 3), torch.randn(2, 5), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_model_dispatch_and_input_shapes(tmp_path):
    with pytest.raises(UnknownNameError, match=r"unknown export format 'tflite'; known: onnx, program, torchscript"):
        export_model("tflite", nn.Linear(3, 2), torch.randn(2, 3), tmp_path / "m")
    with pytest.raises(ConfigError, match="opset applies to ONNX export only"):
        export_model("torchscript", nn.Linear(3, 2), torch.randn(2, 3), tmp_path / "m.pt", opset=17)
    assert parse_input_shape("1,64") == (1, 64) and parse_input_shape("2x1x8x8") == (2, 1, 8, 8)
    for bad in ("64", "a,b", "0,3"):
        with pytest.raises(ConfigError, match="input shape"):
            parse_input_shape(bad)


# --------------------------------------------------------------------------- folders and the CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuroprune")
    export_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def _cli(*argv: str) -> int:
    args = _parser().parse_args(["export", *map(str, argv)])
    return args.run(args)


def test_cli_exports_a_saved_folder_as_onnx(pruned, tmp_path, capsys):
    folder = pruned.folder("transformer")
    assert _cli(tmp_path / "out", "--from", folder, "--model", "zoo:transformer") == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "model.onnx" in printed and 'dynamic batch axis "batch"' in printed
    assert "onnxruntime (CPUExecutionProvider) at batch sizes 2, 3" in printed
    assert "max abs diff" in printed and "KiB" in printed
    model, (x,) = load_folder_for_export(folder, "zoo:transformer")
    xb = _inputs_like(x, 4)
    np.testing.assert_allclose(_ort_run(tmp_path / "out" / "model.onnx", xb), _eager(model, xb).numpy(),
                               rtol=1e-4, atol=1e-5)

    with pytest.raises(OutputExistsError, match=r"model.onnx' already exists; .*--overwrite"):
        _cli(tmp_path / "out", "--from", folder, "--model", "zoo:transformer")
    assert _cli(tmp_path / "out", "--from", folder, "--model", "zoo:transformer", "--overwrite", "--opset", "18") == 0
    assert onnx.load(str(tmp_path / "out" / "model.onnx")).opset_import[0].version == 18


@pytest.mark.parametrize("fmt, file_name", [("torchscript", "model.pt"), ("program", "model.pt2")])
def test_cli_file_model_with_input_shape(pruned, tmp_path, capsys, fmt, file_name):
    folder = pruned.folder("tiny_resnet")
    spec = pruned.spec("tiny_resnet")
    assert _cli(tmp_path / "out", "--from", folder, "--model", spec, "--format", fmt, "--input-shape", "1,1,8,8") == 0
    assert (tmp_path / "out" / file_name).is_file()
    assert "batch sizes 2, 3" in capsys.readouterr().out  # a batch of 1 is raised to 2 to check the dynamic axis


def test_load_folder_for_export_inputs(pruned):
    model, (x,) = pruned.load("lenet5")
    assert tuple(x.shape) == (2, 1, 32, 32) and not model.training
    model, (x,) = load_folder_for_export(pruned.folder("mlp"), "zoo:mlp", input_shape="1,64")
    assert tuple(x.shape) == (2, 64)
    _, (x,) = load_folder_for_export(pruned.folder("mlp"), "zoo:mlp", input_shape="1,64", min_batch=1)
    assert tuple(x.shape) == (1, 64)


def test_cli_errors(pruned, tmp_path):
    folder = pruned.folder("mlp")
    args = argparse.Namespace(out_dir=str(tmp_path / "out"), folder=str(folder), model="zoo:mlp", format="tflite")
    with pytest.raises(UnknownNameError, match="unknown export format 'tflite'"):
        export_cli.run(args)
    with pytest.raises(SystemExit):  # argparse refuses it too
        _cli(tmp_path / "out", "--from", folder, "--model", "zoo:mlp", "--format", "tflite")
    with pytest.raises(CheckpointError, match=r"folder '.*missing' does not exist"):
        _cli(tmp_path / "out", "--from", tmp_path / "missing", "--model", "zoo:mlp")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a neuroprune folder"):
        _cli(tmp_path / "out", "--from", tmp_path / "empty", "--model", "zoo:mlp")
    with pytest.raises(ExportError, match=r"does not run on example inputs of shape \(2, 32\) in module fc1 "):
        _cli(tmp_path / "out", "--from", folder, "--model", "zoo:mlp", "--input-shape", "2,32")
    with pytest.raises(ConfigError, match="--opset applies to ONNX export only"):
        export_folder(tmp_path / "out", folder, "zoo:mlp", "program", opset=17)
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_main_reports_export_errors_on_one_line(pruned, tmp_path, capsys):
    from neuroprune.cli.main import build_parser, main
    if "export" not in build_parser()._subparsers._group_actions[0].choices:
        pytest.skip("neuroprune export is not registered in neuroprune.cli.main yet")
    folder = pruned.folder("mlp")
    assert main(["export", str(tmp_path / "out"), "--from", str(folder), "--model", "zoo:mlp"]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "out"), "--from", str(folder), "--model", "zoo:mlp"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("neuroprune: error: output file") and error.count("\n") == 1
