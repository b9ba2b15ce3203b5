"""Where each Hugging Face family keeps the parts of a transformer block, and the groups they give.

A :class:`BlockLayout` names, relative to a block, the attention projections (separate q/k/v or
one fused projection), the FFN projections and the config fields that describe their sizes.
:func:`find_blocks` walks the model and keeps every module whose sub-paths fit a layout (the
projections must exist and be ``nn.Linear`` or transformers' ``Conv1D``), so a family is
recognised by its structure, not its class name: LLaMA, Mistral, Qwen2 and Gemma share one layout,
OPT, Whisper (and BART-like models) another.

Example:
    >>> from transformers import GPT2Config, GPT2Model
    >>> model = GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=50, n_positions=16))
    >>> [(b.path, b.layout.family, b.head_dim) for b in find_blocks(model)]
    [('h.0', 'gpt2', 8), ('h.1', 'gpt2', 8)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch.nn as nn

from neuroprune.core.errors import UnsupportedModuleError
from neuroprune.core.groups import Group, GroupMember
from neuroprune.torch.layers.hf_conv1d import Conv1D


@dataclass(frozen=True)
class AttentionLayout:
    """One attention of a block. ``fused`` names a projection computing ``[q | k | v]`` at once
    (GPT-2's ``c_attn``, Phi-3's ``qkv_proj``) instead of ``query``/``key``/``value``."""

    name: str  # group name relative to the block (``<block>.<name>:heads``)
    module: str  # module holding the head-count attributes
    out: str  # output projection (reads the heads)
    query: str = ""
    key: str = ""
    value: str = ""
    fused: str = ""
    optional: bool = False  # cross-attention: only decoder blocks have it
    #: heads are tied across every block of the stack (T5: layer 0's relative position bias,
    #: one column per head, is reused by all layers), so one group spans the stack
    shared: bool = False
    bias_table: str = ""  # ``nn.Embedding`` with one column per head (T5's relative position bias)
    cross: bool = False  # reported as cross-attention heads

    def projections(self) -> tuple[str, ...]:
        return (self.fused, self.out) if self.fused else (self.query, self.key, self.value, self.out)


@dataclass(frozen=True)
class FfnLayout:
    """An FFN: ``ins`` produce the intermediate neurons, ``out`` reads them. ``fused``: ``ins[0]``
    computes ``[gate | up]`` halves at once (Phi-3's ``gate_up_proj``)."""

    name: str  # group name relative to the block
    ins: tuple[str, ...]
    out: str
    fused: bool = False


@dataclass(frozen=True)
class ConfigFields:
    """Config fields holding the sizes; ``{stack}`` becomes ``encoder``/``decoder`` (the first name
    the config has wins). ``head_dim`` is the field the model reads the head size from, empty where
    the head size is derived as ``hidden_size // heads`` (then pruned heads cannot be expressed)."""

    ffn: tuple[str, ...] = ("intermediate_size",)
    heads: tuple[str, ...] = ("num_attention_heads",)
    kv_heads: tuple[str, ...] = ()
    head_dim: str = ""


@dataclass(frozen=True)
class BlockLayout:
    """One family's transformer block: its attentions (optional ones may be missing), its FFN
    (alternatives, the first one present wins) and the config fields holding their sizes."""

    family: str
    attentions: tuple[AttentionLayout, ...]
    ffns: tuple[FfnLayout, ...]
    fields: ConfigFields = ConfigFields()
    #: the attention module reads the head counts from its ``config`` (Phi-3 slices the fused
    #: qkv output with ``config.num_attention_heads``): per-layer counts get a per-module config
    config_heads: bool = False


def _t5_ffns() -> tuple[FfnLayout, ...]:
    ffns = []
    for index in (1, 2):  # encoder blocks: self-attention, FFN; decoder: self, cross, FFN
        base = f"layer.{index}.DenseReluDense"
        ffns.append(FfnLayout(base, (f"{base}.wi_0", f"{base}.wi_1"), f"{base}.wo"))
        ffns.append(FfnLayout(base, (f"{base}.wi",), f"{base}.wo"))
    return tuple(ffns)


_BART_ATTENTIONS = (
    AttentionLayout("self_attn", "self_attn", "self_attn.out_proj", "self_attn.q_proj", "self_attn.k_proj",
                    "self_attn.v_proj"),
    AttentionLayout("encoder_attn", "encoder_attn", "encoder_attn.out_proj", "encoder_attn.q_proj",
                    "encoder_attn.k_proj", "encoder_attn.v_proj", optional=True, cross=True),
)
_LLAMA_ATTENTION = AttentionLayout("self_attn", "self_attn", "self_attn.o_proj", "self_attn.q_proj",
                                   "self_attn.k_proj", "self_attn.v_proj")
_HEAD_DIM = ConfigFields(kv_heads=("num_key_value_heads",), head_dim="head_dim")

LAYOUTS = (
    BlockLayout("bert", (AttentionLayout("attention", "attention.self", "attention.output.dense",
                                         "attention.self.query", "attention.self.key", "attention.self.value"),),
                (FfnLayout("intermediate.dense", ("intermediate.dense",), "output.dense"),)),
    BlockLayout("llama", (_LLAMA_ATTENTION,),
                (FfnLayout("mlp", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),), _HEAD_DIM),
    BlockLayout("phi3", (AttentionLayout("self_attn", "self_attn", "self_attn.o_proj", fused="self_attn.qkv_proj"),),
                (FfnLayout("mlp", ("mlp.gate_up_proj",), "mlp.down_proj", fused=True),), _HEAD_DIM, config_heads=True),
    BlockLayout("phi", (AttentionLayout("self_attn", "self_attn", "self_attn.dense", "self_attn.q_proj",
                                        "self_attn.k_proj", "self_attn.v_proj"),),
                (FfnLayout("mlp", ("mlp.fc1",), "mlp.fc2"),), _HEAD_DIM),
    BlockLayout("vit", (AttentionLayout("attention", "attention", "attention.o_proj", "attention.q_proj",
                                        "attention.k_proj", "attention.v_proj"),),
                (FfnLayout("mlp", ("mlp.fc1",), "mlp.fc2"),), ConfigFields(head_dim="head_dim")),
    BlockLayout("distilbert", (AttentionLayout("attention", "attention", "attention.out_lin", "attention.q_lin",
                                               "attention.k_lin", "attention.v_lin"),),
                (FfnLayout("ffn", ("ffn.lin1",), "ffn.lin2"),), ConfigFields(("hidden_dim",), ("n_heads",))),
    BlockLayout("albert", (AttentionLayout("attention", "attention", "attention.dense", "attention.query",
                                           "attention.key", "attention.value"),),
                (FfnLayout("ffn", ("ffn",), "ffn_output"),)),
    BlockLayout("gpt2", (AttentionLayout("attn", "attn", "attn.c_proj", fused="attn.c_attn"),),
                (FfnLayout("mlp", ("mlp.c_fc",), "mlp.c_proj"),), ConfigFields(("n_inner",), ("n_head",))),
    BlockLayout("bart", _BART_ATTENTIONS, (FfnLayout("fc1", ("fc1",), "fc2"),),
                ConfigFields(("{stack}_ffn_dim", "ffn_dim"), ("{stack}_attention_heads", "num_attention_heads"))),
    BlockLayout("t5", (AttentionLayout("SelfAttention", "layer.0.SelfAttention", "layer.0.SelfAttention.o",
                                       "layer.0.SelfAttention.q", "layer.0.SelfAttention.k", "layer.0.SelfAttention.v",
                                       shared=True, bias_table="layer.0.SelfAttention.relative_attention_bias"),
                       AttentionLayout("EncDecAttention", "layer.1.EncDecAttention", "layer.1.EncDecAttention.o",
                                       "layer.1.EncDecAttention.q", "layer.1.EncDecAttention.k",
                                       "layer.1.EncDecAttention.v", optional=True, shared=True, cross=True)),
                _t5_ffns(), ConfigFields(("d_ff",), ("num_heads",), head_dim="d_kv")),
)

SUPPORTED = ("BERT-style encoders (BERT, RoBERTa, MiniLM sentence encoders), LLaMA-style decoders (LLaMA, "
             "Mistral, Qwen2, Gemma; grouped-query attention included), Phi, Phi-3 (fused qkv_proj and "
             "gate_up_proj), ViT/DeiT, DistilBERT, ALBERT (the shared layer), GPT-2 (Conv1D, fused c_attn), "
             "OPT/Whisper/BART-style blocks (self_attn.q/k/v/out_proj, fc1/fc2, encoder_attn) and T5 "
             "(SelfAttention/EncDecAttention q/k/v/o, DenseReluDense)")


@dataclass(frozen=True)
class Block:
    """One transformer block of a model: where it is, its layout, the attentions and FFN it has."""

    path: str
    layout: BlockLayout
    head_dim: int
    attentions: tuple[AttentionLayout, ...] = ()
    ffn: FfnLayout | None = None

    def sub(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    @property
    def stack(self) -> str:
        """The module holding the block list: ``"encoder.block.3"`` -> ``"encoder"``."""
        return self.path.rpartition(".")[0].rpartition(".")[0]

    def heads_group(self, attention: AttentionLayout) -> str:
        if attention.shared:
            return f"{self.stack}.{attention.name}:heads" if self.stack else f"{attention.name}:heads"
        return f"{self.sub(attention.name)}:heads"

    @property
    def ffn_group(self) -> str:
        return self.sub(self.ffn.name)

    def field(self, config, names: tuple[str, ...]) -> str | None:
        """The first of ``names`` (``{stack}`` filled in) that ``config`` has."""
        stack = "decoder" if "decoder" in self.path.split(".") else "encoder"
        for name in names:
            name = name.format(stack=stack)
            if hasattr(config, name):
                return name
        return None


def projection(model: nn.Module, path: str) -> nn.Module | None:
    """The ``nn.Linear`` or ``Conv1D`` at ``path``, else ``None``."""
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None
    return module if isinstance(module, (nn.Linear, Conv1D)) else None


def width(module: nn.Module, axis: str) -> int:
    """Output (``"out"``) or input (``"in"``) features of a Linear or Conv1D."""
    if isinstance(module, Conv1D):
        return module.weight.shape[1] if axis == "out" else module.weight.shape[0]
    return module.out_features if axis == "out" else module.in_features


def _head_dim(model: nn.Module, attention: nn.Module) -> int:
    for name in ("attention_head_size", "head_dim", "key_value_proj_dim"):
        value = getattr(attention, name, None)
        if isinstance(value, int) and value > 0:
            return value
    config = model.config
    value = getattr(config, "head_dim", None)
    return value if isinstance(value, int) and value > 0 else config.hidden_size // config.num_attention_heads


def _match(model: nn.Module, path: str, layout: BlockLayout) -> Block | None:
    block = Block(path, layout, 0)
    attentions = []
    for attention in layout.attentions:
        present = all(projection(model, block.sub(p)) is not None for p in attention.projections())
        if not present and not attention.optional:
            return None
        if present:
            attentions.append(attention)
    ffn = next((f for f in layout.ffns if all(projection(model, block.sub(p)) is not None for p in (*f.ins, f.out))),
               None)
    if ffn is None:
        return None
    head_dim = _head_dim(model, model.get_submodule(block.sub(attentions[0].module)))
    return Block(path, layout, head_dim, tuple(attentions), ffn)


def find_blocks(model: nn.Module) -> list[Block]:
    """Every transformer block of ``model`` whose layout the adapter knows, in forward order.

    A module shared by several depths (ALBERT's one layer) appears once.
    """
    blocks = []
    for path, _ in model.named_modules():
        for layout in LAYOUTS:
            block = _match(model, path, layout)
            if block is not None:
                blocks.append(block)
                break
    return blocks


def head_counts(model: nn.Module, block: Block, attention: AttentionLayout) -> tuple[int, int]:
    """(query heads, key/value heads) of one attention as its tensors are now."""
    d = block.head_dim
    out = model.get_submodule(block.sub(attention.out))
    heads = width(out, "in") // d
    if attention.fused:
        return heads, (width(model.get_submodule(block.sub(attention.fused)), "out") - heads * d) // (2 * d)
    return heads, width(model.get_submodule(block.sub(attention.key)), "out") // d


def _attention_members(model: nn.Module, block: Block, attention: AttentionLayout, group: str):
    """Members of one block's attention, the key/value group count and the producers."""
    d = block.head_dim
    out = model.get_submodule(block.sub(attention.out))
    q_width = width(out, "in")
    if attention.fused:
        fused = width(model.get_submodule(block.sub(attention.fused)), "out")
        k_width = v_width = (fused - q_width) // 2 if fused > q_width else -1
    else:
        q_width = width(model.get_submodule(block.sub(attention.query)), "out")
        k_width = width(model.get_submodule(block.sub(attention.key)), "out")
        v_width = width(model.get_submodule(block.sub(attention.value)), "out")
    if (q_width % d or k_width <= 0 or k_width % d or k_width != v_width or width(out, "in") != q_width
            or (q_width // d) % (k_width // d)):
        raise UnsupportedModuleError(f"{group}: projection widths q={q_width}, k={k_width}, v={v_width}, "
                                     f"out={width(out, 'in')} do not split into heads of size {d}")
    heads, kv_heads = q_width // d, k_width // d
    query_units = np.arange(q_width) // d // (heads // kv_heads)  # query head h reads key/value head h // per_group
    kv_units = np.arange(k_width) // d
    if attention.fused:
        members = [GroupMember(block.sub(attention.fused), "out", np.concatenate([query_units, kv_units, kv_units]))]
        producers = [(block.sub(attention.fused), "out")]
    else:
        members = [GroupMember(block.sub(attention.query), "out", query_units),
                   GroupMember(block.sub(attention.key), "out", kv_units),
                   GroupMember(block.sub(attention.value), "out", kv_units.copy())]
        producers = [(block.sub(p), "out") for p in (attention.query, attention.key, attention.value)]
    members.append(GroupMember(block.sub(attention.out), "in", query_units.copy()))
    if attention.bias_table:
        try:
            table = model.get_submodule(block.sub(attention.bias_table))
        except AttributeError:
            table = None
        if isinstance(table, nn.Embedding):
            if table.embedding_dim != heads:
                raise UnsupportedModuleError(f"{group}: {block.sub(attention.bias_table)} has {table.embedding_dim} "
                                             f"columns for {heads} heads")
            members.append(GroupMember(block.sub(attention.bias_table), "dim", np.arange(heads) // (heads // kv_heads)))
    return members, kv_heads, producers


def heads_group(model: nn.Module, blocks: list[Block], block: Block, attention: AttentionLayout) -> Group:
    """Whole heads (key/value groups under grouped-query attention) of one attention; for a
    ``shared`` attention, of that attention in every block of the stack."""
    name = block.heads_group(attention)
    members, producers, sizes = [], [], set()
    tied = [b for b in blocks if b.stack == block.stack and attention in b.attentions] if attention.shared else [block]
    for other in tied:
        found, kv_heads, made = _attention_members(model, other, attention, name)
        members += found
        producers += made
        sizes.add(kv_heads)
    if len(sizes) != 1:
        raise UnsupportedModuleError(f"{name}: heads tied across layers, but the layers have {sorted(sizes)} heads")
    size = sizes.pop()
    return Group(name, size, members, np.ones(size, dtype=bool), producers)


def ffn_group(model: nn.Module, block: Block) -> Group:
    """The FFN's intermediate neurons: rows of the up projection(s), columns of the down projection."""
    ffn = block.ffn
    ins = [model.get_submodule(block.sub(p)) for p in ffn.ins]
    out = model.get_submodule(block.sub(ffn.out))
    size = width(out, "in")
    expected = 2 * size if ffn.fused else size
    if any(width(m, "out") != expected for m in ins):
        raise UnsupportedModuleError(f"{block.ffn_group}: FFN widths {[width(m, 'out') for m in ins]} -> "
                                     f"{size} do not match")
    units = np.arange(size)
    members = [GroupMember(block.sub(p), "out", np.concatenate([units, units]) if ffn.fused else units.copy())
               for p in ffn.ins]
    members.append(GroupMember(block.sub(ffn.out), "in", units.copy()))
    return Group(block.ffn_group, size, members, np.ones(size, dtype=bool), [(block.sub(p), "out") for p in ffn.ins])


__all__ = ["AttentionLayout", "Block", "BlockLayout", "ConfigFields", "FfnLayout", "LAYOUTS", "SUPPORTED",
           "ffn_group", "find_blocks", "head_counts", "heads_group", "projection", "width"]
