"""Prune, save, export to ONNX, and run the file with onnxruntime.

``export_onnx`` writes the file atomically with a dynamic batch axis and checks it against the
PyTorch outputs at two batch sizes before returning; here the file is then used the way a
deployment would, with a plain ``onnxruntime.InferenceSession`` on the whole test set.
Needs the ``export`` extra (``pip install 'neuroprune[export]'``: onnx, onnxruntime).

    python examples/export_onnx.py --model lenet5 --epochs 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import neuroprune as npr
from neuroprune.data import load_data
from neuroprune.torch.export import export_onnx
from neuroprune.torch.recover.finetune import finetune
from neuroprune.models.zoo import zoo_entry


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp", help="zoo model: mlp, lenet5, transformer, ...")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--out", default="onnx-out", help="pruned folder; model.onnx is written into it")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import onnxruntime  # the export extra

    torch.manual_seed(args.seed)
    entry = zoo_entry(args.model)
    data = load_data("digits", layout=entry.layout, seed=args.seed, image_size=entry.image_size)
    task = npr.ClassificationTask(data, seed=args.seed)
    model = npr.build_model(args.model)
    finetune(model, task, epochs=args.epochs, progress=False)
    config = npr.PruneConfig(criterion="magnitude", ratio=args.ratio, tolerance=0.05, reconstruct=True,
                             progress=False, latency_runs=3)
    result = npr.prune(model, task, config)
    result.save(args.out, overwrite=args.overwrite)

    check = export_onnx(result.model, data.x_test[:2], Path(args.out) / "model.onnx")
    print(check.summary())

    session = onnxruntime.InferenceSession(str(check.path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": data.x_test.numpy()})[0]  # any batch size: the axis is dynamic
    onnx_accuracy = float((logits.argmax(axis=1) == data.y_test.numpy()).mean())
    with torch.no_grad():
        torch_logits = result.model.eval()(data.x_test).numpy()
    max_diff = float(np.abs(logits - torch_logits).max())
    print(f"onnxruntime on {len(logits)} test samples: accuracy {onnx_accuracy:.4f} "
          f"(PyTorch {result.report['after']['accuracy']:.4f}), max |difference| {max_diff:.2e}")
    return {"out": Path(args.out), "onnx": check.path, "check": check, "onnx_accuracy": onnx_accuracy,
            "torch_accuracy": result.report["after"]["accuracy"], "max_diff": max_diff}


if __name__ == "__main__":
    main()
