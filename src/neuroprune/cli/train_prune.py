"""``neuroprune train-prune``: train a built-in model while gradually pruning it."""

from __future__ import annotations

import argparse

from neuroprune.analysis.gradual import SCHEDULES
from neuroprune.cli.arguments import add_data_arguments, check_int_options
from neuroprune.cli.common import check_output, seed_everything
from neuroprune.cli.console import PrintingListener
from neuroprune.core.errors import ConfigError
from neuroprune.models.spec import build_from_spec
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.torch.probe import probe_model
from neuroprune.workflows.outputs import Outputs, save_result
from neuroprune.workflows.prepare import data_for_model
from neuroprune.workflows.train_prune import epoch_window, train_prune

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
    epoch_window(args.epochs, args.start_epoch, args.end_epoch)  # refused before any work
    seed_everything(args.seed)
    check_int_options(args)
    data = data_for_model(args.model, args.data, layout=args.layout, image_size=args.image_size, seed=args.seed,
                          standardize=args.standardize)
    model = build_from_spec(args.model, data)
    probe_model(model, data)
    task = ClassificationTask(data, batch_size=args.batch_size, seed=args.seed)
    listener = PrintingListener(args, announce_saved=False)
    result = train_prune(model, task, ratio=args.ratio, epochs=args.epochs, start_epoch=args.start_epoch,
                         end_epoch=args.end_epoch, schedule=args.schedule, criterion=args.criterion,
                         learning_rate=args.lr, listener=listener)
    listener.report_ready(result)
    save_result(result, Outputs(folder=args.out, json=args.json, overwrite=args.overwrite, kept=args.kept))
    print(f"\nsaved to {args.out}/")
    return 0
