"""``neuroprune demo``: the write-up's network on the bundled digits data, 75% of it removed."""

from __future__ import annotations

import argparse
import time

from neuroprune.cli.common import check_output
from neuroprune.cli.console import PrintingListener
from neuroprune.workflows.demo import DEMO_CONFIG, run_demo  # noqa: F401 - DEMO_CONFIG's old import path
from neuroprune.workflows.outputs import Outputs


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
    listener = PrintingListener(args, warn_missed_target=False, announce_saved=False)
    run_demo(seed=args.seed, progress=not args.quiet,
             outputs=Outputs(folder=args.out, json=args.json, overwrite=args.overwrite, kept=args.kept),
             listener=listener)
    print(f"\nsaved to {args.out}/ (model.safetensors, plan.json, report.json, report.html, figures/) in "
          f"{time.perf_counter() - start:.1f} s")
    print(f"reload with: neuroprune.load({args.out!r}, lambda: neuroprune.build_model('mlp'))")
    return 0
