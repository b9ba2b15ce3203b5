"""Sentence embeddings without labels: fidelity to the unpruned model is the quality measure.

:class:`TextTask` splits a list of sentences deterministically (test / validation / training, the
calibration batches being the first training sentences), tokenises them with the model's
tokenizer and embeds them the way sentence-transformers does for MiniLM: mean pooling over the
real (non-padding) tokens of the last hidden state, then L2 normalisation. When the task is bound
to the unpruned model (``prune`` does this), the teacher's embeddings of every split are computed
once; afterwards

* ``evaluate`` is the *fidelity*: the mean cosine similarity between a model's embeddings and the
  teacher's, on ``"val"`` or ``"test"``;
* ``token_mask`` is the attention mask, so activation statistics and reconstruction skip padding;
* ``loss`` (used by gradient criteria) is an in-batch contrastive loss against the teacher's
  embeddings (InfoNCE, temperature 0.05): each sentence's embedding must be closer to its own
  teacher embedding than to the other sentences' ones. A plain MSE to the teacher would be exactly
  zero, with zero gradient, on the unpruned model, so first-order (Taylor) scores would all be
  zero; the contrastive loss has a gradient there, and it rewards what fidelity and nearest
  neighbours need: embeddings that keep sentences apart the way the teacher does;
* ``distill_loss`` (recovery) is the MSE between normalised embeddings (``2 - 2 cos``) against the
  teacher, optionally plus the MSE of every layer's hidden states (``distill_hidden``);
  ``finetune`` runs :func:`~neuroprune.torch.recover.distill.distill` with it, so the loop's fine-tuning
  *is* distillation, limited by ``distill_seconds``.

Example:
    >>> task = TextTask(["a b c", "d e f", "g h i", "j k l", "m n o"], tokenizer=None)
    >>> task.split_sizes()
    {'train': 3, 'val': 1, 'test': 1, 'calibration': 3}
"""

from __future__ import annotations

import ast
import inspect
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuroprune.core.errors import DataError
from neuroprune.torch.modes import evaluation_mode
from neuroprune.torch.teacher import frozen_teacher
from neuroprune.tasks.classification import model_device_dtype
from neuroprune.tasks.metric_sums import evaluate_by_sums

SPLITS = ("train", "val", "test", "calibration")


def read_sentences(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, stripped (one sentence per line).

    Example:
        >>> read_sentences("sentences.txt")[:2]  # doctest: +SKIP
        ['Return the sum of a and b.', 'Open a file.']
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"text file {str(path)!r} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text: {error}") from error
    sentences = [line.strip() for line in lines if line.strip()]
    if len(sentences) < 3:
        raise DataError(f"{path} has {len(sentences)} non-empty lines; at least 3 are needed (test, validation, training)")
    return sentences


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def docstring_sentences(roots: list[str | Path], limit: int | None = None, *, seed: int = 0, min_words: int = 6,
                        max_words: int = 40) -> list[str]:
    """English sentences from the docstrings of the Python files under ``roots`` (offline text).

    Source files are parsed with :mod:`ast`, nothing is imported; module, class and function
    docstrings are split into sentences, code-like and very short or long ones are dropped,
    duplicates removed, and the result is shuffled with ``seed``. Test folders are skipped.

    Example:
        >>> import numpy, os
        >>> len(docstring_sentences([os.path.dirname(numpy.__file__)], 50))
        50
    """
    seen: set[str] = set()
    sentences = []
    for root in map(Path, roots):
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).parts
            if parts[0] in ("site-packages", "dist-packages") or any(p in ("test", "tests", "idle_test") for p in parts):
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for sentence in _docstring_sentences(ast.get_docstring(node) or "", min_words, max_words):
                    if sentence not in seen:
                        seen.add(sentence)
                        sentences.append(sentence)
    random.Random(seed).shuffle(sentences)
    return sentences[:limit] if limit is not None else sentences


def _docstring_sentences(doc: str, min_words: int, max_words: int) -> Iterator[str]:
    for paragraph in re.split(r"\n\s*\n", doc):
        text = " ".join(paragraph.split())
        for sentence in _SENTENCE_END.split(text):
            if not (min_words <= len(sentence.split()) <= max_words):
                continue
            if not sentence[0].isupper() or sentence[-1] not in ".!?" or re.search(r">>>|[{}\[\]=_<>|\\`$^~]|::|--| : ", sentence):
                continue
            if sum(c.isalpha() for c in sentence) < 0.75 * len(sentence.replace(" ", "")):
                continue
            yield sentence


def stdlib_sentences(limit: int | None = None, *, seed: int = 0, min_words: int = 6, max_words: int = 40) -> list[str]:
    """Sentences from the docstrings of Python's standard library (see :func:`docstring_sentences`).

    Example:
        >>> len(stdlib_sentences(100))
        100
    """
    return docstring_sentences([sysconfig.get_paths()["stdlib"]], limit, seed=seed, min_words=min_words,
                               max_words=max_words)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (batch, tokens, dim) over the tokens where ``mask`` is 1."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)


def neighbour_agreement(student: torch.Tensor, teacher: torch.Tensor, k: int = 10) -> float:
    """Mean overlap of each sentence's top-``k`` nearest neighbours (cosine, itself excluded).

    Example:
        >>> e = F.normalize(torch.randn(50, 8), dim=1)
        >>> neighbour_agreement(e, e)
        1.0
    """
    k = min(k, len(teacher) - 1)
    if k < 1:
        return 1.0

    def top(e: torch.Tensor) -> torch.Tensor:
        e = F.normalize(e.float(), dim=1)
        sims = e @ e.T
        sims.fill_diagonal_(-float("inf"))
        return sims.topk(k, dim=1).indices

    a, b = top(student), top(teacher)
    overlap = (a.unsqueeze(2) == b.unsqueeze(1)).any(dim=2).float().sum(dim=1) / k
    return float(overlap.mean())


def fidelity_summary(student: torch.Tensor, teacher: torch.Tensor, k: int = 10) -> dict[str, float]:
    """Mean and 5th-percentile cosine similarity, and top-``k`` neighbour agreement."""
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=1)
    return {"cosine_mean": float(cos.mean()), "cosine_p5": float(torch.quantile(cos, 0.05)),
            f"neighbours_top{k}": neighbour_agreement(student, teacher, k)}


def _split(sentences: list[str], val: int, test: int, seed: int) -> dict[str, list[str]]:
    n = len(sentences)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    test = max(1, min(test, n // 5))
    val = max(1, min(val, n // 5))
    shuffled = [sentences[i] for i in order]
    return {"test": shuffled[:test], "val": shuffled[test:test + val], "train": shuffled[test + val:]}


class TextTask:
    """Fidelity of sentence embeddings to the unpruned model (see the module docstring).

    Args:
        sentences: the text, one sentence per item (at least 3).
        tokenizer: the model's tokenizer (``AutoTokenizer.from_pretrained(folder)``).
        batch_size: sentences per batch (calibration, training, evaluation).
        calibration_samples: training sentences used to score neurons and for reconstruction.
        val_samples / test_samples: sizes of the validation and test splits (at most a fifth of
            the sentences each).
        train_samples: cap on the training split (distillation data), ``None`` for all.
        train_sentences: more sentences for the training split only (e.g. a larger corpus for
            distillation than the text evaluated on); copies of validation or test sentences are
            dropped. Calibration sentences always come from ``sentences``.
        max_length: tokens per sentence at most.
        seed: seed of the split and of the training shuffles.
        distill_seconds: time budget of each distillation run (``None``: epochs only).
        distill_hidden: weight of the per-layer hidden-state MSE in ``distill_loss`` (0: embeddings only).
        temperature: temperature of the contrastive scoring loss.
    """

    metric_name = "fidelity"
    lower_is_better = False
    capabilities = frozenset({"binds_to_model", "token_mask", "own_recovery", "distill_loss", "fingerprint"})

    def __init__(self, sentences: list[str], tokenizer: Any, *, batch_size: int = 32, calibration_samples: int = 256,
                 val_samples: int = 256, test_samples: int = 500, train_samples: int | None = None,
                 train_sentences: list[str] | None = None, max_length: int = 128, seed: int = 0,
                 distill_seconds: float | None = None,
                 distill_hidden: float = 0.0, temperature: float = 0.05):
        sentences = [s for s in (str(x).strip() for x in sentences) if s]
        if len(sentences) < 3:
            raise DataError(f"a text task needs at least 3 sentences, got {len(sentences)}")
        problems = [f"{name} must be >= 1, got {value}" for name, value in
                    (("batch_size", batch_size), ("calibration_samples", calibration_samples),
                     ("val_samples", val_samples), ("test_samples", test_samples), ("max_length", max_length))
                    if value < 1]
        if distill_seconds is not None and distill_seconds <= 0:
            problems.append(f"distill_seconds must be > 0, got {distill_seconds}")
        if problems:
            raise DataError("; ".join(problems))
        self.tokenizer, self.batch_size, self.max_length, self.seed = tokenizer, batch_size, max_length, seed
        self.distill_seconds, self.distill_hidden, self.temperature = distill_seconds, distill_hidden, temperature
        self.sentences = _split(sentences, val_samples, test_samples, seed)
        self.sentences["calibration"] = self.sentences["train"][:calibration_samples]
        if train_sentences:
            held_out = set(self.sentences["val"]) | set(self.sentences["test"]) | set(self.sentences["train"])
            extra = list(dict.fromkeys(s for s in (str(x).strip() for x in train_sentences) if s and s not in held_out))
            self.sentences["train"] = self.sentences["train"] + extra
        if train_samples is not None:
            self.sentences["train"] = self.sentences["train"][:max(train_samples, len(self.sentences["calibration"]))]
        self.targets: dict[str, torch.Tensor] = {}
        self.teacher: nn.Module | None = None
        self.device: torch.device | None = None
        self._cache: dict[str, list[dict[str, torch.Tensor]]] = {}

    def split_sizes(self) -> dict[str, int]:
        return {name: len(self.sentences[name]) for name in SPLITS}

    def fingerprint(self) -> str:
        """A sha256 of the sentences of every split and the batching settings."""
        from neuroprune.torch.fingerprint import fingerprint_values

        return fingerprint_values(self.sentences, [self.batch_size, self.max_length, self.seed])

    # -- binding and batches -------------------------------------------------------------------

    def bind(self, model: nn.Module) -> TextTask:
        """Compute the teacher's embeddings with ``model`` (the first time only) and use its device."""
        self.device, _ = model_device_dtype(model)
        if not self.targets:
            for split in SPLITS:
                self.targets[split] = self.embeddings(model, split, use_targets=False)
            if self.distill_hidden:
                self.teacher = frozen_teacher(model)
        return self

    def _tokenize(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        if self.tokenizer is None:
            raise DataError("this text task has no tokenizer; pass the model's (AutoTokenizer.from_pretrained(folder))")
        encoded = self.tokenizer(sentences, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        device = self.device or "cpu"
        return {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}

    def _batches(self, split: str, order: list[int] | None = None, targets: bool = True) -> list[dict[str, torch.Tensor]]:
        sentences = self.sentences[split]
        order = list(range(len(sentences))) if order is None else order
        if targets and split not in self.targets:
            raise DataError("the text task is not bound yet: call task.bind(unpruned_model) first (prune does)")
        batches = []
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            batch = self._tokenize([sentences[i] for i in index])
            batch["index"] = torch.tensor(index)
            if targets:
                batch["target"] = self.targets[split][index].to(batch["input_ids"].device)
            batches.append(batch)
        return batches

    def _length_order(self, split: str) -> list[int]:
        sentences = self.sentences[split]
        return sorted(range(len(sentences)), key=lambda i: len(sentences[i]))

    def example_input(self) -> dict[str, torch.Tensor]:
        return self.make_input(2)

    def make_input(self, batch_size: int) -> dict[str, torch.Tensor]:
        """``{"input_ids": ..., "attention_mask": ...}`` of ``batch_size`` test sentences (cycled), passed
        by keyword (``model(**inputs)``): models whose second positional argument is not the attention
        mask (GPT-2's is ``past_key_values``) are measured correctly too."""
        sentences = self.sentences["test"]
        return self._tokenize([sentences[i % len(sentences)] for i in range(batch_size)])

    def calibration_batches(self) -> list[dict[str, torch.Tensor]]:
        """Calibration sentences in batches of similar length (little padding), the same every call."""
        if "calibration" not in self._cache:
            self._cache["calibration"] = self._batches("calibration", self._length_order("calibration"))
        return self._cache["calibration"]

    def train_batches(self, epoch: int) -> list[dict[str, torch.Tensor]]:
        """Shuffled training batches; sentences of similar length are batched together (within
        shuffled chunks of 16 batches), so little compute goes to padding."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        sentences = self.sentences["train"]
        order = torch.randperm(len(sentences), generator=generator).tolist()
        chunk = 16 * self.batch_size
        order = [i for start in range(0, len(order), chunk)
                 for i in sorted(order[start:start + chunk], key=lambda i: len(sentences[i]))]
        starts = list(range(0, len(order), self.batch_size))
        starts = [starts[i] for i in torch.randperm(len(starts), generator=generator).tolist()]
        return [self._batches("train", order[start:start + self.batch_size])[0] for start in starts]

    def token_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The attention mask: 1 for real tokens, 0 for padding."""
        return batch["attention_mask"]

    # -- embeddings, losses, metric -------------------------------------------------------------

    def encode(self, model: nn.Module, batch: dict[str, torch.Tensor], hidden_states: bool = False):
        """Normalised sentence embeddings of ``batch`` (and all hidden states if asked)."""
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if "use_cache" in inspect.signature(getattr(model, "module", model).forward).parameters:  # under DDP too
            kwargs["use_cache"] = False
        if hidden_states:
            kwargs["output_hidden_states"] = True
        output = model(**kwargs)
        last = output[0] if isinstance(output, tuple) else output.last_hidden_state
        embedding = F.normalize(mean_pool(last, batch["attention_mask"]).float(), dim=-1)
        return (embedding, output.hidden_states) if hidden_states else embedding

    def embeddings(self, model: nn.Module, split: str, *, use_targets: bool = True) -> torch.Tensor:
        """Normalised embeddings of every sentence of ``split`` (eval mode; the mode is restored)."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        out: torch.Tensor | None = None
        with evaluation_mode(model), torch.inference_mode():
            for batch in self._batches(split, self._length_order(split), targets=False):
                embedding = self.encode(model, batch).cpu()
                if out is None:
                    out = torch.empty(len(self.sentences[split]), embedding.shape[1])
                out[batch["index"]] = embedding
        return out

    def evaluate(self, model: nn.Module, split: str) -> float:
        """Fidelity: mean cosine similarity to the unpruned model's embeddings on ``split``. Under
        torchrun each rank sums a share of the batches (:mod:`neuroprune.tasks.metric_sums`)."""
        return evaluate_by_sums(self, model, split)

    def metric_batches(self, split: str) -> list[dict[str, torch.Tensor]]:
        if split not in self.targets:
            raise DataError("the text task is not bound yet: call task.bind(unpruned_model) first (prune does)")
        return self._batches(split, self._length_order(split))

    def metric_sums(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
        """(summed cosine similarity to the teacher's embeddings, sentences) of one batch."""
        embedding = self.encode(model, batch).cpu()
        return float((embedding * batch["target"].cpu()).sum(dim=1).sum(dtype=torch.float64)), len(embedding)

    @staticmethod
    def metric_value(similarity: float, sentences: float) -> float:
        return similarity / sentences

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Contrastive (InfoNCE) loss of the model's embeddings against the teacher's."""
        embedding = self.encode(model, batch)
        logits = embedding @ batch["target"].T / self.temperature
        return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))

    def distill_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """MSE of normalised embeddings against the teacher (+ hidden states, see ``distill_hidden``)."""
        if not self.distill_hidden or self.teacher is None:
            embedding = self.encode(model, batch)
            return (embedding - batch["target"]).pow(2).sum(dim=1).mean()
        embedding, hidden = self.encode(model, batch, hidden_states=True)
        with torch.no_grad():
            _, teacher_hidden = self.encode(self.teacher, batch, hidden_states=True)
        mask = batch["attention_mask"].unsqueeze(-1).to(embedding.dtype)
        layers = sum(((h - t).pow(2) * mask).sum() / (mask.sum() * h.shape[-1]) for h, t in zip(hidden[1:], teacher_hidden[1:]))
        return (embedding - batch["target"]).pow(2).sum(dim=1).mean() + self.distill_hidden * layers / (len(hidden) - 1)

    def finetune(self, model: nn.Module, *, epochs: int, learning_rate: float = 5e-5, progress: bool = True,
                 desc: str = "distilling") -> list[float]:
        """Recovery for the pruning loop: distillation against the teacher (``distill_seconds`` budget)."""
        from neuroprune.torch.recover.distill import distill

        return distill(model, self, epochs=epochs, max_seconds=self.distill_seconds, learning_rate=learning_rate,
                       progress=progress, desc=desc).losses
