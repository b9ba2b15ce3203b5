"""Hugging Face models: head and FFN groups, masks == surgery, config sync, text task, save/load, CLI.

Everything runs offline on tiny models built from configs (random weights) and a word-level
tokenizer built here; the real MiniLM is used by the one slow test only.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers  # noqa: E402
from transformers import AutoModel, BertConfig, BertModel, LlamaConfig, LlamaModel, PreTrainedTokenizerFast  # noqa: E402

import neuroprune  # noqa: E402
from neuroprune import PruneConfig, prune  # noqa: E402
from neuroprune.core.backend import backend_for  # noqa: E402
from neuroprune.hf.adapter import load_model, load_pretrained, plain_loadable  # noqa: E402
from neuroprune.cli.main import main  # noqa: E402
from neuroprune.core.errors import CheckpointError, ConfigError, NoSignalError  # noqa: E402
from neuroprune.torch.recover.distill import distill  # noqa: E402
from neuroprune.torch.recover.reconstruct import reconstruct  # noqa: E402
from neuroprune.core.criteria import ScoringInput, score  # noqa: E402
from neuroprune.torch.stats import collect_statistics  # noqa: E402
from neuroprune.torch.surgery import apply_keep  # noqa: E402
from neuroprune.torch.masks import apply_masks  # noqa: E402
from neuroprune.tasks.text import TextTask, fidelity_summary, neighbour_agreement  # noqa: E402

WORDS = ("the a an this that cat dog bird fish horse sat ran flew swam jumped on over under near by mat log "
         "tree pond field quickly slowly happily far away home today again red blue green big small old").split()


def make_sentences(n: int = 48, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(n)]


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")


VOCAB = len(WORDS) + 2


def tiny_bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0)
    return BertModel(config).eval()


def tiny_llama(seed: int = 0) -> LlamaModel:
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0)
    return LlamaModel(config).eval()


FACTORIES = {"bert": tiny_bert, "llama": tiny_llama}


def inputs(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    mask[2, 4:] = 0
    return ids, mask


def hidden(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


def uneven_removal(graph) -> dict[str, np.ndarray]:
    """Different widths and head counts per layer."""
    removal = {}
    for i, group in enumerate(graph.groups):
        if group.name.endswith(":heads"):
            removal[group.name] = np.arange(min(i // 2 + 1, group.size - 1))
        else:
            removal[group.name] = np.arange(0, group.size, 2 + i)
    return removal


def test_bert_groups_are_heads_and_ffn_neurons():
    model = tiny_bert()
    graph = backend_for(model).discover(model, None)
    assert backend_for(model).name == "hf"
    assert [(g.name, g.size) for g in graph.groups] == [
        ("encoder.layer.0.attention:heads", 4), ("encoder.layer.0.intermediate.dense", 64),
        ("encoder.layer.1.attention:heads", 4), ("encoder.layer.1.intermediate.dense", 64)]
    heads = graph.groups[0]
    assert [(m.path.rsplit(".", 2)[-2:], m.axis) for m in heads.members] == [
        (["self", "query"], "out"), (["self", "key"], "out"), (["self", "value"], "out"), (["output", "dense"], "in")]
    assert heads.members[0].unit_of.tolist() == [h for h in range(4) for _ in range(8)]
    ffn = graph.groups[1]
    assert [(m.path, m.axis) for m in ffn.members] == [("encoder.layer.0.intermediate.dense", "out"),
                                                        ("encoder.layer.0.output.dense", "in")]
    assert "hidden size" in graph.frozen


def test_llama_gqa_units_are_key_value_groups():
    model = tiny_llama()
    graph = backend_for(model).discover(model, None)
    heads = graph.group("layers.0.self_attn:heads")
    assert heads.size == 2  # 4 query heads share 2 key/value heads
    query, key = heads.members[0], heads.members[1]
    assert query.unit_of.tolist() == [h // 2 for h in range(4) for _ in range(8)]
    assert key.unit_of.tolist() == [h for h in range(2) for _ in range(8)]
    keep = graph.keep_indices({"layers.0.self_attn:heads": np.array([0])})
    assert keep["layers.0.self_attn.q_proj"]["out"].tolist() == list(range(16, 32))  # query heads 2 and 3
    assert keep["layers.0.self_attn.k_proj"]["out"].tolist() == list(range(8, 16))  # their key/value head
    small = apply_keep(model, keep)
    backend_for(small).after_surgery(small)
    assert small.config.neuroprune_num_heads == [2, 4] and small.config.neuroprune_num_key_value_heads == [1, 2]
    assert small.layers[0].self_attn.num_key_value_groups == 2  # the grouping is intact


def test_ignore_takes_paths_and_group_patterns():
    model = tiny_bert()
    adapter = backend_for(model)
    assert [g.name for g in adapter.discover(model, None, ignore=("*:heads",)).groups] == [
        "encoder.layer.0.intermediate.dense", "encoder.layer.1.intermediate.dense"]
    names = [g.name for g in adapter.discover(model, None, ignore=("encoder.layer.0",)).groups]
    assert names == ["encoder.layer.1.attention:heads", "encoder.layer.1.intermediate.dense"]


@pytest.mark.parametrize("family", sorted(FACTORIES))
def test_masked_equals_removed_with_per_layer_widths_and_heads(family):
    model = FACTORIES[family]()
    adapter = backend_for(model)
    graph = adapter.discover(model, None)
    removal = uneven_removal(graph)
    keep = graph.keep_indices(removal)
    ids, mask = inputs()
    with apply_masks(model, keep):
        masked = hidden(model, ids, mask)
    small = apply_keep(model, keep)
    adapter.after_surgery(small)
    torch.testing.assert_close(hidden(small, ids, mask), masked, atol=1e-5, rtol=1e-4)
    removed_params = sum((m.weight.numel() + (m.bias.numel() if m.bias is not None else 0))
                         for m in model.modules() if isinstance(m, torch.nn.Linear)) - \
        sum((m.weight.numel() + (m.bias.numel() if m.bias is not None else 0))
            for m in small.modules() if isinstance(m, torch.nn.Linear))
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in small.parameters()) == removed_params > 0
    widths = [g.size - len(removal[g.name]) for g in graph.groups]
    assert small.config.neuroprune_intermediate_sizes == widths[1::2]
    per_group = 2 if family == "llama" else 1
    assert small.config.neuroprune_num_heads == [w * per_group for w in widths[0::2]]
    assert len(set(small.config.neuroprune_intermediate_sizes)) == 2  # really different per layer
    assert small.config.hidden_size == 32 and small.config.intermediate_size == 64  # not expressible: unchanged
    assert [g.size for g in adapter.discover(small, None).groups] == widths
    if family == "bert":
        assert small.encoder.layer[0].attention.self.num_attention_heads == widths[0]


@pytest.fixture(scope="module")
def bound_task():
    model = tiny_bert()
    task = TextTask(make_sentences(), make_tokenizer(), batch_size=8, calibration_samples=16, val_samples=8,
                    test_samples=8)
    return model, task.bind(model)


def test_text_task_splits_fidelity_and_loss_signal(bound_task):
    model, task = bound_task
    assert task.split_sizes() == {"train": 32, "val": 8, "test": 8, "calibration": 16}
    again = TextTask(make_sentences(), make_tokenizer(), batch_size=8, calibration_samples=16, val_samples=8, test_samples=8)
    assert again.sentences == task.sentences  # deterministic
    assert task.metric_name == "fidelity" and task.evaluate(model, "val") == pytest.approx(1.0, abs=1e-5)
    batch = task.calibration_batches()[0]
    assert torch.equal(task.token_mask(batch), batch["attention_mask"])
    assert task.distill_loss(model, batch).item() == pytest.approx(0.0, abs=1e-6)
    assert task.loss(model, batch).item() > 0  # the scoring loss has a gradient on the unpruned model
    inputs = task.make_input(5)  # by keyword: model(**inputs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert sorted(inputs) == ["attention_mask", "input_ids"] and ids.shape[0] == 5 and mask.shape == ids.shape


def test_statistics_ignore_padding_and_accumulate_over_batches(bound_task):
    model, task = bound_task
    graph = backend_for(model).discover(model, None)
    batch = task.calibration_batches()[0]
    padded = {k: v for k, v in batch.items()}
    extra = 5
    padded["input_ids"] = torch.cat([batch["input_ids"], torch.zeros(len(batch["input_ids"]), extra, dtype=torch.long)], 1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros_like(padded["input_ids"][:, :extra])], 1)

    def stats(batches):
        return collect_statistics(model, graph, batches, task.loss, gram=True, progress=False,
                                  token_mask=task.token_mask)

    one, two = stats([batch]), stats([padded])
    for key, entry in one.axes.items():
        assert entry.act_n == two.axes[key].act_n == int(batch["attention_mask"].sum())
        torch.testing.assert_close(entry.act_abs, two.axes[key].act_abs, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(entry.act_count, two.axes[key].act_count, rtol=0, atol=2)
        if entry.gram is not None:  # the Gram matrices of the obs criterion skip padding rows too
            torch.testing.assert_close(entry.gram, two.axes[key].gram, rtol=1e-4, atol=1e-3)
            assert entry.gram[-1, -1] == int(batch["attention_mask"].sum())
    both = stats([batch, padded])
    key = ("encoder.layer.0.output.dense", "in")
    assert both.axes[key].act_n == 2 * one.axes[key].act_n  # every batch counts, not only the last


def test_obs_scores_heads_and_ffn_neurons(bound_task):
    model, task = bound_task
    config = PruneConfig(criterion="obs", ratio=0.5, tolerance=1.0, reconstruct=True, progress=False, latency_runs=1)
    result = prune(model, task, config)
    assert result.model.config.neuroprune_num_heads == [2, 2]  # head blocks (8 columns each) scored as units
    assert result.model.config.neuroprune_intermediate_sizes == [32, 32]
    assert task.evaluate(result.model, "val") > 0.99


def test_reconstruction_ignores_padding_rows(bound_task):
    model, task = bound_task
    graph = backend_for(model).discover(model, None, ignore=("*:heads",))
    keep = graph.keep_indices({g.name: np.arange(0, g.size, 2) for g in graph.groups})
    batch = task.calibration_batches()[0]
    padded = dict(batch)
    padded["input_ids"] = torch.cat([batch["input_ids"], torch.full_like(batch["input_ids"][:, :4], 5)], 1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros_like(batch["attention_mask"][:, :4])], 1)
    fitted = []
    for data in ([batch], [padded]):
        student = apply_keep(model, {})
        with apply_masks(student, keep) as handle:
            reconstruct(student, model, keep, data, task.loss, progress=False, token_mask=task.token_mask)
            handle.commit()
        fitted.append(student.encoder.layer[1].output.dense.weight.detach().clone())
    torch.testing.assert_close(fitted[0], fitted[1], rtol=1e-3, atol=1e-4)


def test_all_equal_scores_are_refused_not_pruned_by_index(bound_task):
    model, task = bound_task
    graph = backend_for(model).discover(model, None)
    constant = lambda m, b: task.encode(m, b).sum() * 0.0  # noqa: E731  (no gradient signal at all)
    stats = collect_statistics(model, graph, task.calibration_batches()[:1], constant, activations=False,
                               gradients=True, progress=False)
    with pytest.raises(NoSignalError, match=r"criterion 'taylor' gives all 4 neurons of group "
                                            r"'encoder.layer.0.attention:heads' the same score .*index order"):
        score(ScoringInput(model, graph, stats), "taylor")
    assert score(ScoringInput(model, graph, stats), "random")  # random never has that problem


def test_distillation_lowers_the_loss_within_its_budget(bound_task):
    model, task = bound_task
    graph = backend_for(model).discover(model, None, ignore=("*:heads",))
    small = apply_keep(model, graph.keep_indices({g.name: np.arange(0, 48) for g in graph.groups}))
    before = task.evaluate(small, "train")
    result = distill(small, task, epochs=3, learning_rate=1e-3, progress=False)
    assert result.steps == 12 and result.stopped == "epochs" and task.evaluate(small, "train") > before
    assert distill(small, task, epochs=50, max_seconds=0.2, progress=False).stopped == "time"


def test_prune_save_and_reload_exactly(tmp_path, bound_task):
    model, task = bound_task
    config = PruneConfig(criterion="taylor", ratio=0.5, tolerance=1.0, reconstruct=True, finetune_epochs=1,
                         progress=False, latency_runs=1)
    result = prune(model, task, config)
    assert result.report["metric"] == "fidelity" and 0 < result.report["after"]["accuracy"] <= 1.0
    assert result.model.config.neuroprune_intermediate_sizes == [32, 32]
    assert result.model.config.neuroprune_num_heads == [2, 2]
    folder = tmp_path / "pruned"
    result.save(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["neuroprune_num_heads"] == [2, 2] and saved["intermediate_size"] == 32
    ids, mask = inputs()
    expected = hidden(result.model, ids, mask)
    assert torch.equal(hidden(neuroprune.load(folder, tiny_bert), ids, mask), expected)
    assert torch.equal(hidden(load_pretrained(folder), ids, mask), expected)
    assert not plain_loadable(result.model)  # a BERT with pruned heads: the config cannot say so
    with pytest.raises(RuntimeError, match="mismatch"):
        AutoModel.from_pretrained(folder)


@pytest.mark.parametrize("family,ignore", [("bert", ("*:heads",)), ("llama", ())])
def test_plain_from_pretrained_where_the_config_can_express_it(tmp_path, family, ignore):
    model = FACTORIES[family]()
    adapter = backend_for(model)
    graph = adapter.discover(model, None, ignore=ignore)
    removal = {g.name: np.arange(g.size // 2) for g in graph.groups}  # uniform across layers
    plan = neuroprune.PruningPlan(adapter="hf").compose(graph.keep_indices(removal), graph.module_types, graph.axis_sizes)
    small = neuroprune.apply_plan(model, plan)
    assert plain_loadable(small)
    neuroprune.save(tmp_path / "out", small, plan, extra=adapter.extra_files(small))
    ids, mask = inputs()
    reloaded = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert torch.equal(hidden(reloaded, ids, mask), hidden(small, ids, mask))


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def test_cli_prunes_a_folder_on_a_text_file(tmp_path, model_dir, capsys):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(make_sentences(40)) + "\n")
    out = tmp_path / "out"
    code = main(["prune", "--model", f"hf:{model_dir}", "--data", f"text:{text}", "--criterion", "activation_mean",
                 "--ratio", "0.5", "--ignore", "*:heads", "--tolerance", "1", "--reconstruct", "--distill-seconds",
                 "1", "--batch-size", "8", "--out", str(out), "--json", str(tmp_path / "r.json"), "--quiet",
                 "--latency-runs", "1"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "fidelity" in printed.out and "accuracy" not in printed.out.split("Config")[0]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["metric"] == "fidelity" and report["config"]["finetune_epochs"] == 100
    assert [layer["width_after"] for layer in report["layers"]] == [32, 32]
    assert "AutoModel.from_pretrained" in printed.out  # uniform FFN widths, heads kept: plain loading works
    reloaded, tokenizer = load_model(str(out))
    plain = AutoModel.from_pretrained(out).eval()
    ids, mask = inputs()
    assert torch.equal(hidden(reloaded, ids, mask), hidden(plain, ids, mask))


def test_cli_errors_are_one_line(tmp_path, model_dir, capsys):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(make_sentences(10)))
    assert main(["prune", "--model", "hf:no-such-org/no-such-model", "--data", f"text:{text}", "--quiet"]) == 2
    assert "is not a local folder and downloads are off" in capsys.readouterr().err
    assert main(["prune", "--model", f"hf:{model_dir}", "--data", "digits", "--quiet"]) == 2
    assert "hf models take text data" in capsys.readouterr().err
    assert main(["prune", "--model", "zoo:mlp", "--data", f"text:{text}", "--quiet"]) == 2
    assert "needs a Hugging Face model" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not a local folder"):
        load_model("missing/model")
    assert main(["prune", "--model", f"hf:{model_dir}", "--data", f"text:{text}", "--train-epochs", "2",
                 "--quiet"]) == 2
    assert "--train-epochs is not available for hf models" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load hf model"):
        load_model(str(broken))


def test_load_pretrained_refuses_folders_it_did_not_write(tmp_path, model_dir):
    with pytest.raises(CheckpointError, match="has no readable config.json"):
        load_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no 'neuroprune_original' entry"):
        load_pretrained(model_dir)  # a plain transformers folder, not pruned by neuroprune


def test_neighbour_agreement_and_summary():
    teacher = torch.nn.functional.normalize(torch.randn(40, 6, generator=torch.Generator().manual_seed(0)), dim=1)
    assert neighbour_agreement(teacher, teacher, k=5) == 1.0
    summary = fidelity_summary(teacher + 0.01, teacher)
    assert summary["cosine_mean"] > 0.99 and set(summary) == {"cosine_mean", "cosine_p5", "neighbours_top10"}


@pytest.mark.slow
def test_real_minilm_ffn_half_with_reconstruction(tmp_path):
    from neuroprune.tasks.text import stdlib_sentences

    model, tokenizer = load_model("all-MiniLM-L6-v2")
    task = TextTask(stdlib_sentences(600), tokenizer, calibration_samples=128, val_samples=64, test_samples=128,
                    train_samples=256)
    result = prune(model, task, PruneConfig(criterion="activation_mean", ratio=0.5, tolerance=1.0, reconstruct=True,
                                            ignore=("*:heads",), progress=False, latency_runs=1))
    assert result.model.config.intermediate_size == 768 and plain_loadable(result.model)
    assert result.report["after"]["accuracy"] > 0.85
    result.save(tmp_path / "minilm")
    inputs = task.make_input(4)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert torch.equal(hidden(load_pretrained(tmp_path / "minilm"), ids, mask), hidden(result.model, ids, mask))


@pytest.mark.parametrize("family", sorted(FACTORIES))
def test_residual_aware_reconstruction_fits_the_teachers_residual_sum(family):
    model = FACTORIES[family]()
    adapter = backend_for(model)
    sums = adapter.residual_sums(model)
    assert len(sums) == 4 and all(model.get_submodule(p) is not None for p in sums.values())
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
    assert errors[1] < errors[0]  # absorbing the residual stream's error helps the final embedding


def test_extra_training_sentences_only_extend_the_training_split():
    sentences = make_sentences(40)
    extra = make_sentences(30, seed=9) + sentences[:5]
    task = TextTask(sentences, make_tokenizer(), calibration_samples=10, val_samples=8, test_samples=8,
                    train_sentences=extra)
    plain = TextTask(sentences, make_tokenizer(), calibration_samples=10, val_samples=8, test_samples=8)
    assert task.sentences["test"] == plain.sentences["test"] and task.sentences["calibration"] == plain.sentences["calibration"]
    assert set(task.sentences["train"]) >= set(plain.sentences["train"])
    assert not set(task.sentences["train"]) & (set(task.sentences["test"]) | set(task.sentences["val"]))
