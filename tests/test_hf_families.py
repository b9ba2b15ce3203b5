"""Hugging Face families beyond BERT and LLaMA: GPT-2, DistilBERT, OPT, ViT/DeiT, Phi, Phi-3, Gemma,
T5, Whisper and ALBERT, each as a tiny random-weight config (2 layers, hidden 32) built offline.

For every family: discovery finds the expected head and FFN groups, masked == pruned with
different widths per layer, the parameter count drops by what the plan removes, save ->
``load_pretrained`` is exact, plain ``from_pretrained`` is exact where the config can express the
result, and decoder language models still ``generate`` (the same tokens as the masked model).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded

from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

transformers = pytest.importorskip("transformers")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import neuroprune  # noqa: E402
from neuroprune.core.backend import backend_for  # noqa: E402
from neuroprune.hf.adapter import load_pretrained, plain_loadable  # noqa: E402
from neuroprune.hf.families import width  # noqa: E402
from neuroprune.core.errors import ConfigError, UnsupportedModuleError  # noqa: E402
from neuroprune.core.criteria import ScoringInput, score  # noqa: E402
from neuroprune.torch.stats import collect_statistics  # noqa: E402
from neuroprune.torch.surgery import apply_keep  # noqa: E402
from neuroprune.torch.masks import apply_masks  # noqa: E402
from neuroprune.torch.layers.registry import handler_for  # noqa: E402

T = transformers
VOCAB = 40


def _ids(length: int = 7) -> torch.Tensor:
    return torch.randint(2, VOCAB, (2, length), generator=torch.Generator().manual_seed(1))


def _text() -> dict:
    return {"input_ids": _ids()}


def _image() -> dict:
    return {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))}


def _seq2seq() -> dict:
    return {"input_ids": _ids(), "decoder_input_ids": _ids(4)}


def _speech() -> dict:
    return {"input_features": torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(1)),
            "decoder_input_ids": _ids(4)}


@dataclass(frozen=True)
class Family:
    build: Callable[[], nn.Module]
    inputs: Callable[[], dict]
    groups: list[tuple[str, int]]  # what discovery must find
    plain_heads: bool  # the config can express pruned heads (it carries the head size)
    generates: bool = False  # a decoder LM: generate() after pruning


def _layers(prefix: str, heads: str, ffn: str, n_heads: int, n_ffn: int, layers: int = 2) -> list[tuple[str, int]]:
    return [g for i in range(layers) for g in ((f"{prefix}.{i}.{heads}:heads", n_heads), (f"{prefix}.{i}.{ffn}", n_ffn))]


FAMILIES = {
    "gpt2": Family(lambda: T.GPT2LMHeadModel(T.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                          vocab_size=VOCAB, bos_token_id=1, eos_token_id=2)),
                   _text, _layers("transformer.h", "attn", "mlp", 4, 128), False, True),
    "distilbert": Family(lambda: T.DistilBertModel(T.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                                                      vocab_size=VOCAB, max_position_embeddings=64)),
                         _text, _layers("transformer.layer", "attention", "ffn", 4, 64), False),
    "opt": Family(lambda: T.OPTForCausalLM(T.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                       ffn_dim=64, vocab_size=VOCAB, max_position_embeddings=64,
                                                       word_embed_proj_dim=32, pad_token_id=0, bos_token_id=1,
                                                       eos_token_id=2)),
                  _text, _layers("model.decoder.layers", "self_attn", "fc1", 4, 64), False, True),
    "vit": Family(lambda: T.ViTModel(T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                 intermediate_size=64, image_size=16, patch_size=8)),
                  _image, _layers("layers", "attention", "mlp", 4, 64), True),
    "deit": Family(lambda: T.DeiTForImageClassification(T.DeiTConfig(hidden_size=32, num_hidden_layers=2,
                                                                      num_attention_heads=4, intermediate_size=64,
                                                                      image_size=16, patch_size=8, num_labels=3)),
                   _image, _layers("deit.layers", "attention", "mlp", 4, 64), True),
    "phi": Family(lambda: T.PhiForCausalLM(T.PhiConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                       num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB,
                                                       max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                                                       eos_token_id=2)),
                  _text, _layers("model.layers", "self_attn", "mlp", 2, 64), True, True),
    "phi3": Family(lambda: T.Phi3ForCausalLM(T.Phi3Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                          num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB,
                                                          max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                                                          eos_token_id=2)),
                   _text, _layers("model.layers", "self_attn", "mlp", 2, 64), True, True),
    "gemma": Family(lambda: T.GemmaForCausalLM(T.GemmaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                             num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                                             vocab_size=VOCAB, max_position_embeddings=64,
                                                             pad_token_id=0, bos_token_id=1, eos_token_id=2)),
                    _text, _layers("model.layers", "self_attn", "mlp", 2, 64), True, True),
    "t5": Family(lambda: T.T5ForConditionalGeneration(T.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                                                 vocab_size=VOCAB, decoder_start_token_id=0,
                                                                 pad_token_id=0, eos_token_id=2)),
                 _seq2seq, [("encoder.SelfAttention:heads", 4), ("encoder.block.0.layer.1.DenseReluDense", 64),
                            ("encoder.block.1.layer.1.DenseReluDense", 64), ("decoder.SelfAttention:heads", 4),
                            ("decoder.EncDecAttention:heads", 4), ("decoder.block.0.layer.2.DenseReluDense", 64),
                            ("decoder.block.1.layer.2.DenseReluDense", 64)], True, True),
    "whisper": Family(lambda: T.WhisperModel(T.WhisperConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=48, num_mel_bins=8, max_source_positions=8, max_target_positions=16,
        vocab_size=VOCAB, pad_token_id=1, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        begin_suppress_tokens=None, suppress_tokens=None)),
        _speech, _layers("encoder.layers", "self_attn", "fc1", 4, 64) + [
            g for i in range(2) for g in ((f"decoder.layers.{i}.self_attn:heads", 4),
                                          (f"decoder.layers.{i}.encoder_attn:heads", 4), (f"decoder.layers.{i}.fc1", 48))],
        False),
    "albert": Family(lambda: T.AlbertModel(T.AlbertConfig(hidden_size=32, embedding_size=16, num_hidden_layers=2,
                                                          num_attention_heads=4, intermediate_size=64,
                                                          vocab_size=VOCAB)),
                     _text, _layers("encoder.albert_layer_groups.0.albert_layers", "attention", "ffn", 4, 64, 1), False),
}
NAMES = sorted(FAMILIES)
DECODERS = [name for name in NAMES if FAMILIES[name].generates]


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return FAMILIES[name].build().eval()


def first_output(model: nn.Module, name: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**FAMILIES[name].inputs())[0]


def uneven_removal(graph) -> dict[str, np.ndarray]:
    """Heads: one from every other attention group (so head counts differ per layer); FFN: a
    different stride per group (so widths differ per layer)."""
    removal, k = {}, 0
    for i, group in enumerate(graph.groups):
        if group.name.endswith(":heads"):
            removal[group.name] = np.arange(1 if k % 2 == 0 else 0)
            k += 1
        else:
            removal[group.name] = np.arange(0, group.size, 2 + i)
    return removal


def planned_parameter_drop(model: nn.Module, keep) -> int:
    """Parameters the plan removes: rows/columns (and bias entries) of every listed module axis."""
    total = 0
    for path, axes in keep.items():
        module = model.get_submodule(path)
        assert len(axes) == 1  # one axis per module in these plans, so nothing is counted twice
        for axis, kept in axes.items():
            gone = handler_for(module).axes(module)[axis] - len(kept)
            if isinstance(module, nn.Embedding):
                total += gone * module.num_embeddings
            elif axis == "out":
                total += gone * (width(module, "in") + (module.bias is not None))
            else:
                total += gone * width(module, "out")
    return total


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save(folder, model, graph, keep) -> None:
    plan = neuroprune.PruningPlan(adapter="hf").compose(keep, graph.module_types, graph.axis_sizes)
    neuroprune.save(folder, model, plan, extra=backend_for(model).extra_files(model))


@pytest.mark.parametrize("name", NAMES)
def test_discover_finds_heads_and_ffn_neurons_of_every_block(name):
    model = build(name)
    assert backend_for(model).name == "hf"
    graph = backend_for(model).discover(model, None)
    assert [(g.name, g.size) for g in graph.groups] == FAMILIES[name].groups
    for group in graph.groups:  # every member names a real module axis and maps every position to a unit
        for member in group.members:
            module = model.get_submodule(member.path)
            assert len(member.unit_of) == handler_for(module).axes(module)[member.axis]
            assert set(member.unit_of.tolist()) == set(range(group.size))


@pytest.mark.parametrize("name", NAMES)
def test_masked_equals_pruned_and_parameters_drop_as_planned(name):
    model = build(name)
    adapter = backend_for(model)
    graph = adapter.discover(model, None)
    removal = uneven_removal(graph)
    keep = graph.keep_indices(removal)
    with apply_masks(model, keep):
        masked = first_output(model, name)
    small = apply_keep(model, keep)
    adapter.after_surgery(small)
    torch.testing.assert_close(first_output(small, name), masked, atol=1e-5, rtol=1e-4)
    assert n_params(model) - n_params(small) == planned_parameter_drop(model, keep) > 0
    widths = [g.size - len(removal[g.name]) for g in graph.groups]
    assert [g.size for g in adapter.discover(small, None).groups] == widths
    ffn_widths = [w for g, w in zip(graph.groups, widths) if not g.name.endswith(":heads")]
    assert small.config.neuroprune_intermediate_sizes == ffn_widths
    assert len(set(ffn_widths)) > 1 or name == "albert"  # widths differ per layer (ALBERT has one layer)
    assert not plain_loadable(small)  # per-layer widths (or heads): only neuroprune reloads it
    assert n_params(model) == n_params(build(name))  # the caller's model is untouched


@pytest.mark.parametrize("name", NAMES)
def test_save_then_load_pretrained_is_exact(tmp_path, name):
    model = build(name)
    adapter = backend_for(model)
    graph = adapter.discover(model, None)
    keep = graph.keep_indices(uneven_removal(graph))
    small = apply_keep(model, keep)
    adapter.after_surgery(small)
    save(tmp_path / "out", small, graph, keep)
    expected = first_output(small, name)
    assert torch.equal(first_output(load_pretrained(tmp_path / "out"), name), expected)
    assert torch.equal(first_output(neuroprune.load(tmp_path / "out", lambda: build(name)), name), expected)


@pytest.mark.parametrize("name", NAMES)
def test_plain_from_pretrained_is_exact_where_the_config_can_express_it(tmp_path, name):
    model = build(name)
    adapter = backend_for(model)
    graph = adapter.discover(model, None)
    family = FAMILIES[name]
    uniform = {g.name: np.arange(g.size // 2) for g in graph.groups}  # the same share of every group
    keep = graph.keep_indices(uniform)
    small = apply_keep(model, keep)
    adapter.after_surgery(small)
    assert plain_loadable(small) == family.plain_heads
    if not family.plain_heads:  # head size derived from hidden_size // heads: FFN-only results reload plainly
        ffn_only = {n: u for n, u in uniform.items() if not n.endswith(":heads")}
        keep = graph.keep_indices(ffn_only)
        small = apply_keep(model, keep)
        adapter.after_surgery(small)
        assert plain_loadable(small)
    save(tmp_path / "out", small, graph, keep)
    reloaded = type(model).from_pretrained(tmp_path / "out").eval()
    assert n_params(reloaded) == n_params(small)
    assert torch.equal(first_output(reloaded, name), first_output(small, name))


@pytest.mark.parametrize("name", DECODERS)
def test_generate_after_pruning_gives_the_masked_models_tokens(name):
    model = build(name)
    adapter = backend_for(model)
    graph = adapter.discover(model, None)
    keep = graph.keep_indices(uneven_removal(graph))
    options = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    with apply_masks(model, keep):
        masked = model.generate(_ids(), **options)
    small = apply_keep(model, keep)
    adapter.after_surgery(small)
    tokens = small.generate(_ids(), **options)
    assert tokens.shape[1] > (1 if name == "t5" else _ids().shape[1])
    assert torch.equal(tokens, masked)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["gpt2", "phi3", "t5"]), seed=st.integers(0, 10_000))
def test_random_plans_on_fused_and_tied_projections_mask_equals_prune(name, seed):
    model = build(name)
    adapter = backend_for(model)
    graph = adapter.discover(model, None)
    rng = np.random.default_rng(seed)
    removal = {g.name: np.sort(rng.choice(g.size, size=int(rng.integers(0, g.size)), replace=False))
               for g in graph.groups}
    keep = graph.keep_indices(removal)
    with apply_masks(model, keep):
        masked = first_output(model, name)
    small = apply_keep(model, keep)
    adapter.after_surgery(small)
    torch.testing.assert_close(first_output(small, name), masked, atol=1e-5, rtol=1e-4)


def test_gpt2_fused_c_attn_splits_into_heads_and_conv1d_is_cut_on_its_transposed_axes():
    model = build("gpt2")
    graph = backend_for(model).discover(model, None)
    heads = graph.group("transformer.h.0.attn:heads")
    c_attn = heads.members[0]
    assert (c_attn.path, c_attn.axis) == ("transformer.h.0.attn.c_attn", "out")
    assert c_attn.unit_of.tolist() == [h for _ in range(3) for h in range(4) for _ in range(8)]  # q | k | v
    small = apply_keep(model, graph.keep_indices({heads.name: np.array([1])}))
    backend_for(small).after_surgery(small)
    attn = small.transformer.h[0].attn
    assert tuple(attn.c_attn.weight.shape) == (32, 72) and tuple(attn.c_proj.weight.shape) == (24, 32)
    assert (attn.num_heads, attn.split_size) == (3, 24)
    assert small.config.n_head == 4  # GPT-2 derives the head size from n_head: the config keeps it


def test_phi3_per_layer_head_counts_get_their_own_attention_config():
    model = build("phi3")
    graph = backend_for(model).discover(model, None)
    small = apply_keep(model, graph.keep_indices({"model.layers.0.self_attn:heads": np.array([0])}))
    backend_for(small).after_surgery(small)
    first, second = (layer.self_attn for layer in small.model.layers)
    assert (first.config.num_attention_heads, first.config.num_key_value_heads) == (2, 1)
    assert second.config is small.config and small.config.num_attention_heads == 4  # not expressible: unchanged
    assert small.config.neuroprune_num_heads == [2, 4] and small.config.neuroprune_num_key_value_heads == [1, 2]


def test_t5_heads_are_tied_across_the_stack_with_their_relative_position_bias():
    model = build("t5")
    graph = backend_for(model).discover(model, None)
    group = graph.group("encoder.SelfAttention:heads")
    assert sorted({m.path.split(".")[2] for m in group.members}) == ["0", "1"]  # both encoder blocks
    table = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias"
    assert [m.axis for m in group.members if m.path == table] == ["dim"]
    small = apply_keep(model, graph.keep_indices({group.name: np.array([0, 3])}))
    backend_for(small).after_surgery(small)
    assert small.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.embedding_dim == 2
    assert [b.layer[0].SelfAttention.n_heads for b in small.encoder.block] == [2, 2]
    assert [b.layer[0].SelfAttention.n_heads for b in small.decoder.block] == [4, 4]
    assert small.config.num_heads == 4 and small.config.neuroprune_num_cross_attention_heads == [None, None, 4, 4]


def test_albert_prunes_its_shared_layer_once_for_every_depth():
    model = build("albert")
    graph = backend_for(model).discover(model, None)
    assert len(graph.groups) == 2 and model.config.num_hidden_layers == 2  # one layer, run twice
    small = apply_keep(model, graph.keep_indices({"encoder.albert_layer_groups.0.albert_layers.0.ffn": np.arange(16)}))
    backend_for(small).after_surgery(small)
    assert small.encoder.albert_layer_groups[0].albert_layers[0].ffn.out_features == 48
    assert small.config.intermediate_size == 48 and plain_loadable(small)


def test_whisper_encoder_and_decoder_widths_go_to_their_own_config_fields():
    model = build("whisper")
    graph = backend_for(model).discover(model, None)
    removal = {g.name: np.arange(8) for g in graph.groups if g.name.startswith("decoder") and g.name.endswith("fc1")}
    small = apply_keep(model, graph.keep_indices(removal))
    backend_for(small).after_surgery(small)
    assert (small.config.encoder_ffn_dim, small.config.decoder_ffn_dim) == (64, 40)
    assert small.config.neuroprune_num_cross_attention_heads == [None, None, 4, 4]
    assert plain_loadable(small)


def test_scores_of_conv1d_and_tied_groups_come_from_weights_gradients_and_activations():
    for name in ("gpt2", "t5"):
        model = build(name)
        graph = backend_for(model).discover(model, None)

        def loss(m, batch, name=name):
            return m(**FAMILIES[name].inputs())[0].float().pow(2).mean()

        stats = collect_statistics(model, graph, [0, 1], loss, gradients=True, progress=False)
        for criterion in ("magnitude", "taylor", "activation_mean"):
            scores = score(ScoringInput(model, graph, stats), criterion)
            assert [tuple(scores[g.name].shape) for g in graph.groups] == [(g.size,) for g in graph.groups]


def test_obs_on_gpt2_reads_its_conv1d_layers_as_linear_ones():
    """GPT-2's Conv1D stores its weight (in, out): obs scores heads (blocks) and FFN neurons from it."""
    from neuroprune.core.criteria.obs import removal_costs

    model = build("gpt2")
    graph = backend_for(model).discover(model, None)
    stats = collect_statistics(model, graph, [0], lambda m, b: m(**_text())[0].pow(2).mean(), gram=True,
                               progress=False)
    scores = score(ScoringInput(model, graph, stats), "obs")
    assert {name: len(s) for name, s in scores.items()} == {g.name: g.size for g in graph.groups}
    for group in graph.groups:  # heads: blocks of head_dim columns; FFN: one column per neuron
        reader = next(m for m in group.members if m.axis == "in")
        weight = model.get_submodule(reader.path).weight.detach().T  # (out, in), as nn.Linear stores it
        expected = removal_costs(weight, stats.axes[(reader.path, "in")].gram, reader.unit_of, group.size)
        np.testing.assert_allclose(scores[group.name], expected, rtol=1e-10)
        assert bool((scores[group.name] > 0).all())


def test_an_unknown_family_lists_what_is_supported():
    torch.manual_seed(0)
    model = T.ResNetModel(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
    with pytest.raises(UnsupportedModuleError, match=r"ResNetModel: no transformer block.*GPT-2.*T5"):
        backend_for(model).discover(model, None)


@pytest.mark.parametrize("name", ["phi", "phi3"])
def test_residual_aware_reconstruction_on_phi_blocks_fits_the_teachers_residual_sum(name):
    from test_hf import make_sentences, make_tokenizer  # the word-level tokenizer and sentences of test_hf

    from neuroprune.torch.recover.reconstruct import reconstruct
    from neuroprune.tasks.text import TextTask

    config = build(name).config
    config.vocab_size = len(make_tokenizer())
    torch.manual_seed(0)
    model = (T.PhiModel if name == "phi" else T.Phi3Model)(config).eval()
    adapter = backend_for(model)
    sums = adapter.residual_sums(model)
    expected = ({"layers.0.self_attn.dense": "layers.1.input_layernorm", "layers.0.mlp.fc2": "layers.1.input_layernorm",
                 "layers.1.self_attn.dense": "final_layernorm", "layers.1.mlp.fc2": "final_layernorm"} if name == "phi"
                else {"layers.0.self_attn.o_proj": "layers.0.post_attention_layernorm",
                      "layers.0.mlp.down_proj": "layers.1.input_layernorm",
                      "layers.1.self_attn.o_proj": "layers.1.post_attention_layernorm", "layers.1.mlp.down_proj": "norm"})
    assert sums == expected
    graph = adapter.discover(model, None)
    keep = graph.keep_indices({g.name: np.arange(g.size // 2) for g in graph.groups})
    task = TextTask(make_sentences(64, seed=3), make_tokenizer(), batch_size=16, calibration_samples=48,
                    val_samples=8, test_samples=8).bind(model)
    errors = []
    for residual_sums in (None, sums):
        student = apply_keep(model, {})
        with apply_masks(student, keep) as handle:
            fitted = reconstruct(student, model, keep, task.calibration_batches(), task.loss, progress=False,
                                 token_mask=task.token_mask, residual_sums=residual_sums)
            handle.commit()
        assert len(fitted) == 4
        errors.append(1 - task.evaluate(student, "calibration"))
    assert errors[1] < errors[0]  # absorbing the residual stream's error helps the final hidden state
