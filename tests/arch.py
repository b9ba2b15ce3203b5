"""Random architectures for the property tests, built from a static list of block specs.

Each spec is a tuple; the model's forward walks the specs with Python control flow over
constants only, so torch.fx unrolls it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

CONV_BLOCKS = ["conv", "residual", "concat", "depthwise", "grouped", "glu", "groupnorm", "se"]
SEQ_BLOCKS = ["lstm", "gru", "attention", "ffn"]


class RandomConvNet(nn.Module):
    """Image model: a chain of conv blocks, then flatten into a Linear head."""

    def __init__(self, specs, in_channels=2, size=6, classes=3):
        super().__init__()
        self.specs = list(specs)
        self.blocks = nn.ModuleList()
        c = in_channels
        for kind, width, bn in self.specs:
            block = nn.ModuleDict()
            if kind == "conv":
                block["conv"] = nn.Conv2d(c, width, 3, padding=1)
                block["norm"] = nn.BatchNorm2d(width) if bn else nn.Identity()
                c = width
            elif kind == "residual":
                block["conv1"] = nn.Conv2d(c, width, 3, padding=1)
                block["norm1"] = nn.BatchNorm2d(width) if bn else nn.Identity()
                block["conv2"] = nn.Conv2d(width, c, 3, padding=1)
                block["norm2"] = nn.BatchNorm2d(c) if bn else nn.Identity()
            elif kind == "concat":
                block["a"] = nn.Conv2d(c, width, 1)
                block["b"] = nn.Conv2d(c, width + 1, 3, padding=1)
                c = 2 * width + 1
            elif kind == "depthwise":
                block["dw"] = nn.Conv2d(c, c * 2, 3, padding=1, groups=c)
                block["norm"] = nn.BatchNorm2d(c * 2) if bn else nn.Identity()
                block["pw"] = nn.Conv2d(c * 2, width, 1)
                c = width
            elif kind == "grouped":
                block["expand"] = nn.Conv2d(c, 2 * width, 1)
                block["grouped"] = nn.Conv2d(2 * width, 2 * width, 3, padding=1, groups=2)
                c = 2 * width
            elif kind == "glu":
                block["conv"] = nn.Conv2d(c, 2 * width, 1)
                c = width
            elif kind == "groupnorm":
                block["conv"] = nn.Conv2d(c, 2 * width, 3, padding=1)
                block["norm"] = nn.GroupNorm(width, 2 * width)
                c = 2 * width
            elif kind == "se":
                block["squeeze"] = nn.Linear(c, width)
                block["excite"] = nn.Linear(width, c)
            self.blocks.append(block)
        self.head1 = nn.Linear(c * size * size, 7)
        self.norm = nn.LayerNorm(7)
        self.head2 = nn.Linear(7, classes)

    def forward(self, x):
        for (kind, _, _), block in zip(self.specs, self.blocks):
            if kind == "conv":
                x = F.relu(block["norm"](block["conv"](x)))
            elif kind == "residual":
                h = F.relu(block["norm1"](block["conv1"](x)))
                x = F.relu(x + block["norm2"](block["conv2"](h)))
            elif kind == "concat":
                x = torch.cat([block["a"](x), F.relu(block["b"](x))], dim=1)
            elif kind == "depthwise":
                x = block["pw"](F.relu(block["norm"](block["dw"](x))))
            elif kind == "grouped":
                x = F.relu(block["grouped"](block["expand"](x)))
            elif kind == "glu":
                a, b = block["conv"](x).chunk(2, dim=1)
                x = a * torch.sigmoid(b)
            elif kind == "groupnorm":
                x = F.relu(block["norm"](block["conv"](x)))
            elif kind == "se":
                s = x.mean(dim=(2, 3))
                s = torch.sigmoid(block["excite"](F.relu(block["squeeze"](s))))
                x = x * s[:, :, None, None]
        return self.head2(F.relu(self.norm(self.head1(torch.flatten(x, 1)))))


class RandomSequenceNet(nn.Module):
    """Sequence model: Linear embedding, then recurrent / attention / feed-forward blocks."""

    def __init__(self, specs, features=4, d_model=8, classes=3):
        super().__init__()
        self.specs = list(specs)
        self.embed = nn.Linear(features, d_model)
        self.blocks = nn.ModuleList()
        d = d_model
        for kind, width, flag in self.specs:
            block = nn.ModuleDict()
            if kind in ("lstm", "gru"):
                cls = nn.LSTM if kind == "lstm" else nn.GRU
                block["rnn"] = cls(d, width, num_layers=1 + int(flag), batch_first=True, bidirectional=flag)
                d = width * (2 if flag else 1)
            elif kind == "attention":
                heads = 2
                block["proj"] = nn.Linear(d, 2 * heads * 2)  # width divisible by heads
                block["attn"] = nn.MultiheadAttention(2 * heads * 2, heads, batch_first=True)
                block["norm"] = nn.LayerNorm(2 * heads * 2)
                d = 2 * heads * 2
            elif kind == "ffn":
                block["up"] = nn.Linear(d, width)
                block["down"] = nn.Linear(width, d)
                block["norm"] = nn.LayerNorm(d) if flag else nn.Identity()
            self.blocks.append(block)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.embed(x)
        for (kind, _, _), block in zip(self.specs, self.blocks):
            if kind in ("lstm", "gru"):
                x = block["rnn"](x)[0]
            elif kind == "attention":
                h = block["proj"](x)
                x = block["norm"](h + block["attn"](h, h, h, need_weights=False)[0])
            elif kind == "ffn":
                x = block["norm"](x + block["down"](F.gelu(block["up"](x))))
        return self.head(x.mean(dim=1))


conv_specs = st.lists(st.tuples(st.sampled_from(CONV_BLOCKS), st.integers(2, 5), st.booleans()), min_size=1, max_size=4)
seq_specs = st.lists(st.tuples(st.sampled_from(SEQ_BLOCKS), st.integers(2, 6), st.booleans()), min_size=1, max_size=3)


def build(kind: str, specs, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = RandomConvNet(specs) if kind == "conv" else RandomSequenceNet(specs)
    return model.eval()


def example_input(kind: str, seed: int, batch: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 2, 6, 6) if kind == "conv" else (batch, 5, 4)
    return torch.randn(*shape, generator=generator)
