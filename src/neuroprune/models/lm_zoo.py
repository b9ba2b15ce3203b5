"""Small causal language models and tokenizers built offline (tests, docs, the LLM benchmark).

Nothing here downloads anything: :func:`train_tokenizer` fits a byte-level BPE tokenizer on the
given text in a fraction of a second, and :func:`tiny_llama` builds a LLaMA-style
``LlamaForCausalLM`` with random weights (seeded) of any size.

Example:
    >>> tokenizer = train_tokenizer(["a small example text.", "another line of text."], vocab_size=300)
    >>> model = tiny_llama(tokenizer.vocab_size, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64)
    >>> type(model).__name__, model.config.num_key_value_heads
    ('LlamaForCausalLM', 2)
"""

from __future__ import annotations

from typing import Any

import torch


def train_tokenizer(texts: list[str], vocab_size: int = 2048) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` fitted on ``texts``, with ``<eos>`` (also padding).

    Byte-level: every string can be encoded, whatever characters it holds.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<eos>",
                                   bos_token="<eos>", unk_token=None)


def tiny_llama(vocab_size: int, *, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
               intermediate: int = 64, max_positions: int = 512, tie_embeddings: bool = True, seed: int = 0):
    """A random-weight ``LlamaForCausalLM`` (eval mode) with ``heads`` query heads in ``kv_heads`` groups."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         head_dim=hidden // heads, max_position_embeddings=max_positions,
                         tie_word_embeddings=tie_embeddings, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


__all__ = ["tiny_llama", "train_tokenizer"]
