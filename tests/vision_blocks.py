"""Self-contained copies of the attention and channel patterns of timm and torchvision models.

The main test environment has neither library, so each block reproduces its pattern line by line:
timm's ``Attention`` (fused qkv, SDPA or the softmax written out, merge with ``self.attn_dim`` or
with ``C`` read from the input as in older timm), a block with separate q/k/v projections, a
ViT block with ``DropPath``, torchvision's ``stochastic_depth`` and a ShuffleNetV2 unit with
``x.size()`` and the view-transpose-view channel shuffle.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TimmAttention(nn.Module):
    """timm ``Attention``: ``merge="attn_dim"`` as in timm 1.0, ``merge="C"`` as in timm 0.9."""

    def __init__(self, dim, num_heads=4, head_dim=None, qkv_bias=True, fused_attn=True, merge="attn_dim"):
        super().__init__()
        head_dim = head_dim or dim // num_heads
        self.num_heads, self.head_dim = num_heads, head_dim
        self.attn_dim = num_heads * head_dim
        self.scale = head_dim ** -0.5
        self.fused_attn, self.merge = fused_attn, merge
        self.qkv = nn.Linear(dim, self.attn_dim * 3, bias=qkv_bias)
        self.q_norm, self.k_norm = nn.Identity(), nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.proj = nn.Linear(self.attn_dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x, attn_mask=None):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = attn @ v
        if self.merge == "C":
            x = x.transpose(1, 2).reshape(B, N, C)
        else:
            x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        x = self.proj(x)
        return self.proj_drop(x)


class SeparateQKVAttention(nn.Module):
    """Separate projections: ``q(x).view(B, N, H, D).transpose(1, 2)``, explicit softmax."""

    def __init__(self, dim, n_heads=4):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, _ = x.shape
        q = self.q(x).view(B, N, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, N, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, N, self.n_heads, self.head_dim).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim ** 0.5, dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(B, N, -1))


def drop_path(x, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True):
    """timm's ``drop_path``, line for line."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A timm ViT block: pre-norm attention and MLP, each behind DropPath on the residual."""

    def __init__(self, dim, attn: nn.Module, hidden, drop_path_rate=0.1):
        super().__init__()
        self.norm1, self.attn, self.drop_path1 = nn.LayerNorm(dim), attn, DropPath(drop_path_rate)
        self.norm2, self.mlp, self.drop_path2 = nn.LayerNorm(dim), Mlp(dim, hidden), DropPath(drop_path_rate)

    def forward(self, x):
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class TinyViT(nn.Module):
    """Patch embedding, class token, position embedding, blocks, head on the class token."""

    def __init__(self, attn_factory, depth=2, dim=16, hidden=32, classes=3, patch=4, image=8):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        tokens = (image // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, attn_factory(dim), hidden) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's ``channel_shuffle``, line for line."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    x = x.view(batchsize, num_channels, height, width)
    return x


class InvertedResidual(nn.Module):
    """torchvision's ShuffleNetV2 unit (stride 1 keeps half the channels; stride 2 has two branches)."""

    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride = stride
        branch_features = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, bias=False), nn.BatchNorm2d(branch_features), nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, 1, bias=False),
            nn.BatchNorm2d(branch_features), nn.ReLU(inplace=True),
            nn.Conv2d(branch_features, branch_features, 3, stride, 1, groups=branch_features, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, bias=False), nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class TinyShuffleNet(nn.Module):
    def __init__(self, width=8, classes=3):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.stage = nn.Sequential(InvertedResidual(width, 2 * width, 2), InvertedResidual(2 * width, 2 * width, 1))
        self.conv5 = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 1, bias=False), nn.BatchNorm2d(4 * width), nn.ReLU(inplace=True))
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x):
        x = self.conv5(self.stage(self.conv1(x)))
        return self.fc(x.mean([2, 3]))


def stochastic_depth(input: torch.Tensor, p: float, mode: str, training: bool = True) -> torch.Tensor:
    """torchvision's ``stochastic_depth`` (wrapped for torch.fx as torchvision does)."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    size = [input.shape[0]] + [1] * (input.ndim - 1) if mode == "row" else [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype, device=input.device).bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return input * noise


# met by discovery under torchvision's own name, so the rule for the real function applies
stochastic_depth.__module__ = "torchvision.ops.stochastic_depth"
torch.fx.wrap("stochastic_depth")


def window_attention(input, qkv_weight, proj_weight, num_heads: int, qkv_bias=None, proj_bias=None):
    """The head logic of torchvision's ``shifted_window_attention`` (one window, no shift): a
    function that receives its weights, wrapped for torch.fx."""
    B, N, C = input.shape
    qkv = F.linear(input, qkv_weight, qkv_bias).reshape(B, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (C // num_heads) ** -0.5).matmul(k.transpose(-2, -1)).softmax(dim=-1)
    return F.linear(attn.matmul(v).transpose(1, 2).reshape(B, N, C), proj_weight, proj_bias)


torch.fx.wrap("window_attention")


class SwinStyleAttention(nn.Module):
    """torchvision ``ShiftedWindowAttention``: owns ``qkv``/``proj`` but passes their weights to a function."""

    def __init__(self, dim, num_heads=2):
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        return window_attention(x, self.qkv.weight, self.proj.weight, self.num_heads, self.qkv.bias, self.proj.bias)


class StochasticDepthBlock(nn.Module):
    """A residual MLP block behind torchvision's ``stochastic_depth`` (as in EfficientNet/Swin)."""

    def __init__(self, dim, hidden, p=0.2):
        super().__init__()
        self.p, self.mlp = p, Mlp(dim, hidden)

    def forward(self, x):
        return x + stochastic_depth(self.mlp(x), self.p, "row", self.training)


class MaxViTStyleAttention(nn.Module):
    """torchvision MaxViT's ``RelativePositionalMultiHeadAttention``: chunked qkv, einsum, merge
    with the width read from ``x.size()``; ``bias=True`` adds its per-head positional bias."""

    def __init__(self, feat_dim, head_dim, max_seq_len, bias=False):
        super().__init__()
        self.n_heads, self.head_dim = feat_dim // head_dim, head_dim
        self.to_qkv = nn.Linear(feat_dim, self.n_heads * self.head_dim * 3)
        self.scale_factor = feat_dim ** -0.5
        self.merge = nn.Linear(self.head_dim * self.n_heads, feat_dim)
        self.bias = nn.Parameter(torch.randn(1, self.n_heads, max_seq_len, max_seq_len) * 0.02) if bias else None

    def forward(self, x):
        B, G, P, D = x.size()
        H, DH = self.n_heads, self.head_dim
        q, k, v = torch.chunk(self.to_qkv(x), 3, dim=-1)
        q = q.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        k = k.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        v = v.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        k = k * self.scale_factor
        dot_prod = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k)
        if self.bias is not None:
            dot_prod = dot_prod + self.bias
        dot_prod = F.softmax(dot_prod, dim=-1)
        out = torch.einsum("B G H I J, B G H J D -> B G H I D", dot_prod, v)
        out = out.permute(0, 1, 3, 2, 4).reshape(B, G, P, D)
        return self.merge(out)
