"""``neuroprune train-prune``: train a built-in model while gradually pruning it."""

from __future__ import annotations

import argparse
import math

import torch

from neuroprune.core.errors import ConfigError
from neuroprune.analysis.gradual import SCHEDULES, GradualPruner
from neuroprune.torch.metrics import measure_model
from neuroprune.report.table import format_report, write_report_json
from neuroprune.core.loop import PruneResult
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.torch.probe import probe_model
from neuroprune.cli.common import add_data_arguments, build_from_spec, check_output, load_data_for, seed_everything

EXAMPLES = """\
examples:
  neuroprune train-prune --model zoo:mlp --ratio 0.75 --epochs 30 --out gradual-mlp
  neuroprune train-prune --model zoo:lenet5 --ratio 0.5 --epochs 20 --start-epoch 2 --end-epoch 14 --schedule linear
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("train-prune", help="train while gradually pruning (AGP schedule)",
                                   description="Train from scratch; between --start-epoch and --end-epoch the masked "
                                               "fraction of every layer follows the schedule; the masked neurons are "
                                               "removed at the end.", epilog=EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="zoo:NAME or path/to/file.py:build_fn")
    parser.add_argument("--ratio", type=float, default=0.5, help="final fraction of neurons removed per layer")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--start-epoch", type=int, default=None, help="default: 10%% of the epochs")
    parser.add_argument("--end-epoch", type=int, default=None, help="default: 70%% of the epochs")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="agp")
    parser.add_argument("--criterion", choices=["magnitude", "random"], default="magnitude")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default="neuroprune-out")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--quiet", action="store_true")
    add_data_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if any(token.split("=")[0] == "--calibration-samples" for token in getattr(args, "argv", [])):
        raise ConfigError([f"--calibration-samples has no effect in train-prune: its criterion ({args.criterion}; "
                           "choices: magnitude, random) reads weights only, never calibration data"])
    check_output(args)
    start = args.start_epoch if args.start_epoch is not None else max(0, args.epochs // 10)
    end = args.end_epoch if args.end_epoch is not None else max(start + 1, int(args.epochs * 0.7))
    if args.epochs < 1 or not 0 <= start < end <= args.epochs:
        raise ConfigError([f"need 0 <= --start-epoch < --end-epoch <= --epochs, got {start}, {end}, {args.epochs}"])
    seed_everything(args.seed)
    data = load_data_for(args.model, args)
    model = build_from_spec(args.model, data)
    probe_model(model, data)
    task = ClassificationTask(data, batch_size=args.batch_size, seed=args.seed).bind(model)
    per_epoch = math.ceil(len(data.x_train) / args.batch_size)
    pruner = GradualPruner(model, task.example_input(), ratio=args.ratio, start=start * per_epoch, end=end * per_epoch,
                           frequency=max(1, per_epoch // 4), schedule=args.schedule, criterion=args.criterion)
    before = measure_model(model, task.make_input, accuracy=None).to_dict()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    records, step = [], 0
    for epoch in range(args.epochs):
        model.train()
        for batch in task.train_batches(epoch):
            loss = task.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            pruner.step(step)
            step += 1
        removed = sum(len(units) for units in pruner.masked.values())
        metric = task.evaluate(model, "val")
        records.append({"step": epoch + 1, "attempt": 1, "target_ratio": pruner.fraction, "removed": removed,
                        "accuracy": metric, "accepted": True, "reason": f"{args.schedule} schedule, epoch {epoch + 1}"})
        if not args.quiet:
            print(f"epoch {epoch + 1}/{args.epochs}: {pruner.fraction:.0%} masked, val {task.metric_name} {metric:.4f}")
    small, plan = pruner.finalize()
    after = measure_model(small, task.make_input, accuracy=task.evaluate(small, "test")).to_dict()
    widths = {g.name: g.size - len(pruner.masked[g.name]) for g in pruner.graph.groups}
    report = {"metric": task.metric_name, "before": before, "after": after, "steps": records,
              "layers": [{"name": g.name, "width_before": g.size, "width_after": widths[g.name]} for g in pruner.graph.groups],
              "fixed_layers": pruner.graph.frozen, "data": data.describe(),
              "config": {"mode": "train-prune", "ratio": args.ratio, "epochs": args.epochs, "start_epoch": start,
                         "end_epoch": end, "schedule": args.schedule, "criterion": args.criterion, "lr": args.lr}}
    print(format_report(report))
    PruneResult(small, plan, report).save(args.out, overwrite=args.overwrite)
    args.kept.append(f"the pruned model in {args.out}/")
    if args.json:
        write_report_json(report, args.json)
    print(f"\nsaved to {args.out}/")
    return 0
