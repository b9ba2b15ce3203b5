"""A residual CNN on digit images: channels tied by residual adds, global ranking, widths rounded.

The residual adds tie the stem's channels to the output of every block that adds to them:
discovery puts them in one group, so they are removed together and the additions stay valid.
``scope="global"`` ranks the normalised scores of all layers together (layers that matter less
lose more), ``round_to`` keeps every width a multiple of a number that suits fast kernels.

    python examples/cnn_residual.py                      # a small residual CNN, seconds
    python examples/cnn_residual.py --zoo resnet56       # the CIFAR ResNet-56 (minutes on 2 cores)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn

import neuroprune as npr
from neuroprune.data import load_digits
from neuroprune.torch.recover.finetune import finetune


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out))


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv1, self.conv2 = conv_bn(channels, hidden), conv_bn(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class ResidualCNN(nn.Module):
    """stem (16) -> 2 blocks -> downsampling conv (32) -> 2 blocks -> pool -> Linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(1, 16)
        self.stage1 = nn.Sequential(Block(16, 32), Block(16, 32))
        self.down = conv_bn(16, 32, stride=2)
        self.stage2 = nn.Sequential(Block(32, 64), Block(32, 64))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(torch.relu(self.stem(x)))
        x = self.stage2(torch.relu(self.down(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", choices=["resnet56", "resnet18"], help="use a zoo ResNet instead of the small CNN")
    parser.add_argument("--image-size", type=int, default=16, help="digits are resized to this side")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs before pruning")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of all prunable channels to remove")
    parser.add_argument("--round-to", type=int, default=4, help="keep widths at multiples of this")
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest validation drop a step may cause")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--out", default="residual-out")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    data = load_digits(seed=args.seed, layout="image", image_size=args.image_size)
    task = npr.ClassificationTask(data, calibration_samples=256, seed=args.seed)
    build = (lambda: npr.build_model(args.zoo)) if args.zoo else ResidualCNN
    model = build()
    finetune(model, task, epochs=args.epochs, progress=False)

    graph = npr.discover(model, task.example_input())
    print("neuron groups (channels that must be removed together):")
    for group in graph.groups:
        members = sorted({member.path for member in group.members})
        print(f"  {group.name:18s} {group.size:3d} units, touches {len(members)} modules: {', '.join(members[:6])}"
              + (" ..." if len(members) > 6 else ""))
    print(f"fixed: {graph.frozen}")

    config = npr.PruneConfig(criterion="taylor", ratio=args.ratio, scope="global", round_to=args.round_to,
                             steps=2, tolerance=args.tolerance, finetune_epochs=args.finetune_epochs, progress=False,
                             latency_runs=3)
    result = npr.prune(model, task, config)
    for layer in result.report["layers"]:
        print(f"  {layer['name']:18s} {layer['width_before']:3d} -> {layer['width_after']}")
    before, after = result.report["before"], result.report["after"]
    print(f"FLOPs {before['flops']:,} -> {after['flops']:,}; test accuracy {before['accuracy']:.4f} -> "
          f"{after['accuracy']:.4f}")
    result.save(args.out, overwrite=args.overwrite)
    reloaded = npr.load(args.out, build).eval()
    x = data.x_test[:16]
    with torch.no_grad():
        same = torch.equal(reloaded(x), result.model.eval()(x))
    print(f"saved to {args.out}/; reloaded outputs identical: {same}")
    return {"out": Path(args.out), "result": result, "groups": [g.name for g in graph.groups], "reloaded_equal": same}


if __name__ == "__main__":
    main()
