"""Generation smoke check and decoding speed of a causal LM, for the report.

:func:`generation_check` continues one prompt greedily (so the text is reproducible) and
measures decoding throughput: new tokens per second with ``generate`` at each batch size (the
prompt repeated), from the fastest of a few timed runs after a warm-up (the run least disturbed by
other processes), every run producing exactly ``max_new_tokens`` tokens.

Example:
    >>> from neuroprune.models.lm_zoo import tiny_llama, train_tokenizer
    >>> tokenizer = train_tokenizer(["one two three four five six seven."], vocab_size=280)
    >>> check = generation_check(tiny_llama(tokenizer.vocab_size), tokenizer, "one two", max_new_tokens=4,
    ...                          batch_sizes=(1,), runs=1)
    >>> sorted(check), check["new_tokens"]
    (['new_tokens', 'text', 'tokens_per_second'], 4)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from neuroprune.core.errors import DataError
from neuroprune.torch.modes import evaluation_mode
from neuroprune.tasks.classification import model_device_dtype


def _generate(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, pad: int | None) -> torch.Tensor:
    return model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                          max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, pad_token_id=pad)


def generation_check(model: nn.Module, tokenizer: Any, prompt: str, *, max_new_tokens: int = 20,
                     batch_sizes: Sequence[int] = (1, 8), runs: int = 3) -> dict[str, Any]:
    """Greedy continuation of ``prompt`` and new tokens per second per batch size.

    Returns:
        ``{"text": continuation, "new_tokens": n, "tokens_per_second": {"batch_1": ..., ...}}``.
    """
    device, _ = model_device_dtype(model)
    tokens = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if not tokens:
        raise DataError(f"the generation prompt {prompt!r} gives no tokens; pass a prompt with some text (--prompt)")
    ids = torch.tensor([tokens], device=device)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    with evaluation_mode(model), torch.inference_mode():
        out = _generate(model, ids, max_new_tokens, pad)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        speed = {}
        for batch in batch_sizes:
            batch_ids = ids.expand(batch, -1).contiguous()
            _generate(model, batch_ids, max_new_tokens, pad)  # warm-up
            times = []
            for _ in range(runs):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                _generate(model, batch_ids, max_new_tokens, pad)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            speed[f"batch_{batch}"] = batch * max_new_tokens / min(times)
    return {"text": text, "new_tokens": max_new_tokens, "tokens_per_second": speed}


__all__ = ["generation_check"]
