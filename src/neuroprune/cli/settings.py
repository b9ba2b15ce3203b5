"""Turn parsed options into a :class:`~neuroprune.core.config.PruneConfig` (and a budget).

A ``--config`` file is the base; options given on the command line win. Every problem found is
reported at once, in one :class:`~neuroprune.core.errors.ConfigError`.

Example:
    >>> import argparse
    >>> budget_from_args(argparse.Namespace(target_flops=0.5, target_params=None, target_latency=None,
    ...                                     max_drop=None)).describe()
    'FLOPs at 50% of the original'
"""

from __future__ import annotations

import argparse
from typing import Any

from neuroprune.analysis.budget import Budget
from neuroprune.cli.arguments import DISTILL_LR, check_int_options
from neuroprune.core.config import PruneConfig
from neuroprune.core.config_file import load_config_file, read_config_file
from neuroprune.core.errors import ConfigError
from neuroprune.models.spec import parse_model_spec


def _given_dests(args: argparse.Namespace) -> set[str]:
    """Destinations of the options given on the command line (not defaults)."""
    dests = getattr(args, "option_dests", {})
    return {dests[token.split("=")[0]] for token in getattr(args, "argv", []) if token.split("=")[0] in dests}


def _verb(flags: list[str]) -> str:
    return "apply" if len(flags) > 1 else "applies"


def _criterion_flag_options(args: argparse.Namespace, criterion: str) -> dict[str, Any]:
    """Criterion options from ``--norm``, ``--include-outgoing``, ``--rank-members``, ``--rank-weights``;
    a flag that does not belong to ``criterion`` is refused rather than dropped."""
    options: dict[str, Any] = {}
    problems = []
    magnitude_flags = [flag for flag, given in (("--norm", args.norm), ("--include-outgoing", args.include_outgoing)) if given]
    rank_flags = [flag for flag, given in (("--rank-members", args.rank_members), ("--rank-weights", args.rank_weights))
                  if given]
    if magnitude_flags and criterion != "magnitude":
        problems.append(f"{' and '.join(magnitude_flags)} {_verb(magnitude_flags)} to the magnitude criterion, but the criterion is "
                        f"{criterion!r}")
    if rank_flags and criterion != "rank":
        problems.append(f"{' and '.join(rank_flags)} {_verb(rank_flags)} to the rank criterion, but the criterion is "
                        f"{criterion!r}")
    if problems:
        raise ConfigError(problems)
    if args.norm:
        options["p"] = args.norm
    if args.include_outgoing:
        options["outgoing"] = True
    if args.rank_members:
        options["members"] = [m.strip() for m in args.rank_members.split(",") if m.strip()]
    if args.rank_weights:
        try:
            options["weights"] = [float(w) for w in args.rank_weights.split(",")]
        except ValueError as error:
            raise ConfigError([f"--rank-weights must be comma-separated numbers, got {args.rank_weights!r}"]) from error
    return options


def _check_one_target(args: argparse.Namespace) -> None:
    budget = [f"--{dest.replace('_', '-')}" for dest in ("target_flops", "target_params", "target_latency", "max_drop")
              if getattr(args, dest, None) is not None]
    fixed = [flag for flag, dest in (("--ratio", "ratio"), ("--threshold", "threshold"))
             if getattr(args, dest, None) is not None]
    if budget and fixed:
        raise ConfigError([f"{fixed[0]} and {budget[0]} both set the target; give one: {budget[0]} searches per-layer "
                           f"ratios itself, {fixed[0]} fixes them"])


def config_from_args(args: argparse.Namespace) -> PruneConfig:
    check_int_options(args)
    _check_one_target(args)
    given = _given_dests(args)
    config_path = getattr(args, "config", None)
    table = read_config_file(config_path).get("prune", {}) if config_path else {}
    table = table if isinstance(table, dict) else {}
    criterion = table["criterion"] if "criterion" in table and "criterion" not in given else args.criterion
    options = _criterion_flag_options(args, criterion if isinstance(criterion, str) else args.criterion)
    if criterion == table.get("criterion") and isinstance(table.get("criterion_options"), dict):
        options = {**table["criterion_options"], **options}  # the flags add to the file's options
    ratio = args.ratio if args.ratio is not None or args.threshold is not None else 0.5
    learning_rate, finetune_epochs = args.lr, args.finetune_epochs
    if parse_model_spec(getattr(args, "model", "zoo:"))[0] == "hf":
        if not getattr(args, "lr_given", False):
            learning_rate = DISTILL_LR
        if getattr(args, "distill_seconds", None) is not None and finetune_epochs == 0:
            finetune_epochs = 100
        if "standardize" in given:
            raise ConfigError(["--standardize applies to npz: data; hf models read text:FILE as it is"])
        idle = [f"--{dest.replace('_', '-')}" for dest in ("distill", "distill_temperature") if dest in given]
        if idle:
            raise ConfigError([f"{' and '.join(idle)} {_verb(idle)} to classification models; hf models are recovered by "
                               "distilling their sentence embeddings (mean squared error, no temperature): use "
                               "--distill-seconds S and --finetune-epochs N"])
    elif getattr(args, "distill_seconds", None) is not None:
        raise ConfigError(["--distill-seconds applies to hf: models (use --finetune-epochs for others)"])
    settings = dict(
        criterion=args.criterion, criterion_options=options, ratio=ratio, threshold=args.threshold,
        scope=args.scope, steps=args.steps, tolerance=args.tolerance, min_width=args.min_width,
        judge=args.judge, max_attempts=args.max_attempts, max_seconds=args.max_seconds,
        round_to=args.round_to, finetune_epochs=finetune_epochs, learning_rate=learning_rate,
        recover_sharding=getattr(args, "recover_sharding", "ddp"),
        reconstruct=args.reconstruct, activation_threshold=args.activation_threshold, ignore=tuple(args.ignore),
        ignore_untraceable=getattr(args, "ignore_untraceable", False), seed=args.seed, latency_runs=args.latency_runs, progress=not args.quiet,
        distill_weight=getattr(args, "distill", 0.0), distill_temperature=getattr(args, "distill_temperature", 4.0))
    if not getattr(args, "config", None):
        return PruneConfig(**settings)
    # the file is the base; options given on the command line override it
    field_of = {"lr": "learning_rate", "quiet": "progress", "distill": "distill_weight", "norm": "criterion_options",
                "include_outgoing": "criterion_options", "rank_members": "criterion_options",
                "rank_weights": "criterion_options"}
    overrides = {field_of.get(dest, dest) for dest in given} & set(settings)
    if "ratio" in given or "threshold" in given:
        overrides |= {"ratio", "threshold"}
    if "criterion" in overrides:
        overrides.add("criterion_options")
    return load_config_file(args.config, **{name: settings[name] for name in overrides})



def budget_from_args(args: argparse.Namespace) -> Budget | None:
    """The budget of ``--target-flops`` / ``--target-params`` / ``--target-latency`` / ``--max-drop``, if one was given."""
    values = {"flops": args.target_flops, "params": args.target_params, "latency": args.target_latency,
              "max_drop": args.max_drop}
    return Budget(**values) if any(v is not None for v in values.values()) else None
