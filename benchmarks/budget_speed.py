"""Budget search time on ResNet-56: probes measured on pruned copies (before) vs the analytic cost model (after).

"Before" is today's search with the cost model switched off (``CostModel.record`` patched to
return ``None``, so every probe deep-copies, prunes and FLOP-traces the model exactly as the code
before the cost model did); "after" is the default. Both run on the same model, task, scores and
sensitivity curves, so the ratios they find must be identical; the table says whether they are.

Run:  .venv/bin/python benchmarks/budget_speed.py [--image-size 32] [--target 0.5] [--out benchmarks/results/budget_speed.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

import torch

from neuroprune import ClassificationTask, PruneConfig
from neuroprune.analysis.budget import Budget, search_budget
from neuroprune.torch.cost_model import CostModel
from neuroprune.data import load_digits
from neuroprune.analysis.sensitivity import analyse_sensitivity
from neuroprune.models.zoo import build_model


def timed_search(model, task, config, budget, sensitivity, *, analytic: bool):
    patch = mock.patch.object(CostModel, "record", return_value=None) if not analytic else mock.patch.object(
        CostModel, "record", CostModel.record)
    with patch:
        start = time.perf_counter()
        result = search_budget(model, task, config, budget, sensitivity=sensitivity, progress=False)
        return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--target", type=float, default=0.5, help="FLOPs target (fraction of the original)")
    parser.add_argument("--quantity", choices=("flops", "params"), default="flops")
    parser.add_argument("--out", default="benchmarks/results/budget_speed.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    task = ClassificationTask(load_digits(seed=0, layout="image", image_size=args.image_size), calibration_samples=64)
    model = build_model("resnet56", num_classes=10)
    config = PruneConfig(criterion="magnitude", tolerance=1.0, progress=False, latency_runs=1)
    sensitivity = analyse_sensitivity(model, task, config, ratios=(0.3, 0.6, 0.9), progress=False)
    budget = Budget(**{args.quantity: args.target})
    before, t_before = timed_search(model, task, config, budget, sensitivity, analytic=False)
    after, t_after = timed_search(model, task, config, budget, sensitivity, analytic=True)
    same = before.ratios == after.ratios
    rows = [("before (copy + trace per probe)", t_before, before), ("after (analytic cost model)", t_after, after)]
    lines = [f"# Budget search speed: ResNet-56, {args.quantity} target {args.target:.0%}\n",
             f"Untrained zoo ResNet-56 (widths 16/32/64) on {args.image_size}x{args.image_size} digits, criterion "
             f"magnitude, sensitivity curves computed once beforehand and shared (not timed), torch threads "
             f"{torch.get_num_threads()}; one run each on a shared machine.",
             f"Reproduce: `.venv/bin/python benchmarks/budget_speed.py --image-size {args.image_size} "
             f"--target {args.target} --quantity {args.quantity}`\n",
             f"| search | time (s) | {args.quantity} achieved | probes |", "| --- | --- | --- | --- |"]
    lines += [f"| {label} | {seconds:.2f} | {r.achieved[args.quantity]:.4f} | {len(r.probes)} |" for label, seconds, r in rows]
    lines += ["", f"Speed-up: {t_before / t_after:.1f}x. Same per-layer ratios: {'yes' if same else 'NO'}.", ""]
    if not same:
        diff = {k: (before.ratios.get(k), after.ratios.get(k)) for k in before.ratios.keys() | after.ratios.keys()
                if before.ratios.get(k) != after.ratios.get(k)}
        lines.append(f"Differences (before, after): {diff}\n")
    lines.append("Ratios found (both): " + ", ".join(f"{k} {v:.3f}" for k, v in after.ratios.items()) + "\n")
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
