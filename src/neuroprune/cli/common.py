"""What several subcommands share: model and data specs, pruning options, output checks.

Example:
    >>> parse_model_spec("zoo:mlp")
    ('zoo', 'mlp')
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import PruneConfig
from ..config_file import load_config_file
from ..data import DataSplits, load_data
from ..errors import ConfigError, OutputExistsError, UnknownNameError
from ..io import load_weights
from ..recover.finetune import finetune
from ..scoring import criterion_names
from ..task import ClassificationTask
from ..zoo import ZOO, build_model, zoo_entry

#: Default learning rate of distillation (``--lr`` not given) for hf models.
DISTILL_LR = 5e-5


class _ExplicitStore(argparse.Action):
    """Store the value and note that it was given (``args.<dest>_given``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``zoo:NAME`` -> ("zoo", NAME); ``hf:DIR_OR_NAME`` -> ("hf", DIR_OR_NAME);
    ``path/file.py:function`` -> (path, function)."""
    if spec.startswith("zoo:"):
        return "zoo", spec[4:]
    if spec.startswith("hf:") and spec[3:]:
        return "hf", spec[3:]
    path, sep, function = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not function:
        raise ConfigError([f"model spec {spec!r} must be zoo:NAME (one of {', '.join(ZOO)}), hf:DIR_OR_NAME "
                           "(a Hugging Face transformers model) or path/to/file.py:build_fn"])
    return path, function


def _refuse_hf(spec: str) -> None:
    if parse_model_spec(spec)[0] == "hf":
        raise ConfigError([f"{spec}: Hugging Face models are pruned with `neuroprune prune --model hf:DIR --data "
                           "text:FILE`; this command takes zoo:NAME or path/to/file.py:build_fn"])


def model_layout(spec: str, layout: str | None, image_size: int | None) -> tuple[str, int]:
    """The data layout and image size a model wants (zoo defaults unless given)."""
    _refuse_hf(spec)
    kind, name = parse_model_spec(spec)
    if kind == "zoo":
        entry = zoo_entry(name)
        return layout or entry.layout, image_size or entry.image_size
    return layout or "flat", image_size or 8


def build_from_spec(spec: str, data: DataSplits) -> nn.Module:
    """Build the model a spec names, sized for ``data`` where it is a zoo model."""
    _refuse_hf(spec)
    kind, name = parse_model_spec(spec)
    if kind == "zoo":
        entry = zoo_entry(name)
        kwargs: dict[str, Any] = {"num_classes": data.num_classes}
        if entry.layout == "image":
            kwargs["in_channels"] = data.input_shape[0]
        elif entry.layout == "flat":
            kwargs["in_features"] = data.input_shape[0]
        return build_model(name, **kwargs)
    path = Path(kind)
    if not path.is_file():
        raise ConfigError([f"model file {kind!r} does not exist"])
    module_spec = importlib.util.spec_from_file_location(f"neuroprune_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    builder = getattr(module, name, None)
    if not callable(builder):
        functions = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise UnknownNameError(f"function in {kind}", name, functions)
    model = builder()
    if not isinstance(model, nn.Module):
        raise ConfigError([f"{spec} returned {type(model).__name__}, not a torch.nn.Module"])
    return model


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="digits", help="data spec: digits | npz:PATH (arrays x_train, y_train, x_test, "
                        "y_test) | text:FILE (one sentence per line; hf: models only)")
    parser.add_argument("--layout", choices=["flat", "image", "sequence"], help="how samples are shaped for the model")
    parser.add_argument("--image-size", type=int, help="side length images are resized to (image layout)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, training and random choices")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--calibration-samples", type=int, default=1024, help="training samples used to score neurons")


def add_pruning_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pruning")
    group.add_argument("--criterion", default="rank", help=f"one of: {', '.join(criterion_names())}")
    target = group.add_mutually_exclusive_group()
    target.add_argument("--ratio", type=float, help="fraction of prunable neurons to remove, in [0, 1) (default 0.5)")
    target.add_argument("--threshold", type=float, help="remove neurons whose normalised score is below this")
    group.add_argument("--scope", choices=["local", "global"], default="local")
    group.add_argument("--steps", type=int, default=1)
    group.add_argument("--tolerance", type=float, default=0.02, help="largest validation drop before a step is rolled back")
    group.add_argument("--min-width", type=int, default=1)
    group.add_argument("--round-to", type=int, default=1, help="keep layer widths at multiples of this")
    group.add_argument("--finetune-epochs", type=int, default=0, help="fine-tuning epochs after every accepted step")
    group.add_argument("--lr", type=float, default=1e-3, action=_ExplicitStore,
                       help=f"fine-tuning learning rate (default 1e-3; distillation of hf models: {DISTILL_LR:g})")
    group.add_argument("--distill-seconds", type=float, metavar="S",
                       help="hf models: distil against the unpruned model for at most S seconds after every accepted "
                            "step (sets --finetune-epochs to 100 unless given; fine-tuning of hf models is distillation)")
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
    parser.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder (default with --steps > 1: OUT.checkpoint)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    parser.add_argument("--out", default="neuroprune-out", help="output folder (model.safetensors, plan.json, "
                        "report.json, report.html, figures/)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON here")
    parser.add_argument("--explain", metavar="CSV", help="write every neuron's score under each criterion and the decision")
    parser.add_argument("--no-html", action="store_true", help="do not write report.html and the figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(option_dests={option: a.dest for a in parser._actions for option in a.option_strings})


def config_from_args(args: argparse.Namespace) -> PruneConfig:
    options: dict[str, Any] = {}
    if args.criterion == "magnitude":
        if args.norm:
            options["p"] = args.norm
        if args.include_outgoing:
            options["outgoing"] = True
    if args.criterion == "rank":
        if args.rank_members:
            options["members"] = [m.strip() for m in args.rank_members.split(",") if m.strip()]
        if args.rank_weights:
            try:
                options["weights"] = [float(w) for w in args.rank_weights.split(",")]
            except ValueError as error:
                raise ConfigError([f"--rank-weights must be comma-separated numbers, got {args.rank_weights!r}"]) from error
    ratio = args.ratio if args.ratio is not None or args.threshold is not None else 0.5
    learning_rate, finetune_epochs = args.lr, args.finetune_epochs
    if parse_model_spec(getattr(args, "model", "zoo:"))[0] == "hf":
        if not getattr(args, "lr_given", False):
            learning_rate = DISTILL_LR
        if getattr(args, "distill_seconds", None) is not None and finetune_epochs == 0:
            finetune_epochs = 100
    elif getattr(args, "distill_seconds", None) is not None:
        raise ConfigError(["--distill-seconds applies to hf: models (use --finetune-epochs for others)"])
    settings = dict(
        criterion=args.criterion, criterion_options=options, ratio=ratio, threshold=args.threshold,
        scope=args.scope, steps=args.steps, tolerance=args.tolerance, min_width=args.min_width,
        round_to=args.round_to, finetune_epochs=finetune_epochs, learning_rate=learning_rate,
        reconstruct=args.reconstruct, activation_threshold=args.activation_threshold, ignore=tuple(args.ignore),
        ignore_untraceable=getattr(args, "ignore_untraceable", False), seed=args.seed, latency_runs=args.latency_runs, progress=not args.quiet,
        distill_weight=getattr(args, "distill", 0.0), distill_temperature=getattr(args, "distill_temperature", 4.0))
    if not getattr(args, "config", None):
        return PruneConfig(**settings)
    # the file is the base; options given on the command line override it
    dests = getattr(args, "option_dests", {})
    given = {dests[token.split("=")[0]] for token in getattr(args, "argv", []) if token.split("=")[0] in dests}
    field_of = {"lr": "learning_rate", "quiet": "progress", "distill": "distill_weight", "norm": "criterion_options",
                "include_outgoing": "criterion_options", "rank_members": "criterion_options",
                "rank_weights": "criterion_options"}
    overrides = {field_of.get(dest, dest) for dest in given} & set(settings)
    if "ratio" in given or "threshold" in given:
        overrides |= {"ratio", "threshold"}
    return load_config_file(args.config, **{name: settings[name] for name in overrides})


def check_output(args: argparse.Namespace) -> None:
    """Refuse an existing output folder before any work is done."""
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise OutputExistsError(f"output folder {args.out!r} already exists; choose another --out or pass --overwrite")


def load_data_for(spec: str, args: argparse.Namespace) -> DataSplits:
    if args.data.startswith("text:"):
        raise ConfigError([f"text data ({args.data}) needs a Hugging Face model: --model hf:DIR_OR_NAME"])
    layout, image_size = model_layout(spec, args.layout, args.image_size)
    return load_data(args.data, layout=layout, seed=args.seed, image_size=image_size)


def prepare_weights(model: nn.Module, weights: str | None, allow_pickle: bool) -> None:
    if weights:
        load_weights(model, weights, allow_pickle=allow_pickle)


def trained_model_and_task(args: argparse.Namespace, progress: bool) -> tuple[nn.Module, ClassificationTask]:
    """The model of ``--model`` with ``--weights`` loaded (without them: trained for
    ``--train-epochs``, default 30) and its classification task on ``--data``."""
    data = load_data_for(args.model, args)
    model = build_from_spec(args.model, data)
    prepare_weights(model, args.weights, args.allow_pickle)
    task = ClassificationTask(data, batch_size=args.batch_size, calibration_samples=args.calibration_samples, seed=args.seed)
    epochs = args.train_epochs if args.train_epochs is not None else (0 if args.weights else 30)
    if epochs:
        print_err(f"training {args.model} for {epochs} epochs on {data.name}")
        task.bind(model)
        finetune(model, task, epochs=epochs, progress=progress, desc="training")
    return model, task


def print_err(message: str) -> None:
    print(message, file=sys.stderr)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
