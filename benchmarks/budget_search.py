"""Budget search against uniform per-layer ratios at equal FLOPs, on zoo models and digits.

For each model and FLOPs target: (a) the searched non-uniform allocation, (b) one uniform ratio
for every layer, bisected until the pruned model has the same FLOPs. Both are pruned from the
same trained model with the same criterion and fine-tuned for the same number of epochs.

Run:  .venv/bin/python benchmarks/budget_search.py [--quick | --seeds N] [--all] [--out benchmarks/results/budget_search.md]

Default: lenet5 and resnet56 at 50 % FLOPs, 3 seeds (7 min on 2 cores); ``--quick``: 1 seed;
``--all``: also mobilenetv2 and a 30 % target.
"""

from __future__ import annotations

import argparse

import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from neuroprune import ClassificationTask, PruneConfig, prune
from neuroprune.analysis.budget import Budget, search_budget
from neuroprune.data import load_digits
from neuroprune.torch.recover.finetune import finetune
from neuroprune.torch.metrics import count_flops
from neuroprune.analysis.sensitivity import analyse_sensitivity
from neuroprune.models.zoo import build_model

MODELS = {"lenet5": 32, "resnet56": 16, "mobilenetv2": 16}  # name -> digits image size


def flops_fraction(model, pruned, x) -> float:
    return count_flops(pruned, x) / count_flops(model, x)


def uniform_ratio_for(model, task, target: float, config: PruneConfig) -> tuple[float, float]:
    """Bisect one ratio for all layers until the pruned model's FLOPs meet ``target``."""
    x = task.make_input(1)
    low, high, best = 0.0, 0.95, (0.0, 1.0)
    for _ in range(12):
        ratio = (low + high) / 2
        result = prune(model, task, replace(config, ratio=ratio, finetune_epochs=0))
        value = flops_fraction(model, result.model, x)
        if abs(value - target) < abs(best[1] - target):
            best = (ratio, value)
        low, high = (ratio, high) if value > target else (low, ratio)
    return best


def run_model(name: str, size: int, targets, epochs: int, finetune_epochs: int, seeds) -> list[dict]:
    rows = []
    for seed in seeds:
        torch.manual_seed(seed)
        data = load_digits(seed=0, layout="image", image_size=size)
        task = ClassificationTask(data, calibration_samples=256, seed=seed)
        model = build_model(name)
        finetune(model, task, epochs=epochs, progress=False)
        dense = task.evaluate(model, "test")
        base = PruneConfig(criterion="magnitude", tolerance=1.0, progress=False, latency_runs=1)
        sensitivity = analyse_sensitivity(model, task, base, ratios=(0.2, 0.4, 0.6, 0.8), progress=False)
        for target in targets:
            start = time.perf_counter()
            found = search_budget(model, task, base, Budget(flops=target), sensitivity=sensitivity, progress=False)
            search_seconds = time.perf_counter() - start
            searched = prune(model, task, found.config(replace(base, finetune_epochs=finetune_epochs)))
            ratio, _ = uniform_ratio_for(model, task, flops_fraction(model, searched.model, task.make_input(1)), base)
            uniform = prune(model, task, replace(base, ratio=ratio, finetune_epochs=finetune_epochs))
            x = task.make_input(1)
            rows.append({"model": name, "seed": seed, "target": target, "dense": dense,
                         "searched_acc": searched.report["after"]["accuracy"],
                         "searched_flops": flops_fraction(model, searched.model, x),
                         "uniform_acc": uniform.report["after"]["accuracy"],
                         "uniform_flops": flops_fraction(model, uniform.model, x), "uniform_ratio": ratio,
                         "search_seconds": search_seconds,
                         "ratios": {k: round(v, 2) for k, v in found.ratios.items()}})
    return rows


def summarise(rows: list[dict]) -> str:
    def ms(values):
        return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")

    lines = ["| model | FLOPs target | dense acc | searched acc | searched FLOPs | uniform acc | uniform FLOPs "
             "(ratio) | search time (s) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    keys = sorted({(r["model"], r["target"]) for r in rows}, key=lambda k: (list(MODELS).index(k[0]), -k[1]))
    for model, target in keys:
        group = [r for r in rows if r["model"] == model and r["target"] == target]
        lines.append(f"| {model} | {target:.0%} | {ms([r['dense'] for r in group])} | "
                     f"{ms([r['searched_acc'] for r in group])} | {ms([r['searched_flops'] for r in group])} | "
                     f"{ms([r['uniform_acc'] for r in group])} | {ms([r['uniform_flops'] for r in group])} "
                     f"({statistics.mean(r['uniform_ratio'] for r in group):.2f}) | "
                     f"{ms([r['search_seconds'] for r in group])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed")
    parser.add_argument("--all", action="store_true", help="also mobilenetv2 and a 30 %% FLOPs target (much longer)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds 0..N-1 (default: 1 quick, 3 full)")
    parser.add_argument("--out", default="benchmarks/results/budget_search.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    models = MODELS if args.all else dict(list(MODELS.items())[:2])
    targets = (0.5, 0.3) if args.all else (0.5,)
    seeds = tuple(range(args.seeds or (1 if args.quick else 3)))
    rows = []
    for name, size in models.items():
        rows += run_model(name, size, targets, epochs=10 if name != "lenet5" else 15, finetune_epochs=3, seeds=seeds)
    header = (f"# Budget search vs uniform ratios at equal FLOPs\n\nDigits images ({', '.join(f'{m} {s}x{s}' for m, s in models.items())}), "
              f"criterion magnitude, {len(seeds)} seed(s), 3 fine-tuning epochs after pruning for both, accuracy on the test "
              f"split (mean ± std over seeds), torch threads {torch.get_num_threads()}.\n"
              f"Reproduce: `.venv/bin/python benchmarks/budget_search.py{' --quick' if args.quick else ''}"
              f"{' --all' if args.all else ''}{f' --seeds {args.seeds}' if args.seeds else ''}`\n")
    table = summarise(rows)
    text = header + "\n" + table + "\n\nSearched per-layer ratios (first seed):\n\n" + "\n".join(
        f"- {r['model']} at {r['target']:.0%}: {r['ratios']}" for r in rows if r["seed"] == seeds[0]) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)



if __name__ == "__main__":
    main()
