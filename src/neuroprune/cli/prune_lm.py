"""``neuroprune prune`` on a causal language model: perplexity, uniform widths, a generation check.

``run_hf`` hands a ``*ForCausalLM`` folder here: the text becomes an
:class:`~neuroprune.tasks.language_model.LMTask` (perplexity on held-out blocks, logit distillation),
``--protect-first`` / ``--protect-last`` become ignored blocks, ``--uniform`` refuses settings
that would give layers different widths, and the report gains a greedy generation check with
decoding speed before and after (:func:`~neuroprune.tasks.generate.generation_check`).

Example:
    >>> import argparse
    >>> from neuroprune.core.config import PruneConfig
    >>> args = argparse.Namespace(protect_first=1, protect_last=0, target_flops=None, target_params=None,
    ...                           target_latency=None, max_drop=None)
    >>> uniform_problems(PruneConfig(scope="global"), args)[0]
    '--uniform: --scope global ranks across layers; use --scope local'
"""

from __future__ import annotations

import argparse

from neuroprune.core.errors import ConfigError
from neuroprune.cli.console import print_err
from neuroprune.cli.prune import print_reload_hint, run_prune_and_report, target_exit
from neuroprune.cli.settings import budget_from_args
from neuroprune.workflows.causal_lm import GenerationCheck, protect_blocks
from neuroprune.workflows.outputs import tokenizer_files


def uniform_problems(config, args: argparse.Namespace) -> list[str]:
    """Settings that would give layers different widths (``--uniform`` refuses them)."""
    problems = []
    if config.threshold is not None:
        problems.append("--threshold removes a different number of neurons per layer; use --ratio")
    if config.scope != "local":
        problems.append("--scope global ranks across layers; use --scope local")
    if any(p.ratio is not None or p.ignore or p.min_width for p in config.layers):
        problems.append("layer policies with their own ratio, min_width or ignore change single layers")
    if args.protect_first or args.protect_last:
        problems.append("--protect-first / --protect-last leave those blocks wider")
    if budget_from_args(args) is not None:
        problems.append("a budget (--target-*, --max-drop) searches per-layer ratios")
    return [f"--uniform: {p}" for p in problems]


def partly_ignored(model, ignore) -> list[str]:
    """``--uniform``: ignore entries may freeze every FFN or every head group, not some blocks only."""
    from neuroprune.hf.adapter import HFAdapter

    graph = HFAdapter().discover(model, None, ignore=ignore)
    problems = []
    for kind, suffix in (("head", ":heads"), ("FFN", "")):
        names = [g.name for g in graph.groups] + list(graph.frozen)
        names = [n for n in names if n.endswith(":heads") == bool(suffix) and n != "hidden size"]
        frozen = [n for n in names if n in graph.frozen]
        if frozen and len(frozen) < len(names):
            problems.append(f"--uniform: --ignore leaves {kind} groups {', '.join(frozen)} unpruned but not the "
                            f"others; ignore all of them (e.g. '*:heads') or none")
    return problems


def run_causal_lm(args: argparse.Namespace, config, model, tokenizer, documents: list[str]) -> int:
    """A causal LM: perplexity on held-out blocks, logit distillation, a generation check in the report."""
    from neuroprune.hf.adapter import find_blocks, plain_loadable
    from neuroprune.tasks.language_model import LMTask

    blocks = [block.path for block in find_blocks(model)]
    protected_config = protect_blocks(config, blocks, args.protect_first, args.protect_last)  # range checked first
    if args.uniform:
        problems = uniform_problems(config, args) + partly_ignored(model, config.ignore)
        if problems:
            raise ConfigError(problems)
    config = protected_config
    task = LMTask(documents, tokenizer, seq_len=args.seq_len, batch_size=args.batch_size,
                  calibration_samples=args.calibration_samples, seed=args.seed, distill_seconds=args.distill_seconds,
                  lm_weight=args.lm_weight)
    sizes = task.split_sizes()
    print_err(f"{args.data[5:]}: {sizes['train']} training blocks of {args.seq_len} tokens ({sizes['calibration']} "
              f"for calibration), {sizes['val']} validation, {sizes['test']} test; quality = perplexity (lower is "
              f"better; --tolerance {config.tolerance:g} allows {config.tolerance:.0%} higher validation perplexity)")
    prompt = args.prompt or " ".join(task.documents["test"][0].split()[:6])
    generation = GenerationCheck(model, tokenizer, prompt, runs=min(3, config.latency_runs))
    result = run_prune_and_report(model, task, config, args, generation.finish, extra_files=tokenizer_files(tokenizer))
    if args.uniform and not plain_loadable(result.model):  # pragma: no cover - the checks above prevent it
        raise ConfigError(["--uniform: the pruned layers ended with different widths"])
    print_reload_hint(args, plain_loadable(result.model), "AutoModelForCausalLM",
                      "per-layer widths differ; pass --uniform for a standard config")
    return target_exit(result, args)
