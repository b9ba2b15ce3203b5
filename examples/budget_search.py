"""Hit a FLOPs budget with per-layer ratios from a sensitivity analysis, and compare with one uniform ratio.

1. ``analyse_sensitivity``: for every layer alone, the validation accuracy with 20/40/60/80 % of
   its lowest-scored neurons masked (cheap: masks, no surgery, no training).
2. ``search_budget(..., Budget(flops=0.5))``: the per-layer ratios that lose the least accuracy
   per FLOP saved, scaled until the *measured* FLOPs of the pruned model meet the target.
3. Prune with those ratios (``found.config(config)`` adds one layer policy per layer), and with a
   single uniform ratio that reaches the same FLOPs; fine-tune both alike and compare.

    python examples/budget_search.py --epochs 10 --finetune-epochs 3
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

import neuroprune as npr
from neuroprune.analysis.budget import Budget, search_budget
from neuroprune.data import load_digits
from neuroprune.torch.recover.finetune import finetune
from neuroprune.torch.metrics import count_flops
from neuroprune.analysis.sensitivity import analyse_sensitivity, format_sensitivity


def flops_fraction(dense, pruned, x) -> float:
    return count_flops(pruned, x) / count_flops(dense, x)


def uniform_ratio_for(model, task, target: float, config: npr.PruneConfig, iterations: int = 10) -> float:
    """Bisect one ratio for every layer until the pruned model's FLOPs are closest to ``target``."""
    x = task.make_input(1)
    low, high, best = 0.0, 0.95, (0.0, 1.0)
    for _ in range(iterations):
        ratio = (low + high) / 2
        value = flops_fraction(model, npr.prune(model, task, replace(config, ratio=ratio)).model, x)
        if abs(value - target) < abs(best[1] - target):
            best = (ratio, value)
        low, high = (ratio, high) if value > target else (low, ratio)
    return best[0]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet5", help="zoo model (image layout)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10, help="training epochs before pruning")
    parser.add_argument("--flops", type=float, default=0.5, help="FLOPs target as a fraction of the original")
    parser.add_argument("--finetune-epochs", type=int, default=3, help="fine-tuning after pruning, both variants")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    data = load_digits(seed=args.seed, layout="image", image_size=args.image_size)
    task = npr.ClassificationTask(data, calibration_samples=256, seed=args.seed)
    model = npr.build_model(args.model)
    finetune(model, task, epochs=args.epochs, progress=False)
    dense = task.evaluate(model, "test")

    # tolerance=1.0: no rollback, so both variants really reach the FLOPs they were given
    base = npr.PruneConfig(criterion="magnitude", tolerance=1.0, progress=False, latency_runs=1)
    sensitivity = analyse_sensitivity(model, task, base, ratios=(0.2, 0.4, 0.6, 0.8), progress=False)
    print(format_sensitivity(sensitivity))
    found = search_budget(model, task, base, Budget(flops=args.flops), sensitivity=sensitivity, progress=False)
    print("searched per-layer ratios:", {name: round(r, 2) for name, r in found.ratios.items()},
          f"(measured FLOPs {found.achieved['flops']:.3f})")

    x = task.make_input(1)
    searched = npr.prune(model, task, found.config(replace(base, finetune_epochs=args.finetune_epochs)))
    searched_flops = flops_fraction(model, searched.model, x)
    ratio = uniform_ratio_for(model, task, searched_flops, base)
    uniform = npr.prune(model, task, replace(base, ratio=ratio, finetune_epochs=args.finetune_epochs))
    uniform_flops = flops_fraction(model, uniform.model, x)
    rows = [("dense", 1.0, dense), ("searched", searched_flops, searched.report["after"]["accuracy"]),
            (f"uniform {ratio:.2f}", uniform_flops, uniform.report["after"]["accuracy"])]
    print(f"{'model':14s} {'FLOPs':>6s} {'test acc':>8s}")
    for name, flops, accuracy in rows:
        print(f"{name:14s} {flops:6.3f} {accuracy:8.4f}")
    return {"ratios": found.ratios, "searched_flops": searched_flops, "uniform_flops": uniform_flops,
            "uniform_ratio": ratio, "rows": rows, "sensitivity": sensitivity}


if __name__ == "__main__":
    main()
