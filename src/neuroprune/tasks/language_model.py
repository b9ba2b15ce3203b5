"""Causal language modelling: perplexity on held-out text, recovery by logit distillation.

:class:`LMTask` splits a list of documents (one per line of a text file; repeated lines kept
once) deterministically into test / validation / training documents, so no held-out text leaks
into calibration or distillation. Each split is tokenised with the model's tokenizer, the documents are joined with
the end-of-sequence token and packed into blocks of ``seq_len`` tokens (no padding). Then

* ``evaluate`` is the **perplexity** on ``"val"`` or ``"test"``: ``exp`` of the mean next-token
  cross-entropy over every predicted token of the split's blocks. Lower is better
  (``lower_is_better = True``), so the loop's ``tolerance`` is a relative rise: ``0.05`` allows
  5 % higher validation perplexity than the unpruned model's;
* ``loss`` (gradient criteria such as ``taylor``) is the language-modelling loss;
* ``calibration_batches`` are the first ``calibration_samples`` training blocks;
* ``distill_loss`` (recovery) is the KL divergence from the unpruned model's next-token
  distribution to the pruned model's, at ``temperature``, averaged over tokens, plus
  ``lm_weight`` times the LM loss; ``finetune`` runs :func:`~neuroprune.torch.recover.distill.distill`
  with it for at most ``distill_seconds``.

Example:
    >>> from neuroprune.models.lm_zoo import tiny_llama, train_tokenizer
    >>> docs = [f"the {w} sat on the mat number {i}." for i, w in enumerate(["cat", "dog", "cow"] * 20)]
    >>> tokenizer = train_tokenizer(docs, vocab_size=64)
    >>> task = LMTask(docs, tokenizer, seq_len=16, batch_size=4)
    >>> task.split_sizes()["test"] > 0, task.metric_name, task.lower_is_better
    (True, 'perplexity', True)
"""

from __future__ import annotations

import inspect
import math
import random
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuroprune.core.errors import ConfigError, DataError
from neuroprune.torch.modes import evaluation_mode
from neuroprune.torch.teacher import frozen_teacher
from neuroprune.tasks.classification import model_device_dtype
from neuroprune.tasks.metric_sums import evaluate_by_sums

SPLITS = ("train", "val", "test", "calibration")


def is_causal_lm(model: nn.Module) -> bool:
    """Whether ``model`` predicts the next token (a ``*ForCausalLM`` / ``*LMHeadModel``, decoder-only).

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> is_causal_lm(BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        ...                                   intermediate_size=64, vocab_size=50)))
        False
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    name = type(model).__name__
    return name.endswith(("ForCausalLM", "LMHeadModel"))


def split_documents(documents: list[str], val_fraction: float, test_fraction: float,
                    seed: int) -> dict[str, list[str]]:
    """Shuffle ``documents`` with ``seed`` and cut test, validation and training parts (each >= 1)."""
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    n = len(documents)
    test = max(1, round(n * test_fraction))
    val = max(1, round(n * val_fraction))
    shuffled = [documents[i] for i in order]
    return {"test": shuffled[:test], "val": shuffled[test:test + val], "train": shuffled[test + val:]}


def pack_blocks(token_lists: list[list[int]], seq_len: int, separator: int | None) -> torch.Tensor:
    """Join token lists (``separator`` between them) and cut the stream into ``(blocks, seq_len)``;
    the incomplete tail is dropped.

    Example:
        >>> pack_blocks([[1, 2, 3], [4, 5]], 3, 0)
        tensor([[1, 2, 3],
                [0, 4, 5]])
    """
    stream: list[int] = []
    for tokens in token_lists:
        if stream and separator is not None:
            stream.append(separator)
        stream.extend(tokens)
    blocks = len(stream) // seq_len
    return torch.tensor(stream[:blocks * seq_len], dtype=torch.long).reshape(blocks, seq_len)


class LMTask:
    """Perplexity of a causal language model on held-out text (see the module docstring).

    Args:
        documents: the text, one document (or sentence) per item; at least 3.
        tokenizer: the model's tokenizer (``AutoTokenizer.from_pretrained(folder)``).
        seq_len: tokens per block.
        batch_size: blocks per batch (calibration, distillation, evaluation).
        calibration_samples: training blocks used to score neurons and for reconstruction.
        val_fraction / test_fraction: shares of the documents held out for validation and test.
        val_blocks / test_blocks: most blocks evaluated per split (``None``: all), to bound the
            cost of every validation in the loop.
        seed: seed of the document split and of the training shuffles.
        distill_seconds: time budget of each distillation run (``None``: epochs only).
        lm_weight: weight of the LM loss added to the distillation KL (0: KL only).
        temperature: softening temperature of the distillation KL.
    """

    metric_name = "perplexity"
    lower_is_better = True
    capabilities = frozenset({"binds_to_model", "own_recovery", "distill_loss"})

    def __init__(self, documents: list[str], tokenizer: Any, *, seq_len: int = 128, batch_size: int = 8,
                 calibration_samples: int = 64, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 val_blocks: int | None = 64, test_blocks: int | None = None, seed: int = 0,
                 distill_seconds: float | None = None, lm_weight: float = 0.0, temperature: float = 1.0):
        documents = list(dict.fromkeys(d for d in (str(x).strip() for x in documents) if d))  # no copy leaks
        problems = [f"{name} must be >= 1, got {value}" for name, value in
                    (("seq_len", seq_len), ("batch_size", batch_size), ("calibration_samples", calibration_samples))
                    if value < 1]
        problems += [f"{name} must lie in (0, 0.5), got {value}" for name, value in
                     (("val_fraction", val_fraction), ("test_fraction", test_fraction)) if not 0 < value < 0.5]
        if distill_seconds is not None and distill_seconds <= 0:
            problems.append(f"distill_seconds must be > 0, got {distill_seconds}")
        if lm_weight < 0 or temperature <= 0:
            problems.append(f"lm_weight must be >= 0 and temperature > 0, got {lm_weight} and {temperature}")
        if problems:
            raise ConfigError(problems)
        if len(documents) < 3:
            raise DataError(f"a language-modelling task needs at least 3 documents (test, validation, training), "
                            f"got {len(documents)}")
        if tokenizer is None:
            raise DataError("a language-modelling task needs the model's tokenizer (AutoTokenizer.from_pretrained(folder))")
        self.tokenizer, self.seq_len, self.batch_size, self.seed = tokenizer, seq_len, batch_size, seed
        self.distill_seconds, self.lm_weight, self.temperature = distill_seconds, lm_weight, temperature
        self.documents = split_documents(documents, val_fraction, test_fraction, seed)
        separator = getattr(tokenizer, "eos_token_id", None)
        self.blocks: dict[str, torch.Tensor] = {}
        for split in ("train", "val", "test"):
            ids = tokenizer(self.documents[split], add_special_tokens=False)["input_ids"]
            self.blocks[split] = pack_blocks(ids, seq_len, separator)
        caps = {"val": val_blocks, "test": test_blocks}
        for split, cap in caps.items():
            if cap is not None:
                self.blocks[split] = self.blocks[split][:cap]
        self.blocks["calibration"] = self.blocks["train"][:calibration_samples]
        empty = [split for split in SPLITS if len(self.blocks[split]) == 0]
        if empty:
            counts = {split: sum(len(t) for t in tokenizer(self.documents[split], add_special_tokens=False)["input_ids"])
                      for split in ("train", "val", "test")}
            raise DataError(f"too little text for blocks of {seq_len} tokens: the {', '.join(empty)} split(s) hold "
                            f"none (tokens per split: {counts}); pass more text or a smaller --seq-len")
        self.teacher: nn.Module | None = None
        self.device: torch.device | None = None

    def split_sizes(self) -> dict[str, int]:
        """Blocks per split."""
        return {split: len(self.blocks[split]) for split in SPLITS}

    def bind(self, model: nn.Module) -> LMTask:
        """Use ``model``'s device; keep it (the first time only) as the frozen teacher (``frozen_teacher``: no second copy of an untouched clone)."""
        self.device, _ = model_device_dtype(model)
        if self.teacher is None:
            self.teacher = frozen_teacher(model)
        return self

    # -- batches ----------------------------------------------------------------------------------

    def _batch(self, blocks: torch.Tensor) -> torch.Tensor:
        return blocks.to(self.device or "cpu")

    def _split_batches(self, split: str) -> list[torch.Tensor]:
        blocks = self.blocks[split]
        return [self._batch(blocks[i:i + self.batch_size]) for i in range(0, len(blocks), self.batch_size)]

    def example_input(self) -> torch.Tensor:
        return self.make_input(2)

    def make_input(self, batch_size: int) -> torch.Tensor:
        """``(batch_size, seq_len)`` token ids of test blocks (cycled)."""
        blocks = self.blocks["test"]
        return self._batch(blocks[torch.arange(batch_size) % len(blocks)])

    def calibration_batches(self) -> list[torch.Tensor]:
        return self._split_batches("calibration")

    def train_batches(self, epoch: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        blocks = self.blocks["train"][torch.randperm(len(self.blocks["train"]), generator=generator)]
        return [self._batch(blocks[i:i + self.batch_size]) for i in range(0, len(blocks), self.batch_size)]

    # -- losses and metric -----------------------------------------------------------------------

    @staticmethod
    def logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(batch, tokens, vocab)`` (no key/value cache)."""
        kwargs: dict[str, Any] = {"input_ids": input_ids}
        if "use_cache" in inspect.signature(getattr(model, "module", model).forward).parameters:  # under DDP too
            kwargs["use_cache"] = False
        output = model(**kwargs)
        return output[0] if isinstance(output, tuple) else output.logits

    def _nll(self, logits: torch.Tensor, input_ids: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten(), reduction=reduction)

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of ``batch``."""
        return self._nll(self.logits(model, batch), batch)

    def distill_loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """``T^2 KL(teacher_T || student_T)`` per token, plus ``lm_weight`` times the LM loss."""
        if self.teacher is None:
            raise DataError("the language-modelling task is not bound yet: call task.bind(unpruned_model) first "
                            "(prune does)")
        logits = self.logits(model, batch).float()
        with torch.no_grad():
            target = self.logits(self.teacher, batch).float()
        t = self.temperature
        kl = F.kl_div(F.log_softmax(logits / t, dim=-1).flatten(0, 1), F.log_softmax(target / t, dim=-1).flatten(0, 1),
                      log_target=True, reduction="batchmean") * t * t
        return kl + self.lm_weight * self._nll(logits, batch) if self.lm_weight else kl

    def kl_to_teacher(self, model: nn.Module, split: str = "val") -> float:
        """Mean per-token KL divergence (temperature 1) from the teacher to ``model`` on ``split``."""
        if self.teacher is None:
            raise DataError("the language-modelling task is not bound yet: call task.bind(unpruned_model) first")
        total, count = 0.0, 0
        with evaluation_mode(model), torch.inference_mode():
            for batch in self._split_batches(split):
                logits = self.logits(model, batch).float().flatten(0, 1)
                target = self.logits(self.teacher, batch).float().flatten(0, 1)
                total += float(F.kl_div(F.log_softmax(logits, -1), F.log_softmax(target, -1), log_target=True,
                                        reduction="sum"))
                count += logits.shape[0]
        return total / count

    def evaluate(self, model: nn.Module, split: str) -> float:
        """Perplexity on ``split`` (eval mode; the model's mode is restored). Under torchrun each
        rank sums a share of the batches (:mod:`neuroprune.tasks.metric_sums`)."""
        return evaluate_by_sums(self, model, split)

    def metric_batches(self, split: str) -> list[torch.Tensor]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        return self._split_batches(split)

    def metric_sums(self, model: nn.Module, batch: torch.Tensor) -> tuple[float, int]:
        """(summed next-token NLL, predicted tokens) of one batch."""
        batch = batch.to(model_device_dtype(model)[0])
        return float(self._nll(self.logits(model, batch), batch, reduction="sum")), batch.shape[0] * (batch.shape[1] - 1)

    @staticmethod
    def metric_value(nll: float, tokens: float) -> float:
        return math.exp(nll / tokens)

    def finetune(self, model: nn.Module, *, epochs: int, learning_rate: float = 5e-5, progress: bool = True,
                 desc: str = "distilling") -> list[float]:
        """Recovery for the pruning loop: logit distillation against the teacher (``distill_seconds`` budget)."""
        from neuroprune.torch.recover.distill import distill

        return distill(model, self, epochs=epochs, max_seconds=self.distill_seconds, learning_rate=learning_rate,
                       progress=progress, desc=desc).losses
