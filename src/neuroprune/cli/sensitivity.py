"""``neuroprune sensitivity``: how much each layer suffers as its neurons are removed."""

from __future__ import annotations

import argparse

from neuroprune.analysis.sensitivity import DEFAULT_RATIOS, analyse_sensitivity, format_sensitivity
from neuroprune.cli.arguments import add_data_arguments
from neuroprune.cli.common import seed_everything, trained_model_and_task
from neuroprune.cli.outputs import check_distinct, check_output_file, input_paths
from neuroprune.core.config import PruneConfig
from neuroprune.core.errors import ConfigError
from neuroprune.workflows.outputs import save_sensitivity

EXAMPLES = """\
examples:
  neuroprune sensitivity --model zoo:lenet5 --train-epochs 10 --plot sens.png
  neuroprune sensitivity --model net.py:build --weights w.safetensors --data npz:mnist.npz --ratios 0.25,0.5,0.75 --json sens.json
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("sensitivity", help="quality per layer vs fraction of neurons removed",
                                   description="Mask the lowest-scored neurons of one layer at a time and measure the "
                                               "validation metric.", epilog=EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="zoo:NAME or path/to/file.py:build_fn")
    parser.add_argument("--weights", help="trained weights: .safetensors or a saved state_dict")
    parser.add_argument("--allow-pickle", action="store_true")
    parser.add_argument("--train-epochs", type=int, help="train first (default: 30 without --weights, else 0)")
    parser.add_argument("--criterion", default="magnitude")
    parser.add_argument("--ratios", default=",".join(str(r) for r in DEFAULT_RATIOS), help="comma-separated fractions")
    parser.add_argument("--json", metavar="PATH", help="write the curves as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write the curves as a PNG")
    parser.add_argument("--quiet", action="store_true")
    add_data_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        ratios = tuple(float(r) for r in args.ratios.split(","))
    except ValueError as error:
        raise ConfigError([f"--ratios must be comma-separated numbers, got {args.ratios!r}"]) from error
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_output_file(path, option, inputs=input_paths(args))
    check_distinct([("--json", args.json, False), ("--plot", args.plot, False)])
    config = PruneConfig(criterion=args.criterion, progress=not args.quiet, seed=args.seed)
    seed_everything(args.seed)
    model, task = trained_model_and_task(args, config.progress)
    result = analyse_sensitivity(model, task, config, ratios=ratios, progress=config.progress)
    result["data"] = task.data.describe()
    print(format_sensitivity(result))
    save_sensitivity(result, json_path=args.json, plot_path=args.plot, kept=args.kept)
    return 0
