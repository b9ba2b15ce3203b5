"""Gradual pruning inside your own training loop (AGP schedule, Zhu & Gupta 2017).

``GradualPruner`` masks a growing fraction of every layer's neurons between two training steps
(cubic schedule: fast at first, slowly at the end) and keeps the masked weights at zero after
every optimizer step; ``finalize()`` removes the masked neurons for real and returns the smaller
model with its plan. Nothing else changes in the loop: one call after ``optimizer.step()``.

    python examples/gradual_training.py --epochs 30 --ratio 0.75
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F

import neuroprune as npr
from neuroprune.data import iterate_batches, load_digits
from neuroprune.analysis.gradual import GradualPruner


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--ratio", type=float, default=0.75, help="final fraction of every layer's neurons removed")
    parser.add_argument("--schedule", choices=["agp", "linear"], default="agp")
    parser.add_argument("--out", default="gradual-out")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    data = load_digits(seed=args.seed)
    model = npr.build_model("mlp")  # 64-128-64-10, trained from scratch here
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    per_epoch = math.ceil(len(data.x_train) / 64)
    # masks grow from 10 % to 70 % of the training steps, updated four times per epoch
    start, end = max(0, args.epochs // 10) * per_epoch, max(1, int(args.epochs * 0.7)) * per_epoch
    pruner = GradualPruner(model, data.x_train[:2], ratio=args.ratio, start=start, end=max(end, start + 1),
                           frequency=max(1, per_epoch // 4), schedule=args.schedule)
    generator = torch.Generator().manual_seed(args.seed)
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for x, y in iterate_batches(data.x_train, data.y_train, 64, shuffle=True, generator=generator):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            pruner.step(step)  # after optimizer.step(): grow the masks on schedule, keep masked weights at 0
            step += 1
        print(f"epoch {epoch + 1:3d}: {pruner.fraction:5.1%} masked, val accuracy "
              f"{accuracy(model, data.x_val, data.y_val):.4f}")

    small, plan = pruner.finalize()  # physically smaller model + the plan that replays it
    masked_accuracy = accuracy(model, data.x_test, data.y_test)
    small_accuracy = accuracy(small, data.x_test, data.y_test)
    widths = {g.name: g.size - len(pruner.masked[g.name]) for g in pruner.graph.groups}
    print(f"widths {widths}; test accuracy {small_accuracy:.4f} (masked model: {masked_accuracy:.4f})")

    npr.save(args.out, small, plan, {"test_accuracy": small_accuracy, "widths": widths}, overwrite=args.overwrite)
    reloaded = npr.load(args.out, lambda: npr.build_model("mlp")).eval()
    with torch.no_grad():
        same = torch.equal(reloaded(data.x_test), small.eval()(data.x_test))
    print(f"saved to {args.out}/; reloaded outputs identical: {same}")
    return {"out": Path(args.out), "model": small, "plan": plan, "widths": widths, "fraction": pruner.fraction,
            "accuracy": small_accuracy, "masked_accuracy": masked_accuracy, "reloaded_equal": same}


if __name__ == "__main__":
    main()
