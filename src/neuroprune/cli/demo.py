"""``neuroprune demo``: the write-up's network on the bundled digits data, 75% of it removed."""

from __future__ import annotations

import argparse
import time

import torch

from neuroprune.core.config import PruneConfig
from neuroprune.data import load_digits
from neuroprune.torch.recover.finetune import finetune
from neuroprune.report.table import format_report, write_report_json
from neuroprune.core.loop import prune
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.models.zoo import build_model
from neuroprune.cli.common import check_output, print_err

DEMO_CONFIG = dict(criterion="rank", ratio=0.75, steps=5, tolerance=0.02, reconstruct=True, finetune_epochs=3)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="prune the built-in MLP on digits (under a minute)",
        description="Train a 64-128-64-10 ReLU MLP on scikit-learn's digits (Adam, 30 epochs), remove 75%% of its "
                    "hidden neurons with the rank criterion in 5 validated steps (least-squares reconstruction, "
                    "3 epochs of fine-tuning per step), print the report and save the result.",
        epilog="example:\n  neuroprune demo --out demo-out --json demo-report.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="neuroprune-out", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_output(args)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    task = ClassificationTask(load_digits(seed=args.seed), seed=args.seed)
    model = build_model("mlp")
    print_err("training the 64-128-64-10 MLP on digits (30 epochs, Adam)")
    finetune(model, task, epochs=30, progress=not args.quiet, desc="training")
    config = PruneConfig(**DEMO_CONFIG, seed=args.seed, progress=not args.quiet)
    result = prune(model, task, config)
    print(format_report(result.report))
    result.save(args.out, overwrite=args.overwrite)
    args.kept.append(f"the pruned model in {args.out}/")
    if args.json:
        write_report_json(result.report, args.json)
    print(f"\nsaved to {args.out}/ (model.safetensors, plan.json, report.json, report.html, figures/) in {time.perf_counter() - start:.1f} s")
    print(f"reload with: neuroprune.load({args.out!r}, lambda: neuroprune.build_model('mlp'))")
    return 0
