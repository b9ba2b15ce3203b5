"""``neuroprune prune``: prune your own model on your own data."""

from __future__ import annotations

import argparse

from ..recover.finetune import finetune
from ..report.table import format_report, write_report_json
from ..schedule import prune
from ..task import ClassificationTask
from .common import (add_data_arguments, add_pruning_arguments, build_from_spec, check_output, config_from_args,
                     load_data_for, prepare_weights, print_err, seed_everything)

EXAMPLES = """\
examples:
  # the built-in MLP on the bundled digits data, trained first, half its neurons removed
  neuroprune prune --model zoo:mlp --data digits --ratio 0.5 --out pruned-mlp

  # your own model and data (offline): a builder function, trained weights, arrays in an .npz
  neuroprune prune --model my_net.py:build --weights trained.safetensors \\
      --data npz:mnist.npz --criterion taylor --ratio 0.75 --steps 3 --finetune-epochs 2 --out small-net

  # retrain-free: least-squares reconstruction instead of fine-tuning, global ranking
  neuroprune prune --model zoo:lenet5 --ratio 0.5 --scope global --reconstruct --json report.json
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prune", help="prune a model on a data set", description="Score, remove, validate and recover neurons.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="zoo:NAME or path/to/file.py:build_fn (a function returning the model)")
    parser.add_argument("--weights", help="trained weights: .safetensors or a saved state_dict")
    parser.add_argument("--allow-pickle", action="store_true", help="allow unpickling --weights (runs code from the file)")
    parser.add_argument("--train-epochs", type=int, help="train before pruning (default: 30 without --weights, else 0)")
    add_data_arguments(parser)
    add_pruning_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    check_output(args)
    seed_everything(args.seed)
    data = load_data_for(args.model, args)
    model = build_from_spec(args.model, data)
    prepare_weights(model, args.weights, args.allow_pickle)
    task = ClassificationTask(data, batch_size=args.batch_size, calibration_samples=args.calibration_samples, seed=args.seed)
    epochs = args.train_epochs if args.train_epochs is not None else (0 if args.weights else 30)
    if epochs:
        print_err(f"training {args.model} for {epochs} epochs on {data.name} before pruning")
        finetune(task.bind(model) and model, task, epochs=epochs, progress=config.progress, desc="training")
    result = prune(model, task, config)
    print(format_report(result.report))
    if args.out:
        result.save(args.out, overwrite=args.overwrite)
        print(f"\nsaved to {args.out}/ (model.safetensors, plan.json, report.json)")
    if args.json:
        write_report_json(result.report, args.json)
    return 0
