"""Settings files and API arguments: one ConfigError listing every problem; accepted options act."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import neuroprune as npr
from neuroprune.cli.main import main
from neuroprune.core.config import PruneConfig
from neuroprune.core.config_file import load_config_file
from neuroprune.core.errors import ConfigError, NeuropruneError, ReportError
from neuroprune.torch.graph.discover import discover
from neuroprune.core.policy import LayerPolicy, resolve_policies
from neuroprune.torch.metrics import measure_latency_ms
from neuroprune.report.table import read_report_json


def _toml(tmp_path, text: str | bytes, name: str = "prune.toml"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# --- TOML files ------------------------------------------------------------------------------------


def test_wrong_types_and_a_single_layer_table_are_listed_together(tmp_path):
    path = _toml(tmp_path, '[prune]\nignore = 5\nreconstruct = "no"\nsteps = "3"\n[layer]\npattern = "fc1"\nratio = 0.3\n')
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    problems = caught.value.problems
    assert any("[layer] is a single table; write each layer policy as [[layer]]" in p for p in problems)
    assert any('ignore must be a list of module paths, e.g. ignore = ["fc1"], got 5' in p for p in problems)
    assert any(p.startswith("steps must be an integer >= 1, got '3' (a string)") for p in problems)
    assert "reconstruct must be true or false, got 'no' (a string)" in problems
    assert len(problems) == 4


def test_reconstruct_given_as_a_string_never_turns_reconstruction_on():
    with pytest.raises(ConfigError, match="reconstruct must be true or false, got 'no'"):
        PruneConfig(reconstruct="no")


def test_layer_table_types_are_checked(tmp_path):
    path = _toml(tmp_path, '[[layer]]\npattern = "fc*"\nmin_width = "8"\nignore = "yes"\nratio = "0.2"\n')
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    text = str(caught.value)
    for fragment in ("min_width must be an integer >= 1, got '8'", "ignore must be true or false, got 'yes'",
                     "ratio must lie in [0, 1), got '0.2'"):
        assert fragment in text


def test_non_utf8_file_is_a_config_error(tmp_path):
    path = _toml(tmp_path, b"[prune]\nratio = 0.5\n# caf\xe9\n")
    with pytest.raises(ConfigError, match="not a UTF-8 text file \\(byte 25 is 0xe9\\); TOML files must be UTF-8"):
        load_config_file(path)


def test_directory_as_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; give a .toml file"):
        load_config_file(tmp_path)


def test_prune_key_that_is_not_a_table(tmp_path):
    with pytest.raises(ConfigError, match="'prune' must be a table"):
        load_config_file(_toml(tmp_path, "prune = 3\n"))


def test_cli_directory_config_exit_2_one_line(tmp_path, capsys):
    code = main(["prune", "--model", "zoo:mlp", "--config", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is a folder" in err[0] and not (tmp_path / "o").exists()


# --- PruneConfig from Python -----------------------------------------------------------------------


def test_ignore_as_a_string_is_one_module_path_not_letters():
    assert PruneConfig(ignore="fc1").ignore == ("fc1",)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(ignore=5), "ignore must be a list of module paths (strings), got 5"),
    (dict(ignore=["fc1", 2]), "ignore must be a list of module paths (strings)"),
    (dict(steps="3"), "steps must be an integer >= 1, got '3' (a string)"),
    (dict(seed=-1), "seed must be >= 0, got -1"),
    (dict(ratio="0.5"), "ratio must be a number in [0, 1), got '0.5' (a string)"),
    (dict(layers=[{"pattern": "fc1", "colour": "red"}]), "layers[0]: LayerPolicy.__init__() got an unexpected keyword"),
    (dict(criterion_options="p=1"), "criterion_options must be a table"),
    (dict(criterion=3), "criterion must be a name (string), got 3"),
    (dict(progress="yes"), "progress must be true or false"),
])
def test_prune_config_refuses_wrong_types_with_a_config_error(kwargs, fragment):
    with pytest.raises(ConfigError) as caught:
        PruneConfig(**kwargs)
    assert any(fragment in p for p in caught.value.problems), caught.value.problems


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        PruneConfig(steps="3", reconstruct="no", ignore=5, seed=-2)
    assert len(caught.value.problems) == 4


def test_layer_patterns_matching_no_layer_are_listed_together():
    model = npr.build_model("mlp")
    graph = discover(model, torch.randn(2, 64))
    config = PruneConfig(layers=(LayerPolicy(pattern="fc9"), LayerPolicy(layer_type="Conv2d"), LayerPolicy(pattern="fc1")))
    with pytest.raises(ConfigError) as caught:
        resolve_policies(graph, config)
    assert [p.split(" matches")[0] for p in caught.value.problems] == ["layer policy pattern='fc9'",
                                                                       "layer policy type='Conv2d'"]


# --- options that are accepted act ------------------------------------------------------------------


def _run_with_config(tmp_path, capsys, toml: str, *flags: str) -> tuple[int, dict | None, str]:
    config = _toml(tmp_path, toml)
    out = tmp_path / "out"
    code = main(["prune", "--model", "zoo:mlp", "--train-epochs", "0", "--config", str(config), "--ratio", "0.25",
                 "--tolerance", "1", "--quiet", "--no-html", "--out", str(out), *flags])
    report = json.loads((out / "report.json").read_text()) if code == 0 else None
    return code, report, capsys.readouterr().err


@pytest.mark.parametrize("toml, flags, options", [
    ('[prune]\ncriterion = "magnitude"\n', ["--norm", "1", "--include-outgoing"], {"p": 1, "outgoing": True}),
    ('[prune]\ncriterion = "magnitude"\n[prune.criterion_options]\np = 1\n', ["--include-outgoing"],
     {"p": 1, "outgoing": True}),
    ('[prune]\ncriterion = "rank"\n', ["--rank-members", "magnitude,random", "--rank-weights", "2,1"],
     {"members": ["magnitude", "random"], "weights": [2.0, 1.0]}),
])
def test_criterion_flags_act_when_the_criterion_comes_from_config(tmp_path, capsys, toml, flags, options):
    code, report, err = _run_with_config(tmp_path, capsys, toml, *flags)
    assert code == 0, err
    assert report["config"]["criterion_options"] == options


def test_criterion_flag_for_another_criterion_is_refused(tmp_path, capsys):
    code, _, err = _run_with_config(tmp_path, capsys, '[prune]\ncriterion = "taylor"\n', "--norm", "2")
    assert code == 2 and "--norm applies to the magnitude criterion, but the criterion is 'taylor'" in err


def test_criterion_on_the_command_line_overrides_the_files_options(tmp_path, capsys):
    toml = '[prune]\ncriterion = "magnitude"\n[prune.criterion_options]\np = 1\n'
    code, report, err = _run_with_config(tmp_path, capsys, toml, "--criterion", "taylor")
    assert code == 0, err
    assert report["config"]["criterion"] == "taylor" and report["config"]["criterion_options"] == {}


# --- library errors are neuroprune errors -----------------------------------------------------------


def test_library_argument_errors_are_neuroprune_errors(tmp_path):
    with pytest.raises(NeuropruneError, match="runs must be at least 1, got 0"):
        measure_latency_ms(torch.nn.Linear(2, 2), torch.randn(1, 2), runs=0)
    (tmp_path / "r.json").write_text("[1, 2]")
    with pytest.raises(ReportError, match="holds a JSON list, not an object"):
        read_report_json(tmp_path / "r.json")
    from neuroprune.core.plan import PruningPlan

    npr.save(tmp_path / "saved", torch.nn.Linear(2, 2), PruningPlan())
    with pytest.raises(ConfigError, match="model_or_builder must be an nn.Module or a function returning one, got int"):
        npr.load(tmp_path / "saved", 5)


def test_ignore_string_leaves_that_layer_whole_through_prune():
    from neuroprune.data import load_digits

    result = npr.prune(npr.build_model("mlp"), npr.ClassificationTask(load_digits()),
                       PruneConfig(criterion="magnitude", ratio=0.5, tolerance=1, ignore="fc1", progress=False,
                                   latency_runs=20))
    widths = {layer["name"]: layer["width_after"] for layer in result.report["layers"]}
    assert widths.get("fc1", 128) == 128 and widths["fc2"] == 32
    assert np.isfinite(result.report["after"]["accuracy"])
