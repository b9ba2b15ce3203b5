"""The zoo's sequence models: a bidirectional LSTM and a small transformer encoder.

Example:
    >>> import torch
    >>> bilstm()(torch.zeros(2, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from neuroprune.core.errors import ConfigError
from neuroprune.models.arguments import require_positive

# --------------------------------------------------------------------------- sequence models


class BiLSTM(nn.Module):
    """Bidirectional LSTM; the last layer's final forward and backward states feed a Linear.

    Example:
        >>> BiLSTM()(torch.zeros(2, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, num_classes: int = 10, input_size: int = 8, hidden_size: int = 64, num_layers: int = 2
    ):
        super().__init__()
        require_positive(
            num_classes=num_classes, input_size=input_size, hidden_size=hidden_size, num_layers=num_layers
        )
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_n = self.lstm(x)[1][0]  # (num_layers * 2, N, hidden); indexing keeps fx tracing simple
        return self.fc(torch.cat([h_n[-2], h_n[-1]], dim=1))


def bilstm(
    num_classes: int = 10, input_size: int = 8, hidden_size: int = 64, num_layers: int = 2
) -> BiLSTM:
    """Build :class:`BiLSTM` for (N, T, input_size) sequences."""
    return BiLSTM(num_classes, input_size, hidden_size, num_layers)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))``, then ``x + ffn(ln2(x))``."""

    def __init__(self, d_model: int, num_heads: int, ffn_mult: int = 4):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(d_model, ffn_mult * d_model),
                act=nn.GELU(),
                fc2=nn.Linear(ffn_mult * d_model, d_model),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ffn(self.ln2(x))


class TransformerClassifier(nn.Module):
    """Small transformer encoder over (N, seq_len, input_size) sequences, mean-pooled.

    Example:
        >>> TransformerClassifier()(torch.zeros(2, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_size: int = 8,
        seq_len: int = 8,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
    ):
        super().__init__()
        require_positive(
            num_classes=num_classes,
            input_size=input_size,
            seq_len=seq_len,
            d_model=d_model,
            num_heads=num_heads,
            num_layers=num_layers,
        )
        if d_model % num_heads:
            raise ConfigError([f"d_model ({d_model}) must be divisible by num_heads ({num_heads})"])
        self.embed = nn.Linear(input_size, d_model)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(d_model, num_heads) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


def transformer(
    num_classes: int = 10,
    input_size: int = 8,
    seq_len: int = 8,
    d_model: int = 64,
    num_heads: int = 4,
    num_layers: int = 2,
) -> TransformerClassifier:
    """Build :class:`TransformerClassifier`; sequences must be exactly ``seq_len`` long."""
    return TransformerClassifier(num_classes, input_size, seq_len, d_model, num_heads, num_layers)
