"""Structured model outputs, torch's transformer blocks, frozen untraceable modules, the report's
per-layer reasons, and reload of layers that check their state-dict version (MNASNet)."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict, namedtuple

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neuroprune as npr
from neuroprune.data import load_digits
from neuroprune.report.table import format_report
from neuroprune.core.selection import lowest_units
from neuroprune.torch.surgery import apply_keep
from neuroprune.torch.layers.attention import HeadPrunedMultiheadAttention

FAST = dict(progress=False, latency_runs=1, tolerance=1.0)


def _leaves(output):
    if isinstance(output, torch.Tensor):
        return [output]
    if dataclasses.is_dataclass(output):
        return [t for f in dataclasses.fields(output) for t in _leaves(getattr(output, f.name))]
    if isinstance(output, dict):
        return [t for k in output for t in _leaves(output[k])]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _leaves(item)]
    return []


def check_masked_removed_reloaded(make, inputs, tmp_path, *, seed=0, share=0.5, tolerance=1e-5):
    """Remove ``share`` of every group at random: masked == removed, shapes kept, reload exact."""
    torch.manual_seed(seed)
    model = make().eval()
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    graph = npr.discover(model, inputs)
    generator = torch.Generator().manual_seed(seed)
    removal = {g.name: lowest_units(g, torch.rand(g.size, generator=generator), int(g.prunable_count * share))
               for g in graph.groups}
    keep = graph.keep_indices(removal)
    with torch.no_grad():
        reference = _leaves(model(*inputs))
        with npr.apply_masks(model, keep):
            masked = _leaves(model(*inputs))
        pruned = apply_keep(model, keep)
        out = _leaves(pruned(*inputs))
    assert [t.shape for t in out] == [t.shape for t in reference]
    for a, b in zip(masked, out):
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    assert after < before
    plan = npr.PruningPlan().compose(keep, graph.module_types, graph.axis_sizes)
    folder = tmp_path / f"saved-{seed}"
    npr.save(folder, pruned, plan)
    torch.manual_seed(seed)
    reloaded = npr.load(folder, make).eval()
    with torch.no_grad():
        again = _leaves(reloaded(*inputs))
    assert all(torch.equal(a, b) for a, b in zip(again, out))
    return graph, pruned


# --- any output structure ----------------------------------------------------------------------------

class SegmentationLike(nn.Module):
    """A backbone with two heads returned in an OrderedDict, as torchvision's deeplabv3 / fcn."""

    def __init__(self):
        super().__init__()
        self.stem, self.body = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.classifier, self.aux = nn.Conv2d(16, 5, 1), nn.Conv2d(8, 5, 1)

    def forward(self, x):
        low = torch.relu(self.stem(x))
        result = OrderedDict()
        result["out"] = self.classifier(torch.relu(self.body(low)))
        result["aux"] = self.aux(low)
        return result


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    features: torch.Tensor


class DataclassOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 16), nn.Linear(16, 12), nn.Linear(12, 3)

    def forward(self, x):
        features = self.fc2(torch.relu(self.fc1(x)))
        return Output(logits=self.head(torch.relu(features)), features=features)


class ReadsARecord(nn.Module):
    """Reads fields of a submodule's dataclass output, then returns a tuple."""

    def __init__(self):
        super().__init__()
        self.inner, self.proj = DataclassOutput(), nn.Linear(12, 6)

    def forward(self, x):
        out = self.inner(x)
        return out.logits, self.proj(torch.relu(out.features))


Pair = namedtuple("Pair", "a b")


class NamedTupleOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.a, self.b = nn.Linear(4, 10), nn.Linear(10, 2), nn.Linear(10, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return Pair(self.a(h), self.b(h))


def test_dict_output_prunes_the_backbone_and_fixes_every_head(tmp_path):
    graph, pruned = check_masked_removed_reloaded(SegmentationLike, torch.randn(2, 3, 8, 8), tmp_path)
    assert sorted(g.name for g in graph.groups) == ["body", "stem"]
    assert graph.frozen == {"classifier": ["model output"], "aux": ["model output"]}
    assert pruned.classifier.out_channels == 5 and pruned.aux.out_channels == 5


def test_dataclass_output_fixes_the_fields_returned(tmp_path):
    graph, _ = check_masked_removed_reloaded(DataclassOutput, torch.randn(3, 4), tmp_path)
    assert [g.name for g in graph.groups] == ["fc1"]  # fc2 is returned as `features`
    assert graph.frozen == {"fc2": ["model output"], "head": ["model output"]}


def test_fields_read_from_a_record_keep_their_channels(tmp_path):
    graph, _ = check_masked_removed_reloaded(ReadsARecord, torch.randn(3, 4), tmp_path)
    assert sorted(g.name for g in graph.groups) == ["inner.fc1", "inner.fc2"]
    assert set(graph.frozen) == {"inner.head", "proj"}


def test_namedtuple_output(tmp_path):
    graph, _ = check_masked_removed_reloaded(NamedTupleOutput, torch.randn(3, 4), tmp_path)
    assert [g.name for g in graph.groups] == ["fc1"]


def test_hugging_face_model_output_fixes_its_fields(tmp_path):
    outputs = pytest.importorskip("transformers.modeling_outputs")

    class WithModelOutput(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 16), nn.Linear(16, 3)

        def forward(self, x):
            return outputs.SequenceClassifierOutput(logits=self.fc2(torch.relu(self.fc1(x))))

    graph, _ = check_masked_removed_reloaded(WithModelOutput, torch.randn(3, 4), tmp_path)
    assert [g.name for g in graph.groups] == ["fc1"] and graph.frozen == {"fc2": ["model output"]}


# --- torch's transformer blocks ----------------------------------------------------------------------

class EncoderModel(nn.Module):
    def __init__(self, width=16, heads=4, layers=2, batch_first=True, norm_first=False, activation="relu",
                 final_norm=False):
        super().__init__()
        self.batch_first = batch_first
        self.inp = nn.Linear(6, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=batch_first,
                                           norm_first=norm_first, activation=activation)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width) if final_norm else None,
                                             enable_nested_tensor=False)
        self.out = nn.Linear(width, 3)

    def forward(self, x):  # x: (N, S, 6)
        h = self.inp(x if self.batch_first else x.transpose(0, 1))
        h = self.encoder(h)
        return self.out(h if self.batch_first else h.transpose(0, 1))


class DecoderLayerModel(nn.Module):
    def __init__(self, norm_first=False):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.layer = nn.TransformerDecoderLayer(16, 4, 40, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.out = nn.Linear(16, 3)

    def forward(self, x, memory):
        return self.out(self.layer(self.inp(x), memory))


class Seq2Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.src, self.tgt = nn.Linear(6, 16), nn.Linear(6, 16)
        self.transformer = nn.Transformer(16, 4, 2, 1, 24, dropout=0.0, batch_first=True)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        causal = nn.Transformer.generate_square_subsequent_mask(4)
        return self.out(self.transformer(self.src(x), self.tgt(x[:, :4]), tgt_mask=causal))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_first=st.booleans(), norm_first=st.booleans(), activation=st.sampled_from(["relu", "gelu"]),
       layers=st.integers(1, 2), final_norm=st.booleans(), seed=st.integers(0, 1000))
def test_transformer_encoder_masked_equals_pruned_equals_reloaded(tmp_path_factory, batch_first, norm_first,
                                                                  activation, layers, final_norm, seed):
    def make():
        return EncoderModel(layers=layers, batch_first=batch_first, norm_first=norm_first, activation=activation,
                            final_norm=final_norm)

    graph, pruned = check_masked_removed_reloaded(make, torch.randn(3, 5, 6), tmp_path_factory.mktemp("enc"),
                                                  seed=seed)
    names = {g.name for g in graph.groups}
    for i in range(layers):
        assert {f"encoder.layers.{i}.self_attn:heads", f"encoder.layers.{i}.linear1"} <= names
        assert isinstance(pruned.encoder.layers[i].self_attn, HeadPrunedMultiheadAttention)
        assert pruned.encoder.layers[i].linear1.out_features == 16  # half of 32
    assert "out" in graph.frozen


def test_encoder_layer_on_its_own_and_the_fused_fast_path(tmp_path):
    """batch_first in eval under no_grad: the unpruned layer runs the fused kernel; results agree."""
    make = lambda: nn.Sequential(nn.Linear(6, 16), nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True),  # noqa: E731
                                 nn.Linear(16, 2))
    graph, pruned = check_masked_removed_reloaded(make, torch.randn(2, 7, 6), tmp_path)
    assert {g.name for g in graph.groups} == {"1.self_attn:heads", "1.linear1"}
    assert pruned[1].self_attn.num_heads == 2 and pruned[1].linear1.out_features == 16


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_prunes_self_and_cross_attention(tmp_path, norm_first):
    graph, pruned = check_masked_removed_reloaded(lambda: DecoderLayerModel(norm_first),
                                                  (torch.randn(2, 4, 6), torch.randn(2, 7, 16)), tmp_path)
    assert {g.name for g in graph.groups} == {"layer.self_attn:heads", "layer.multihead_attn:heads", "layer.linear1"}
    assert pruned.layer.multihead_attn.num_heads == 2


def test_nn_transformer_with_a_causal_mask(tmp_path):
    graph, _ = check_masked_removed_reloaded(Seq2Seq, torch.randn(2, 6, 6), tmp_path)
    names = {g.name for g in graph.groups}
    assert {"transformer.encoder.layers.1.linear1", "transformer.decoder.layers.0.multihead_attn:heads"} <= names


def test_pruned_encoder_with_a_padding_mask_leaves_the_nested_tensor_path():
    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.out = nn.Linear(6, 16), nn.Linear(16, 3)
            self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2)

        def forward(self, x, padding):
            return self.out(self.encoder(self.inp(x), src_key_padding_mask=padding))

    torch.manual_seed(0)
    model = Padded().eval()
    x, padding = torch.randn(2, 5, 6), torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    graph = npr.discover(model, (x, padding))
    keep = graph.keep_indices({g.name: np.array([0, 1]) for g in graph.groups})
    with torch.no_grad():
        with npr.apply_masks(model, keep):
            masked = model(x, padding)  # packed into a nested tensor by the fused path
        pruned = apply_keep(model, keep)
        out = pruned(x, padding)
    assert pruned.encoder.use_nested_tensor is False
    torch.testing.assert_close(out[~padding], masked[~padding], rtol=1e-5, atol=1e-5)


def test_prune_scores_transformer_blocks_with_activation_statistics(tmp_path):
    task = npr.ClassificationTask(load_digits(layout="sequence"))

    class Digits(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(8, 16)
            self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True),
                                                 1, enable_nested_tensor=False)
            self.out = nn.Linear(16, 10)

        def forward(self, x):
            return self.out(self.encoder(self.inp(x)).mean(dim=1))

    torch.manual_seed(0)
    result = npr.prune(Digits(), task, npr.PruneConfig(criterion="activation_frequency", ratio=0.5, **FAST))
    widths = {layer["name"]: layer["width_after"] for layer in result.report["layers"]}
    assert widths == {"encoder.layers.0.self_attn:heads": 2, "encoder.layers.0.linear1": 16}
    result.save(tmp_path / "out", html=False)
    torch.manual_seed(0)
    reloaded = npr.load(tmp_path / "out", Digits).eval()
    x = torch.randn(3, 8, 8)
    with torch.no_grad():
        assert torch.equal(reloaded(x), result.model.eval()(x))


# --- modules that cannot be followed --------------------------------------------------------------

class ValueDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        h = self.fc(x)
        if h.sum() > 0:  # control flow on tensor values: torch.fx cannot trace it
            h = 2 * h
        return h


class WithAwkwardBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.block, self.fc2, self.fc3 = nn.Linear(64, 16), ValueDependent(), nn.Linear(16, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(self.block(torch.relu(self.fc1(x))))))


class CumSumBlock(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=-1)


def test_untraceable_block_raises_naming_it_unless_ignore_untraceable():
    x = torch.randn(2, 64)
    with pytest.raises(npr.UnsupportedModuleError, match=r"cannot trace module 'block' \(ValueDependent\)") as info:
        npr.discover(WithAwkwardBlock(), x)
    assert info.value.module == "block"
    graph = npr.discover(WithAwkwardBlock(), x, ignore_untraceable=True)
    assert [g.name for g in graph.groups] == ["fc2"]
    assert list(graph.frozen_modules) == ["block"] and "TraceError" in graph.frozen_modules["block"]
    assert any("block: frozen, cannot trace" in r for r in graph.frozen["fc1"])


def test_ignore_untraceable_also_freezes_a_module_with_an_unknown_operation():
    model = nn.Sequential(nn.Linear(4, 8), CumSumBlock(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(npr.UnsupportedModuleError, match="operation 'cumsum'"):
        npr.discover(model, torch.randn(2, 4))
    graph = npr.discover(model, torch.randn(2, 4), ignore_untraceable=True)
    assert [g.name for g in graph.groups] == ["2"] and list(graph.frozen_modules) == ["1"]


def test_a_module_called_twice_is_frozen_by_its_own_path():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.odd, self.fc2, self.fc3 = nn.Linear(4, 8), CumSumBlock(), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.odd(self.fc1(x))
            return self.fc3(torch.relu(self.odd(self.fc2(torch.relu(h)))))

    graph = npr.discover(Twice(), torch.randn(2, 4), ignore_untraceable=True)
    assert list(graph.frozen_modules) == ["odd"] and graph.groups == []


def test_a_problem_in_the_model_forward_itself_still_raises():
    class TopLevel(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            h = self.fc(x)
            return h if h.sum() > 0 else -h

    with pytest.raises(npr.UnsupportedModuleError, match="cannot trace the model's forward"):
        npr.discover(TopLevel(), torch.randn(2, 4), ignore_untraceable=True)


def test_prune_with_ignore_untraceable_reports_the_frozen_modules():
    task = npr.ClassificationTask(load_digits())
    torch.manual_seed(0)
    with pytest.raises(npr.UnsupportedModuleError, match="pass ignore=\\['block'\\]"):
        npr.prune(WithAwkwardBlock(), task, npr.PruneConfig(criterion="magnitude", ratio=0.5, **FAST))
    result = npr.prune(WithAwkwardBlock(), task, npr.PruneConfig(criterion="magnitude", ratio=0.5,
                                                                ignore_untraceable=True, **FAST))
    assert list(result.report["frozen_modules"]) == ["block"]
    assert result.report["config"]["ignore_untraceable"] is True
    text = format_report(result.report)
    assert "Frozen modules" in text and "block" in text and "TraceError" in text


def test_cli_ignore_untraceable(tmp_path, capsys):
    from neuroprune.cli.main import main

    source = tmp_path / "awkward.py"
    source.write_text(
        "import torch, torch.nn as nn\n"
        "class Block(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(16, 16)\n"
        "    def forward(self, x):\n        h = self.fc(x)\n        return 2 * h if h.sum() > 0 else h\n"
        "def build(data=None):\n"
        "    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), Block(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))\n")
    common = ["prune", "--model", f"{source}:build", "--data", "digits", "--criterion", "magnitude", "--ratio", "0.5",
              "--tolerance", "1", "--latency-runs", "1", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "refused")]) == 2
    assert "cannot trace module '2' (Block)" in capsys.readouterr().err
    assert main([*common, "--ignore-untraceable", "--out", str(tmp_path / "out")]) == 0
    assert "Frozen modules" in capsys.readouterr().out
    assert list(json.loads((tmp_path / "out" / "report.json").read_text())["frozen_modules"]) == ["2"]


# --- why layers kept more ------------------------------------------------------------------------

def test_report_says_why_layers_kept_more_than_the_ratio():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3, self.head = nn.Linear(64, 32), nn.Linear(32, 10), nn.Linear(64, 24), nn.Linear(24, 10)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x))) + self.head(torch.relu(self.fc3(x)))

    task = npr.ClassificationTask(load_digits())
    torch.manual_seed(0)
    config = npr.PruneConfig(criterion="magnitude", ratio=0.5, min_width=20, **FAST)
    result = npr.prune(Residual(), task, config)
    rows = {layer["name"]: layer for layer in result.report["layers"]}
    assert rows["fc1"]["width_after"] == 20 and rows["fc1"]["kept_because"] == ["min_width 20"]
    assert rows["fc3"]["width_after"] == 20 and rows["fc3"]["fixed_units"] == 0
    assert result.report["fixed_layers"] == {"fc2": ["model output"]}
    text = format_report(result.report)
    assert "kept because" in text and "min_width 20" in text and "Fixed layers" in text


def test_partly_fixed_group_lists_its_fixed_units_and_why():
    class PartlyFixed(nn.Module):
        """fc_b is returned, so the half of the residual group tied to it is fixed."""

        def __init__(self):
            super().__init__()
            self.fc_y, self.fc_a, self.fc_b, self.head = nn.Linear(4, 16), nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(16, 3)

        def forward(self, x):
            b = self.fc_b(x)
            z = self.fc_y(x) + torch.cat([self.fc_a(x), b], dim=-1)
            return self.head(torch.relu(z)), b

    from neuroprune.core.remainder import layer_entry

    (group,) = npr.discover(PartlyFixed(), torch.randn(2, 4)).groups
    assert (group.name, group.size, group.prunable_count, group.frozen_reasons) == ("fc_b", 16, 8, ["model output"])
    row = layer_entry(group, width_after=8, target=8, min_width=1, round_to=1, ignored=False, rolled_back=False)
    assert row["fixed_units"] == 8 and row["kept_because"] == ["8 units fixed: model output"]


# --- reload of layers that check their state-dict version (torchvision MNASNet) ------------------

class VersionChecked(nn.Module):
    """Like torchvision's MNASNet: ``_version = 2`` and a ``_load_from_state_dict`` that refuses
    a state dict without version metadata."""

    _version = 2

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                    nn.Conv2d(16, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        return self.layers(x)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        version = local_metadata.get("version", None)
        if version not in [1, 2]:
            raise ValueError(f"version should be set to 1 or 2 instead of {version}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def test_layers_that_check_their_version_reload(tmp_path):
    graph, _ = check_masked_removed_reloaded(VersionChecked, torch.randn(2, 3, 8, 8), tmp_path)
    assert graph.groups


def test_tied_weights_still_reload(tmp_path):
    def make():
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
        model[2].weight = model[0].weight
        return model

    torch.manual_seed(0)
    model = make()
    npr.save(tmp_path / "tied", model, npr.PruningPlan())
    reloaded = npr.load(tmp_path / "tied", make)
    x = torch.randn(2, 4)
    assert reloaded[2].weight is reloaded[0].weight and torch.equal(reloaded(x), model(x))
