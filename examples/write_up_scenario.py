"""The write-up's scenario (section 5), done for real: train, prune with its formula, fine-tune, report.

The write-up trains a 784-128-64-10 ReLU network with Adam for 5 epochs (batch 64, 20 % of the
training data held out for validation) on MNIST, then prunes it with its importance score
``s = sum_i |w_i| g_i f_i / sum_i |w_i|`` (neuroprune's ``seed`` criterion). Its code only zeroes
weights; here the neurons are removed, every step is validated (and rolled back if the validation
accuracy drops by more than ``--tolerance``), the model is fine-tuned, and the result is saved as
a folder that reloads without pickle.

Bring your own MNIST: an ``.npz`` with ``x_train, y_train, x_test, y_test`` (Keras' ``mnist.npz``
has exactly these arrays; images of 28x28 are flattened to 784 features). The arrays are used as
stored, pixels 0..255; the write-up's preprocessing (divide by 255) is the network's first
operation, like a Keras ``Rescaling(1/255)`` layer, so the command line feeds the trained network
exactly what it was trained on. Without internet, make an MNIST-shaped file from scikit-learn's
bundled 8x8 digits, upscaled to 28x28::

    python examples/write_up_scenario.py --make-demo-npz mnist.npz
    python examples/write_up_scenario.py --data mnist.npz --out write-up-out
    python examples/write_up_scenario.py --data mnist.npz --reconstruct --overwrite   # + least-squares re-fit

The network is also a model file for the command line (``build`` takes no arguments)::

    neuroprune prune --model examples/write_up_scenario.py:build --data npz:mnist.npz --train-epochs 5 \\
        --criterion seed --ratio 0.5 --steps 2 --finetune-epochs 2 --out small-net
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F

import neuroprune as npr
from neuroprune.data import load_npz
from neuroprune.torch.recover.finetune import finetune
from neuroprune.report.table import format_report


PIXEL_SCALE = 255.0
"""MNIST pixels are bytes; the write-up divides them by 255."""


class WriteUpNet(nn.Module):
    """x / 255 -> Dense(128, relu) -> Dense(64, relu) -> Dense(10): the write-up's Keras model in PyTorch.

    The write-up scales the pixels to [0, 1] before the network; here that scaling is the first
    operation of the forward, so the model takes pixels as stored (0..255). The write-up ends with
    a softmax and categorical cross-entropy; here the network returns logits and the task applies
    cross-entropy, which is the same thing computed stably.
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1) / PIXEL_SCALE  # the write-up's preprocessing: pixels to [0, 1]
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def build() -> nn.Module:
    """The 784-128-64-10 network (for ``neuroprune prune --model examples/write_up_scenario.py:build``)."""
    return WriteUpNet()


def make_demo_npz(path: str | Path, seed: int = 0) -> Path:
    """Write an MNIST-shaped ``.npz`` made offline from scikit-learn's digits.

    The 1797 8x8 digits are upscaled bilinearly to 28x28, scaled to 0..255 and stored as uint8
    ``(N, 28, 28)`` images with uint8 labels, split 80/20 (stratified) into ``x_train, y_train,
    x_test, y_test``, the layout of Keras' ``mnist.npz``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    big = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).squeeze(1)
    x = (big.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    y = digits.target.astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="NPZ", help="your .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--make-demo-npz", metavar="PATH",
                        help="write an MNIST-shaped .npz from scikit-learn's digits (used as --data if none is given)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of the dense network (write-up: 5)")
    parser.add_argument("--samples", type=int, help="use only this many training samples (quick runs)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--criterion", default="seed", help="importance criterion (write-up: its formula, 'seed')")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of hidden neurons to remove")
    parser.add_argument("--steps", type=int, default=4, help="validated pruning steps")
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest validation drop a step may cause")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="fine-tuning epochs after every accepted step")
    parser.add_argument("--reconstruct", action="store_true",
                        help="also re-fit the layers that read pruned neurons by least squares (not in the write-up)")
    parser.add_argument("--dense-weights", metavar="PATH", help="also save the trained dense weights (.safetensors)")
    parser.add_argument("--out", default="write-up-out", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.data is None and args.make_demo_npz is None:
        parser.error("give --data YOUR.npz, or --make-demo-npz PATH to create an MNIST-shaped one offline")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the scenario; returns what a caller may check (paths, accuracies, the result)."""
    args = parse_args(argv)
    start = time.perf_counter()
    if args.make_demo_npz:
        make_demo_npz(args.make_demo_npz, seed=args.seed)
        print(f"wrote {args.make_demo_npz} (MNIST-shaped: 28x28 uint8 images from scikit-learn's digits)")
    data_path = args.data or args.make_demo_npz

    # validation_split=0.2 as in the write-up: the validation split drives the rollback decisions;
    # the pixels are used as stored (0..255), exactly what `neuroprune prune --data npz:...` feeds the model
    splits = load_npz(data_path, layout="flat", val_fraction=0.2, seed=args.seed)
    if args.samples:
        splits = dataclasses.replace(splits, x_train=splits.x_train[:args.samples], y_train=splits.y_train[:args.samples])
    print(f"{data_path}: {len(splits.x_train)} training, {len(splits.x_val)} validation, {len(splits.x_test)} test "
          f"samples of {splits.input_shape[0]} features, {splits.num_classes} classes")

    torch.manual_seed(args.seed)
    task = npr.ClassificationTask(splits, batch_size=args.batch_size, seed=args.seed)
    make_model = functools.partial(WriteUpNet, splits.input_shape[0], splits.num_classes)
    model = make_model()
    finetune(model, task, epochs=args.epochs, learning_rate=1e-3, progress=not args.quiet, desc="training (Adam)")
    dense_accuracy = task.evaluate(model, "test")
    print(f"dense {splits.input_shape[0]}-128-64-{splits.num_classes} network after {args.epochs} epochs: "
          f"test accuracy {dense_accuracy:.4f}")
    if args.dense_weights:
        Path(args.dense_weights).parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_model(model, args.dense_weights)
        print(f"saved the dense weights to {args.dense_weights}")

    config = npr.PruneConfig(criterion=args.criterion, ratio=args.ratio, steps=args.steps, tolerance=args.tolerance,
                             finetune_epochs=args.finetune_epochs, reconstruct=args.reconstruct, seed=args.seed,
                             progress=not args.quiet)
    result = npr.prune(model, task, config)
    print(format_report(result.report))
    before = sum(layer["width_before"] for layer in result.report["layers"])
    after = sum(layer["width_after"] for layer in result.report["layers"])
    print(f"removed {before - after} of {before} hidden neurons (target {args.ratio:.0%})")
    if (before - after) < int(args.ratio * before):
        print("  steps whose validation drop exceeded --tolerance were rolled back and retried smaller; "
              "to get closer to the target try --reconstruct, more --steps or a larger --tolerance")

    result.save(args.out, overwrite=args.overwrite)
    reloaded = npr.load(args.out, make_model).eval()
    x = splits.x_test[:64]
    with torch.no_grad():
        same = torch.equal(reloaded(x), result.model.eval()(x))
    print(f"saved to {args.out}/ and reloaded: outputs identical: {same} ({time.perf_counter() - start:.1f} s)")
    return {"out": Path(args.out), "data": Path(data_path), "dense_accuracy": dense_accuracy,
            "pruned_accuracy": result.report["after"]["accuracy"], "reloaded_equal": same, "result": result}


if __name__ == "__main__":
    main()
