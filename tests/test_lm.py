"""Causal language models: perplexity task, rollback, distillation, decoder criteria, uniform widths, CLI.

Everything runs offline on tiny LLaMA-style models (2 layers, hidden 32, random weights, briefly
trained here where a test needs a model that is better than chance) and a BPE tokenizer fitted on
generated text.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from neuroprune import PruneConfig, prune  # noqa: E402
from neuroprune.hf.adapter import find_blocks, load_pretrained, plain_loadable  # noqa: E402
from neuroprune.cli.main import main  # noqa: E402
from neuroprune.core.errors import ConfigError, DataError  # noqa: E402
from neuroprune.torch.graph.discover import discover  # noqa: E402
from neuroprune.tasks.generate import generation_check  # noqa: E402
from neuroprune.tasks.language_model import LMTask, is_causal_lm, pack_blocks  # noqa: E402
from neuroprune.models.lm_zoo import tiny_llama, train_tokenizer  # noqa: E402
from neuroprune.torch.recover.distill import distill  # noqa: E402
from neuroprune.core.criteria import ScoringInput, criterion_names, score  # noqa: E402
from neuroprune.torch.stats import collect_statistics  # noqa: E402

SUBJECTS = "the cat|a dog|my bird|the old horse|a small fish|the red fox".split("|")
VERBS = "sat on|ran to|looked at|jumped over|swam near|slept under".split("|")
OBJECTS = "the mat|a log|the tree|the pond|a green field|the house".split("|")


def make_documents(n: int = 240, seed: int = 0) -> list[str]:
    """Short sentences from a tiny grammar: a small model learns them quickly."""
    rng = np.random.default_rng(seed)
    return [" ".join(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
                     for _ in range(int(rng.integers(1, 4)))).capitalize() for _ in range(n)]


@pytest.fixture(scope="module")
def documents() -> list[str]:
    return make_documents()


@pytest.fixture(scope="module")
def tokenizer(documents):
    return train_tokenizer(documents, vocab_size=300)


def make_task(documents, tokenizer, **kwargs) -> LMTask:
    options = dict(seq_len=32, batch_size=8, calibration_samples=16, val_blocks=16, test_blocks=16)
    return LMTask(documents, tokenizer, **{**options, **kwargs})


@pytest.fixture(scope="module")
def trained(documents, tokenizer) -> nn.Module:
    """A tiny LLaMA (2 layers, hidden 32, 4 heads in 2 KV groups) trained briefly on the documents."""
    model = tiny_llama(tokenizer.vocab_size, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64)
    task = make_task(documents, tokenizer)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for epoch in range(3):
        for batch in task.train_batches(epoch):
            loss = task.loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def quiet(**kwargs) -> PruneConfig:
    return PruneConfig(**{"progress": False, "latency_runs": 1, **kwargs})


# -- the task --------------------------------------------------------------------------------------


def test_pack_blocks_joins_documents_with_the_separator_and_drops_the_tail():
    blocks = pack_blocks([[1, 2], [3, 4, 5], [6]], 3, 0)
    assert blocks.tolist() == [[1, 2, 0], [3, 4, 5]]


def test_held_out_documents_never_reach_training_blocks(documents, tokenizer):
    task = make_task(documents, tokenizer)
    held_out = set(task.documents["val"]) | set(task.documents["test"])
    assert held_out and not held_out & set(task.documents["train"])
    assert torch.equal(task.blocks["calibration"], task.blocks["train"][:16])
    assert task.metric_name == "perplexity" and task.lower_is_better


def test_perplexity_is_exp_of_the_mean_next_token_loss(documents, tokenizer, trained):
    task = make_task(documents, tokenizer)
    with torch.no_grad():
        logits = trained(input_ids=task.blocks["val"]).logits
    expected = math.exp(F.cross_entropy(logits[:, :-1].flatten(0, 1), task.blocks["val"][:, 1:].flatten()).item())
    assert task.evaluate(trained, "val") == pytest.approx(expected, rel=1e-5)
    untrained = tiny_llama(tokenizer.vocab_size)
    assert task.evaluate(trained, "val") < task.evaluate(untrained, "val") / 3  # training helped


def test_too_little_text_for_a_block_is_a_data_error(tokenizer):
    with pytest.raises(DataError, match="too little text for blocks of 512 tokens"):
        LMTask(["a cat.", "a dog.", "a fox."], tokenizer, seq_len=512)
    with pytest.raises(ConfigError, match="seq_len must be >= 1"):
        LMTask(["a cat.", "a dog.", "a fox."], tokenizer, seq_len=0)


def test_causal_lm_is_recognised_and_an_encoder_is_not():
    assert is_causal_lm(tiny_llama(50))
    assert not is_causal_lm(transformers.LlamaModel(tiny_llama(50).config))


# -- the loop: direction of the metric, rollback ---------------------------------------------------


def test_pruning_raises_perplexity_and_the_drop_is_the_relative_rise(documents, tokenizer, trained):
    task = make_task(documents, tokenizer)
    result = prune(trained, task, quiet(criterion="magnitude", ratio=0.75, tolerance=100.0))
    step = result.report["steps"][0]
    reference = result.report["reference_val"]
    assert step["accepted"] and step["accuracy"] > reference  # perplexity went up
    assert step["drop"] == pytest.approx((step["accuracy"] - reference) / reference)
    assert result.report["metric"] == "perplexity"


def test_a_perplexity_rise_above_the_tolerance_rolls_back_bit_identically(documents, tokenizer, trained):
    task = make_task(documents, tokenizer)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    result = prune(trained, task, quiet(criterion="magnitude", ratio=0.75, tolerance=0.001, max_retries=1))
    assert [s["accepted"] for s in result.report["steps"]] == [False, False]
    assert all(s["drop"] > 0.001 for s in result.report["steps"])
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())  # the caller's model too


# -- recovery --------------------------------------------------------------------------------------


def test_logit_distillation_lowers_the_kl_to_the_unpruned_model(documents, tokenizer, trained):
    task = make_task(documents, tokenizer).bind(trained)
    pruned = prune(trained, task, quiet(criterion="wanda", ratio=0.5, tolerance=100.0)).model
    before = task.kl_to_teacher(pruned, "val")
    distill(pruned, task, epochs=2, learning_rate=3e-3, progress=False)
    after = task.kl_to_teacher(pruned, "val")
    assert before > 0 and after < 0.8 * before
    assert task.kl_to_teacher(trained, "val") == pytest.approx(0.0, abs=1e-6)


def test_distillation_with_the_lm_loss_adds_it(documents, tokenizer, trained):
    task = make_task(documents, tokenizer, lm_weight=0.5).bind(trained)
    batch = task.calibration_batches()[0]
    assert task.distill_loss(trained, batch).item() == pytest.approx(0.5 * task.loss(trained, batch).item(), rel=1e-4)


# -- criteria --------------------------------------------------------------------------------------


def test_decoder_criteria_are_listed_with_a_reference(capsys):
    assert {"wanda", "flap", "taylor"} <= set(criterion_names())
    assert main(["criteria"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "Sun et al. 2023" in lines["wanda"] and "An et al. 2024" in lines["flap"]
    assert "Molchanov et al. 2017" in lines["taylor"]


@pytest.mark.parametrize("criterion", ["wanda", "flap", "taylor"])
def test_decoder_criteria_give_one_finite_score_per_head_group_and_neuron(documents, tokenizer, trained, criterion):
    task = make_task(documents, tokenizer).bind(trained)
    from neuroprune.core.backend import backend_for
    from neuroprune.core.loop import score_groups

    graph = backend_for(trained).discover(trained, None)
    scores = score_groups(trained, graph, task, quiet(criterion=criterion))
    assert {name: len(s) for name, s in scores.items()} == {g.name: g.size for g in graph.groups}
    assert {g.size for g in graph.groups} == {2, 64}  # 2 key/value groups, 64 FFN neurons per layer
    assert all(bool(np.isfinite(s).all()) and float(s.max()) > float(s.min()) for s in scores.values())


def _mlp_stats(model: nn.Module, x: torch.Tensor):
    graph = discover(model, x[:1])
    return graph, collect_statistics(model, graph, [x], lambda m, b: m(b).sum(), progress=False)


def test_wanda_is_column_l1_norm_times_activation_rms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(50, 4)
    graph, stats = _mlp_stats(model, x)
    hidden = torch.relu(model[0](x)).detach()
    expected = model[2].weight.detach().abs().sum(dim=0) * hidden.pow(2).mean(dim=0).sqrt()
    got = score(ScoringInput(model, graph, stats), "wanda")["0"]  # numpy float64
    torch.testing.assert_close(torch.from_numpy(got), expected.double(), rtol=1.3e-6, atol=1e-5)


def test_flap_gives_a_constant_neuron_zero_fluctuation_and_matches_its_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight[2] = 0.0
        model[0].bias[2] = 1.5  # neuron 2 always outputs 1.5: removable, its mean goes to a bias
    x = torch.randn(50, 4)
    graph, stats = _mlp_stats(model, x)
    flap = score(ScoringInput(model, graph, stats), "flap")["0"]
    hidden = torch.relu(model[0](x)).detach()
    expected = hidden.var(dim=0) * model[2].weight.detach().pow(2).sum(dim=0)
    torch.testing.assert_close(torch.from_numpy(flap), expected.double(), rtol=1e-4, atol=1e-6)
    assert float(flap[2]) == pytest.approx(0.0, abs=1e-6) and int(flap.argmin()) == 2
    assert float(score(ScoringInput(model, graph, stats), "wanda")["0"][2]) > 0


# -- uniform widths: a standard config -------------------------------------------------------------


def test_uniform_result_loads_with_plain_from_pretrained_and_generates(tmp_path, documents, tokenizer, trained):
    task = make_task(documents, tokenizer)
    result = prune(trained, task, quiet(criterion="flap", ratio=0.5, tolerance=100.0))
    config = result.model.config
    assert (config.intermediate_size, config.num_key_value_heads, config.num_attention_heads) == (32, 1, 2)
    assert plain_loadable(result.model)
    result.save(tmp_path / "out", html=False)
    tokenizer.save_pretrained(tmp_path / "out")
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = task.make_input(2)
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, result.model(input_ids=ids).logits)
    out = plain.generate(input_ids=ids[:1, :5], max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 11)
    assert torch.equal(out, result.model.generate(input_ids=ids[:1, :5], max_new_tokens=6, do_sample=False,
                                                  pad_token_id=0))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ratio=st.sampled_from([0.1, 0.3, 0.5, 0.7]), criterion=st.sampled_from(["wanda", "flap", "magnitude"]))
def test_save_and_reload_reproduce_the_pruned_lm(tmp_path_factory, documents, tokenizer, trained, ratio, criterion):
    task = make_task(documents, tokenizer)
    result = prune(trained, task, quiet(criterion=criterion, ratio=ratio, tolerance=100.0))
    folder = tmp_path_factory.mktemp("lm") / "out"
    result.save(folder, html=False)
    reloaded = load_pretrained(folder)
    ids = task.make_input(2)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, result.model(input_ids=ids).logits)


def test_generation_check_reports_text_and_speed(tokenizer, trained):
    check = generation_check(trained, tokenizer, "The cat", max_new_tokens=5, batch_sizes=(1, 8), runs=1)
    assert set(check["tokens_per_second"]) == {"batch_1", "batch_8"}
    assert all(v > 0 for v in check["tokens_per_second"].values()) and isinstance(check["text"], str)
    with pytest.raises(DataError, match="gives no tokens"):
        generation_check(trained, tokenizer, "", max_new_tokens=2, batch_sizes=(1,), runs=1)


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture
def lm_folder(tmp_path, documents, tokenizer, trained):
    folder = tmp_path / "tiny-lm"
    trained.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    text = tmp_path / "docs.txt"
    text.write_text("\n".join(documents))
    return folder, text


LM_ARGS = ["--seq-len", "32", "--batch-size", "8", "--calibration-samples", "16", "--quiet", "--latency-runs", "1"]


def test_cli_prunes_a_causal_lm_for_perplexity_with_uniform_widths(tmp_path, lm_folder, capsys):
    folder, text = lm_folder
    out = tmp_path / "out"
    code = main(["prune", "--model", f"hf:{folder}", "--data", f"text:{text}", "--criterion", "wanda", "--ratio", "0.5",
                 "--uniform", "--tolerance", "1", "--distill-seconds", "1", "--prompt", "The cat", "--out", str(out),
                 "--no-html", *LM_ARGS])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "quality = perplexity" in printed.err and "Generation (greedy)" in printed.out
    assert "AutoModelForCausalLM.from_pretrained" in printed.out
    report = json.loads((out / "report.json").read_text())
    assert report["metric"] == "perplexity" and report["generation"]["prompt"] == "The cat"
    assert set(report["generation"]["after"]["tokens_per_second"]) == {"batch_1", "batch_8"}
    plain = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert plain.config.intermediate_size == 32
    assert transformers.AutoTokenizer.from_pretrained(out).eos_token == "<eos>"


def test_cli_protects_the_first_and_last_blocks(tmp_path, lm_folder, capsys):
    folder, text = lm_folder
    out = tmp_path / "out"
    code = main(["prune", "--model", f"hf:{folder}", "--data", f"text:{text}", "--criterion", "flap", "--ratio", "0.5",
                 "--protect-first", "1", "--tolerance", "1", "--out", str(out), "--no-html", *LM_ARGS])
    assert code == 0, capsys.readouterr().err
    model = load_pretrained(out)
    widths = [model.get_submodule(f"{b.path}.mlp.down_proj").in_features for b in find_blocks(model)]
    assert widths == [64, 32]
    assert "per-layer widths differ" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--uniform", "--scope", "global"], "--uniform: --scope global ranks across layers"),
    (["--uniform", "--protect-last", "1"], "--uniform: --protect-first / --protect-last"),
    (["--uniform", "--ignore", "model.layers.0.mlp"], "--uniform: --ignore leaves FFN groups model.layers.0.mlp"),
    (["--protect-first", "1", "--protect-last", "1"], "leave at least one of the model's 2 blocks"),
])
def test_cli_refuses_settings_that_break_uniform_widths_or_protect_everything(lm_folder, capsys, extra, message):
    folder, text = lm_folder
    assert main(["prune", "--model", f"hf:{folder}", "--data", f"text:{text}", *extra, *LM_ARGS]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' loading bar
    assert last.startswith("neuroprune: error") and message in last


def test_cli_uniform_accepts_ignoring_every_head_group(tmp_path, lm_folder, capsys):
    folder, text = lm_folder
    code = main(["prune", "--model", f"hf:{folder}", "--data", f"text:{text}", "--criterion", "magnitude",
                 "--ratio", "0.25", "--uniform", "--ignore", "*:heads", "--tolerance", "1", "--out",
                 str(tmp_path / "out"), "--no-html", *LM_ARGS])
    assert code == 0, capsys.readouterr().err
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.num_key_value_heads == 2
