"""Pruning a causal language model: protected blocks and the generation check before and after.

``neuroprune prune --model hf:...`` on a ``*ForCausalLM`` uses these around
:func:`~neuroprune.workflows.prune_and_report.prune_and_report`: the first and last blocks can be
left unpruned (:func:`protect_blocks`), and :class:`GenerationCheck` records a greedy
continuation with decoding speed before pruning and adds the same measurement of the pruned
model to the report (``report["generation"]``).

Example:
    >>> from neuroprune.core.config import PruneConfig
    >>> protect_blocks(PruneConfig(), ["model.layers.0", "model.layers.1", "model.layers.2"], 1, 1).ignore
    ('model.layers.0', 'model.layers.2')
"""

from __future__ import annotations

import dataclasses
from typing import Any

from neuroprune.core.config import PruneConfig
from neuroprune.core.errors import ConfigError


def protect_blocks(config: PruneConfig, blocks: list[str], first: int = 0, last: int = 0) -> PruneConfig:
    """``config`` with the first ``first`` and last ``last`` of ``blocks`` (module paths) ignored.

    Raises:
        ConfigError: negative counts, or no block left to prune.
    """
    if first < 0 or last < 0 or first + last >= max(len(blocks), 1):
        raise ConfigError([f"--protect-first ({first}) and --protect-last ({last}) must be >= 0 and leave at least "
                           f"one of the model's {len(blocks)} blocks to prune"])
    protected = blocks[:first] + (blocks[len(blocks) - last:] if last else [])
    if not protected:
        return config
    return dataclasses.replace(config, ignore=tuple(config.ignore) + tuple(protected))


class GenerationCheck:
    """A greedy continuation of ``prompt`` and tokens per second (batch sizes 1 and 8) before pruning;
    :meth:`finish` measures the pruned model and adds both to the report as ``"generation"``."""

    def __init__(self, model: Any, tokenizer: Any, prompt: str, *, runs: int = 3):
        self.tokenizer, self.prompt, self.runs = tokenizer, prompt, runs
        self.before = self.measure(model)

    def measure(self, model: Any) -> dict[str, Any]:
        from neuroprune.tasks.generate import generation_check

        return generation_check(model, self.tokenizer, self.prompt, batch_sizes=(1, 8), runs=self.runs)

    def finish(self, result: Any) -> None:
        """Add ``{"prompt", "before", "after"}`` to ``result.report["generation"]``."""
        result.report["generation"] = {"prompt": self.prompt, "before": self.before, "after": self.measure(result.model)}
