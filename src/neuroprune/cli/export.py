"""``neuroprune export``: write a pruned folder as ONNX, TorchScript or a ``torch.export`` program; a Keras folder
with Keras's own exporters (:mod:`neuroprune.keras.export`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neuroprune.torch import distributed
from neuroprune.torch.export import FORMATS, export_folder
from neuroprune.cli.outputs import check_output_folder, input_paths
from neuroprune.core.errors import ConfigError

EXAMPLES = """\
examples:
  # ONNX with a dynamic batch axis, checked against PyTorch with onnxruntime
  neuroprune export exported --from pruned-mlp --model zoo:mlp

  # a model of your own: give the input shape (batch first)
  neuroprune export exported --from small-net --model my_net.py:build --input-shape 1,3,32,32 --opset 17

  # TorchScript (model.pt) or a torch.export program (model.pt2)
  neuroprune export exported --from pruned-lenet --model zoo:lenet5 --format program --overwrite

  # a Keras folder (written by --model keras:PATH.keras): no --model needed; Keras's exporters
  KERAS_BACKEND=torch neuroprune export exported --from pruned-keras --format onnx
"""

KERAS_FORMATS = ("keras", "litert", "onnx", "openvino", "safetensors", "tf_saved_model", "torch")
"""Formats for Keras folders (:data:`neuroprune.keras.export.FORMATS`; listed here so --help imports no Keras)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a pruned folder to ONNX / TorchScript / torch.export (Keras folders: Keras's formats)",
        description="Rebuild a saved pruned model, export it with a dynamic batch axis and check the file against "
                    "the PyTorch outputs at two batch sizes. A Keras folder is exported from its model.keras with "
                    "keras.Model.export (onnx and torch on the torch backend; tf_saved_model, litert and openvino "
                    "need TensorFlow / litert-torch / openvino) or copied (keras, safetensors), and checked where a "
                    "runtime is installed.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write model.onnx / model.pt / model.pt2 into")
    parser.add_argument("--from", dest="folder", required=True, metavar="FOLDER",
                        help="the pruned folder (model.safetensors, plan.json) written by neuroprune prune")
    parser.add_argument("--model",
                        help="the ORIGINAL model the folder was pruned from: zoo:NAME or path/to/file.py:build_fn "
                             "(torch folders; a Keras folder needs none)")
    parser.add_argument("--format", default="onnx", choices=sorted(set(FORMATS) | set(KERAS_FORMATS)),
                        help="onnx -> model.onnx (default), torchscript -> model.pt, program -> model.pt2; Keras "
                             "folders: onnx, torch (model.pt2), tf_saved_model, litert, openvino, keras, safetensors")
    parser.add_argument("--input-shape", metavar="SHAPE",
                        help="example input shape, batch first, e.g. 1,64 (default: samples of --data in the model's "
                             "layout); a batch of 1 is raised to 2 unless --static-batch")
    parser.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch size instead of a dynamic axis")
    parser.add_argument("--no-check", action="store_true", help="do not compare the file's outputs with PyTorch's")
    parser.add_argument("--rtol", type=float, default=1e-4, help="allowed relative difference (default 1e-4)")
    parser.add_argument("--atol", type=float, default=1e-5, help="allowed absolute difference (default 1e-5)")
    parser.add_argument("--data", default="digits", help="data the model was pruned on: digits | npz:PATH (sizes zoo "
                                                         "models and gives example inputs)")
    parser.add_argument("--layout", choices=["flat", "image", "sequence"], help="how samples are shaped for the model")
    parser.add_argument("--image-size", type=int, help="side length images are resized to (image layout)")
    parser.add_argument("--standardize", action="store_true",
                        help="npz data: standardise the example inputs as the pruning run did (--standardize there)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=run)


def _run_keras(args: argparse.Namespace) -> int:
    from neuroprune.keras.export import export_keras_folder

    check = export_keras_folder(args.out_dir, args.folder, getattr(args, "format", "onnx"),
                                overwrite=getattr(args, "overwrite", False), check=not getattr(args, "no_check", False),
                                rtol=getattr(args, "rtol", 1e-4), atol=getattr(args, "atol", 1e-5))
    print(check.summary())
    return 0


def _is_keras_folder(folder: str) -> bool:
    plan = Path(folder) / "plan.json"
    try:
        return plan.is_file() and json.loads(plan.read_text()).get("adapter") == "keras"
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    check_output_folder(args.out_dir, "OUT_DIR", inputs=input_paths(args), may_exist=True)
    if _is_keras_folder(args.folder):
        return _run_keras(args)
    if not getattr(args, "model", None):
        raise ConfigError(["--model is required to export a torch folder: the ORIGINAL model, zoo:NAME or "
                           "path/to/file.py:build_fn"])
    if getattr(args, "format", "onnx") in set(KERAS_FORMATS) - set(FORMATS):  # unknown names: export_folder says
        raise ConfigError([f"format {args.format!r} is for Keras folders; torch folders: {', '.join(sorted(FORMATS))}"])
    # under torchrun rank 0 exports and prints, the others wait (a failure is raised on all)
    check = distributed.on_writer(
        export_folder, args.out_dir, args.folder, args.model, getattr(args, "format", "onnx"),
        input_shape=getattr(args, "input_shape", None), opset=getattr(args, "opset", None),
        overwrite=getattr(args, "overwrite", False), dynamic_batch=not getattr(args, "static_batch", False),
        check=not getattr(args, "no_check", False), rtol=getattr(args, "rtol", 1e-4), atol=getattr(args, "atol", 1e-5),
        data=getattr(args, "data", "digits"), layout=getattr(args, "layout", None),
        image_size=getattr(args, "image_size", None), seed=getattr(args, "seed", 0),
        standardize=getattr(args, "standardize", False))
    if check is not None:
        print(check.summary())
    return 0
