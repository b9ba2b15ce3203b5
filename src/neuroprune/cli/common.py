"""What several subcommands share: model and data specs, pruning options, output checks.

Example:
    >>> parse_model_spec("zoo:mlp")
    ('zoo', 'mlp')
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from neuroprune.core.atomic import recover_folder
from neuroprune.core.config import PruneConfig
from neuroprune.core.config_file import load_config_file, read_config_file
from neuroprune.data import DataSplits, load_data
from neuroprune.core.errors import ConfigError, DataError, ModelFileError, NeuropruneWarning, UnknownNameError
from neuroprune.torch.io import is_saved_folder, load_weights
from neuroprune.torch.recover.finetune import finetune
from neuroprune.core.criteria import criterion_names
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.models.zoo import ZOO, build_model, zoo_entry
from neuroprune.cli.outputs import check_output_file, check_output_folder, input_paths

#: Default learning rate of distillation (``--lr`` not given) for hf models.
DISTILL_LR = 5e-5

#: Most classes a zoo classifier is built for (its last layer has one output per class).
MAX_ZOO_CLASSES = 100_000

#: Integer options and the smallest value each takes (checked before any work).
INT_MINIMUMS = {"seed": 0, "batch_size": 1, "calibration_samples": 1, "image_size": 1, "train_epochs": 0,
                "steps": 1, "min_width": 1, "round_to": 1, "finetune_epochs": 0, "latency_runs": 1, "epochs": 1,
                "start_epoch": 0, "end_epoch": 1, "opset": 1}


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
    if spec.startswith("keras:") and spec[6:]:  # a Keras 3 model file (neuroprune.keras.cli)
        return "keras", spec[6:]
    path, sep, function = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not function:
        raise ConfigError([f"model spec {spec!r} must be zoo:NAME (one of {', '.join(ZOO)}), hf:DIR_OR_NAME "
                           "(a Hugging Face transformers model), keras:PATH.keras or path/to/file.py:build_fn"])
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
        if data.num_classes > MAX_ZOO_CLASSES:
            raise DataError(f"labels of {data.name} reach {data.num_classes - 1}: a zoo classifier would need "
                            f"{data.num_classes} outputs, more than the {MAX_ZOO_CLASSES} allowed; number your "
                            "classes 0..K-1")
        kwargs: dict[str, Any] = {"num_classes": data.num_classes}
        if entry.layout == "image":
            kwargs["in_channels"] = data.input_shape[0]
        elif entry.layout == "flat":
            kwargs["in_features"] = data.input_shape[0]
        return build_model(name, **kwargs)
    return build_from_file(kind, name)


def _user_line(error: BaseException, path: Path) -> str:
    """``file.py:LINE`` of the deepest frame of ``error`` in the user's file (the file alone if none)."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f"{path}:{error.lineno}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


def build_from_file(file: str, function: str) -> nn.Module:
    """Import ``file`` and call ``function()``; every failure is a :class:`ModelFileError` naming the file and line.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "net.py"
        >>> _ = path.write_text("import torch.nn as nn\\ndef build(width):\\n    return nn.Linear(4, width)\\n")
        >>> try:
        ...     build_from_file(str(path), "build")
        ... except ModelFileError as error:
        ...     print(str(error).split(": ", 1)[1])
        build(width) needs arguments; the builder must take none: def build(): return MyNet(...)
    """
    path = Path(file)
    if not path.is_file():
        raise ConfigError([f"model file {file!r} does not exist"])
    module_spec = importlib.util.spec_from_file_location(f"neuroprune_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ModelFileError(f"{_user_line(error, path)}: syntax error in the model file: {error.msg}") from error
    except ImportError as error:
        raise ModelFileError(f"{_user_line(error, path)}: the model file imports something that cannot be "
                             f"imported: {error}") from error
    except Exception as error:  # any code at import time of the user's file
        raise ModelFileError(f"{_user_line(error, path)}: importing the model file raised "
                             f"{type(error).__name__}: {error}") from error
    builder = getattr(module, function, None)
    if not callable(builder):
        functions = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise UnknownNameError(f"function in {file}", function, functions)
    try:
        inspect.signature(builder).bind()
    except TypeError:
        raise ModelFileError(f"{path}: {function}{inspect.signature(builder)} needs arguments; the builder must take "
                             f"none: def {function}(): return MyNet(...)") from None
    except ValueError:  # no signature (a builtin): let the call tell
        pass
    try:
        model = builder()
    except Exception as error:
        raise ModelFileError(f"{_user_line(error, path)}: {function}() raised {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise ConfigError([f"{file}:{function} returned {type(model).__name__}, not a torch.nn.Module"])
    return model


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


def check_output(args: argparse.Namespace) -> None:
    """Check ``--out`` and ``--json`` before any work is done (see :mod:`neuroprune.cli.outputs`)."""
    inputs = input_paths(args)
    if args.out:
        recover_folder(args.out, is_saved_folder)  # a crash between the renames of an earlier --overwrite
        check_output_folder(args.out, "--out", inputs=inputs, overwrite=args.overwrite, owned=is_saved_folder)
    if getattr(args, "json", None):
        check_output_file(args.json, "--json", inputs=inputs, output_folder=args.out)


def load_data_for(spec: str, args: argparse.Namespace) -> DataSplits:
    check_int_options(args)
    if args.data.startswith("text:"):
        raise ConfigError([f"text data ({args.data}) needs a Hugging Face model: --model hf:DIR_OR_NAME"])
    layout, image_size = model_layout(spec, args.layout, args.image_size)
    return load_data(args.data, layout=layout, seed=args.seed, image_size=image_size,
                     standardize=getattr(args, "standardize", False))


def data_entry(task: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The report's ``"data"`` entry: spec, whether it was standardised, split sizes."""
    data = getattr(task, "data", None)
    if isinstance(data, DataSplits):
        return data.describe()
    sizes = task.split_sizes() if hasattr(task, "split_sizes") else {}
    return {"spec": args.data, "standardized": False, **sizes}


def prepare_weights(model: nn.Module, weights: str | None, allow_pickle: bool) -> None:
    if weights:
        load_weights(model, weights, allow_pickle=allow_pickle)


def trained_model_and_task(args: argparse.Namespace, progress: bool) -> tuple[nn.Module, ClassificationTask]:
    """The model of ``--model`` with ``--weights`` loaded (without them: trained for
    ``--train-epochs``, default 30) and its classification task on ``--data``.

    The model runs once on a probe batch first (:func:`neuroprune.torch.probe.probe_model`), so a model
    and data that do not fit fail here, in one sentence, before any training or pruning.
    """
    from neuroprune.torch.probe import probe_model

    data = load_data_for(args.model, args)
    model = build_from_spec(args.model, data)
    prepare_weights(model, args.weights, args.allow_pickle)
    probe_model(model, data)
    task = ClassificationTask(data, batch_size=args.batch_size, calibration_samples=args.calibration_samples, seed=args.seed)
    epochs = args.train_epochs if args.train_epochs is not None else (0 if args.weights else 30)
    if epochs:
        print_err(f"training {args.model} for {epochs} epochs on {data.name}")
        task.bind(model)
        finetune(model, task, epochs=epochs, progress=progress, desc="training")
    return model, task


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Print every :class:`~neuroprune.core.errors.NeuropruneWarning` as one line ``neuroprune: warning: …``
    on stderr (each distinct message once); other warnings keep Python's format."""
    with warnings.catch_warnings():
        warnings.simplefilter("default", NeuropruneWarning)
        original = warnings.showwarning
        shown: set[str] = set()

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, NeuropruneWarning):
                if str(message) not in shown:  # the same check may run twice (before training, in prune)
                    shown.add(str(message))
                    print(f"neuroprune: warning: {message}", file=sys.stderr)
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def print_err(message: str) -> None:
    print(message, file=sys.stderr)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
