"""The options several subcommands share: data, pruning, budget and output; integer range checks.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_data_arguments(parser)
    >>> parser.parse_args(["--data", "npz:x.npz"]).data
    'npz:x.npz'
"""

from __future__ import annotations

import argparse

from neuroprune.core.criteria import criterion_names
from neuroprune.core.config import RECOVER_SHARDINGS
from neuroprune.core.errors import ConfigError

#: Default learning rate of distillation (``--lr`` not given) for hf models.
DISTILL_LR = 5e-5

#: Integer options and the smallest value each takes (checked before any work).
INT_MINIMUMS = {"seed": 0, "batch_size": 1, "calibration_samples": 1, "image_size": 1, "train_epochs": 0,
                "steps": 1, "min_width": 1, "round_to": 1, "finetune_epochs": 0, "latency_runs": 1, "epochs": 1,
                "start_epoch": 0, "end_epoch": 1, "opset": 1}


class _ExplicitStore(argparse.Action):
    """Store the value and note that it was given (``args.<dest>_given``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)



def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="digits", help="data spec: digits | npz:PATH (arrays x_train, y_train, x_test, "
                        "y_test) | text:FILE (one sentence per line; hf: models only)")
    parser.add_argument("--layout", choices=["flat", "image", "sequence"], help="how samples are shaped for the model")
    parser.add_argument("--image-size", type=int, help="side length images are resized to (image layout)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, training and random choices")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--calibration-samples", type=int, default=1024, help="training samples used to score neurons")
    parser.add_argument("--standardize", action="store_true", help="npz data: centre and scale every feature with the "
                        "training split's mean and std (default: fed to the model exactly as stored, cast to float32; "
                        "the built-in digits are always standardised)")


def add_pruning_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pruning")
    group.add_argument("--criterion", default="rank", help=f"one of: {', '.join(criterion_names())}")
    target = group.add_mutually_exclusive_group()
    target.add_argument("--ratio", type=float, help="fraction of prunable neurons to remove, in [0, 1) (default 0.5)")
    target.add_argument("--threshold", type=float, help="remove neurons whose normalised score is below this")
    group.add_argument("--scope", choices=["local", "global"], default="local")
    group.add_argument("--steps", type=_steps, default="auto", metavar="N|auto",
                       help="steps to reach the target (default auto: one step, split into smaller ones whenever an "
                            "attempt is rolled back; N: k/N of the target after step k, also continued on rollback)")
    group.add_argument("--tolerance", type=float, default=0.02, help="largest validation drop before a step is rolled back")
    group.add_argument("--judge", choices=["after", "before"], default="after",
                       help="validate an attempt after its recovery (default: --reconstruct if given, then "
                            "--finetune-epochs of fine-tuning per attempt) or right after masking (the write-up's order)")
    group.add_argument("--max-attempts", type=int, metavar="N",
                       help="most attempts in all, rolled back ones included (default: scheduled steps + 8)")
    group.add_argument("--max-seconds", type=float, metavar="S", help="start no new attempt after S seconds")
    group.add_argument("--min-width", type=int, default=1)
    group.add_argument("--round-to", type=int, default=1, help="keep layer widths at multiples of this")
    group.add_argument("--finetune-epochs", type=int, default=0, help="fine-tuning epochs per attempt, before it is judged "
                       "(--judge after; a rolled-back attempt's epochs are spent too) or after every accepted step "
                       "(--judge before); report.json 'finetune' states the total")
    group.add_argument("--lr", type=float, default=1e-3, action=_ExplicitStore,
                       help=f"fine-tuning learning rate (default 1e-3; distillation of hf models: {DISTILL_LR:g})")
    group.add_argument("--distill-seconds", type=float, metavar="S",
                       help="hf models: distil against the unpruned model for at most S seconds after every accepted "
                            "step (sets --finetune-epochs to 100 unless given; fine-tuning of hf models is distillation)")
    group.add_argument("--recover-sharding", choices=RECOVER_SHARDINGS, default="ddp",
                       help="under torchrun: fine-tune each rank on a slice of every batch with DDP (default), or "
                            "FSDP2 (also shards weights, gradients and optimizer state), or 'none' (whole batches)")
    group.add_argument("--reconstruct", action="store_true", help="least-squares re-fit of layers that read pruned neurons")
    group.add_argument("--distill", type=float, default=0.0, metavar="WEIGHT",
                       help="fine-tune against the unpruned model's outputs with this weight in [0, 1] (classification)")
    group.add_argument("--distill-temperature", type=float, default=4.0)
    group.add_argument("--activation-threshold", type=float, default=0.0)
    group.add_argument("--norm", type=int, choices=[1, 2], help="magnitude criterion: L1 or L2 norm")
    group.add_argument("--include-outgoing", action="store_true", help="magnitude criterion: add outgoing weights")
    group.add_argument("--rank-members", help="rank criterion: comma-separated member criteria")
    group.add_argument("--rank-weights", help="rank criterion: comma-separated weights of the members")
    group.add_argument("--ignore", action="append", default=[], metavar="MODULE", help="module path to leave unpruned (repeatable); hf models also take shell patterns on layer "
                       "names, e.g. '*:heads' (FFN neurons only) or '*.intermediate.dense' (heads only)")
    group.add_argument("--ignore-untraceable", action="store_true",
                       help="freeze modules that cannot be traced or followed (control flow on tensor values, an "
                            "unknown layer or operation) instead of stopping; the report lists them and why")
    group.add_argument("--latency-runs", type=int, default=20)
    budget = parser.add_argument_group("budget (instead of --ratio: per-layer ratios are searched)")
    target = budget.add_mutually_exclusive_group()
    target.add_argument("--target-flops", type=float, metavar="F", help="FLOPs at this fraction of the original")
    target.add_argument("--target-params", type=float, metavar="F", help="parameters at this fraction of the original")
    target.add_argument("--target-latency", type=float, metavar="F", help="batch-32 latency at this fraction")
    target.add_argument("--max-drop", type=float, metavar="D", help="largest reduction within this validation drop")
    parser.add_argument("--config", metavar="TOML", help="settings file: [prune] options and [[layer]] policies; "
                        "options given on the command line win")
    parser.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder (default unless --steps 1: OUT.checkpoint)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    parser.add_argument("--out", default="neuroprune-out", help="output folder (model.safetensors, plan.json, "
                        "report.json, report.html, figures/)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON here")
    parser.add_argument("--explain", metavar="CSV", help="write every neuron's score under each criterion and the decision")
    parser.add_argument("--no-html", action="store_true", help="do not write report.html and the figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(option_dests={option: a.dest for a in parser._actions for option in a.option_strings})


def _steps(text: str) -> int | str:
    """``--steps``: ``auto`` or a whole number (range checks are PruneConfig's)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a whole number, got {text!r}") from None


def check_int_options(args: argparse.Namespace) -> None:
    """Every integer option below its smallest value (``--seed -1``, ``--batch-size 0``, …), in one ConfigError."""
    problems = []
    for dest, low in INT_MINIMUMS.items():
        value = getattr(args, dest, None)
        if isinstance(value, int) and value < low:  # --steps may also be "auto"
            problems.append(f"--{dest.replace('_', '-')} must be >= {low}, got {value}")
    if getattr(args, "seed", None) is not None and args.seed >= 2**32:
        problems.append(f"--seed must be < 2**32, got {args.seed}")
    if problems:
        raise ConfigError(problems)

