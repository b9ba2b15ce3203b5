"""Prune your own ``nn.Module`` on your own tensors, save it, reload it, check the outputs.

Nothing here is specific to neuroprune's built-in models or data: the network is a class written
in this file and trained with a plain PyTorch loop, the data are tensors (a synthetic
classification problem from scikit-learn, standing in for yours) wrapped in ``DataSplits``.
neuroprune needs three splits: ``train`` (scoring statistics and fine-tuning), ``val`` (the
rollback decisions) and ``test`` (reported only).

    python examples/prune_your_model.py --epochs 20 --out my-pruned-net
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import make_classification

import neuroprune as npr
from neuroprune.data import DataSplits


class MyClassifier(nn.Module):
    """A network of your own: Linear + BatchNorm + ReLU + Dropout blocks and a head."""

    def __init__(self, n_features: int, n_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(n_features, 96), nn.BatchNorm1d(96), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(96, 48), nn.ReLU(),
        )
        self.head = nn.Linear(48, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_tensors(samples: int, features: int = 20, classes: int = 4, seed: int = 0) -> DataSplits:
    """Your data as tensors: float32 inputs, int64 labels, split 70/15/15."""
    x, y = make_classification(n_samples=samples, n_features=features, n_informative=10, n_classes=classes,
                               random_state=seed)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
    a, b = int(0.7 * samples), int(0.85 * samples)
    return DataSplits(name="my-data", x_train=x[:a], y_train=y[:a], x_val=x[a:b], y_val=y[a:b],
                      x_test=x[b:], y_test=y[b:], num_classes=classes)


def train(model: nn.Module, data: DataSplits, epochs: int, seed: int = 0) -> None:
    """Your own training loop (nothing from neuroprune)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data.x_train), generator=generator)
        for start in range(0, len(order), 64):
            index = order[start:start + 64]
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=3000, help="size of the synthetic data set")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs before pruning")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--out", default="my-pruned-net")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    data = make_tensors(args.samples, seed=args.seed)
    n_features = data.input_shape[0]
    model = MyClassifier(n_features, data.num_classes)
    train(model, data, args.epochs, seed=args.seed)

    task = npr.ClassificationTask(data, batch_size=64, seed=args.seed)
    print(f"dense: test accuracy {task.evaluate(model, 'test'):.4f}")
    config = npr.PruneConfig(criterion="taylor", ratio=args.ratio, steps=2, tolerance=0.03, reconstruct=True,
                             finetune_epochs=1, progress=False, latency_runs=5)
    result = npr.prune(model, task, config)  # `model` itself is not modified
    for layer in result.report["layers"]:
        print(f"  {layer['name']:8s} {layer['width_before']:4d} -> {layer['width_after']}")
    before, after = result.report["before"], result.report["after"]
    print(f"parameters {before['params']} -> {after['params']}, test accuracy "
          f"{before['accuracy']:.4f} -> {after['accuracy']:.4f}")

    result.save(args.out, overwrite=args.overwrite)
    # reload: build the ORIGINAL architecture; the saved plan shrinks it, then the weights load
    reloaded = npr.load(args.out, lambda: MyClassifier(n_features, data.num_classes)).eval()
    with torch.no_grad():
        same = torch.equal(reloaded(data.x_test), result.model.eval()(data.x_test))
    print(f"saved to {args.out}/; reloaded model gives identical outputs: {same}")
    return {"out": Path(args.out), "result": result, "reloaded": reloaded, "reloaded_equal": same,
            "dense_params": before["params"], "pruned_params": after["params"]}


if __name__ == "__main__":
    main()
