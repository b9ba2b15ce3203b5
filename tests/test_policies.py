"""Layer policies, TOML configuration files and resume after a crash."""

from __future__ import annotations

import pytest
import torch
from models import mlp, toy_data

from neuroprune import ClassificationTask, PruneConfig, discover, prune
from neuroprune.core.config_file import load_config_file
from neuroprune.core.errors import CheckpointError, ConfigError
from neuroprune.core.policy import LayerPolicy, resolve_policies
from neuroprune.torch.recover.finetune import finetune

FAST = dict(progress=False, latency_runs=1, tolerance=1.0)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    task = ClassificationTask(toy_data(), batch_size=16)
    model = mlp((6, 16, 12, 10, 3))
    finetune(model, task, epochs=20, progress=False)
    return model, task


def test_policies_set_ratio_criterion_min_width_and_ignore(trained):
    model, task = trained
    config = PruneConfig(ratio=0.5, criterion="magnitude", **FAST, layers=(
        LayerPolicy(layer_type="Linear", min_width=7),
        LayerPolicy(pattern="2", ratio=0.25, criterion="taylor"),
        LayerPolicy(pattern="4", ignore=True)))
    settings = resolve_policies(discover(model, task.example_input()), config)
    assert settings["0"].ratio is None and settings["0"].min_width == 7 and settings["0"].criterion == "magnitude"
    assert settings["2"].ratio == 0.25 and settings["2"].criterion == "taylor" and settings["2"].min_width == 7
    assert settings["4"].ignore
    result = prune(model, task, config)
    widths = {layer["name"]: layer["width_after"] for layer in result.report["layers"]}
    assert widths == {"0": 8, "2": 9, "4": 10}


def test_policy_matching_nothing_is_an_error(trained):
    model, task = trained
    with pytest.raises(ConfigError, match="pattern='blocks.\\*' matches no prunable layer \\(layers: 0, 2, 4\\)"):
        prune(model, task, PruneConfig(**FAST, layers=(LayerPolicy(pattern="blocks.*", ratio=0.1),)))


def test_global_scope_with_per_layer_override(trained):
    model, task = trained
    result = prune(model, task, PruneConfig(ratio=0.5, scope="global", criterion="magnitude", **FAST,
                                            layers=(LayerPolicy(pattern="4", ratio=0.1),)))
    widths = {layer["name"]: layer["width_after"] for layer in result.report["layers"]}
    assert widths["4"] == 9 and widths["0"] + widths["2"] == 14  # 50% of the 28 pooled neurons


def test_toml_file(tmp_path):
    path = tmp_path / "prune.toml"
    path.write_text('[prune]\ncriterion = "taylor"\nratio = 0.3\nsteps = 2\n\n[[layer]]\ntype = "Conv2d"\nmin_width = 8\n'
                    '\n[[layer]]\npattern = "layer4.*"\nratio = 0.1\n')
    config = load_config_file(path, steps=3)
    assert (config.criterion, config.ratio, config.steps) == ("taylor", 0.3, 3)
    assert config.layers == (LayerPolicy(layer_type="Conv2d", min_width=8), LayerPolicy(pattern="layer4.*", ratio=0.1))


def test_toml_reports_every_problem_at_once(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[prune]\nratio = 1.5\nsteps = 0\ncolour = "red"\n\n[[layer]]\npattern = "x"\nratio = 2\n'
                    'criterion = "fisher"\n\n[[layer]]\nsize = 3\n\n[extra]\n')
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    problems = info.value.problems
    for fragment in ("unknown key 'extra'", "[prune]: unknown key 'colour'", "ratio must lie in [0, 1), got 1.5",
                     "steps must be >= 1, got 0", "#1: layer policy pattern='x': ratio must lie in [0, 1), got 2",
                     "unknown criterion 'fisher'", "#2: unknown key 'size'", "#2: a layer policy needs a pattern"):
        assert any(fragment in p for p in problems), fragment
    with pytest.raises(ConfigError, match="not valid TOML"):
        path.write_text("[prune\n")
        load_config_file(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "none.toml")


class Crash(Exception):
    pass


def test_resume_after_a_crash_gives_the_same_model(trained, tmp_path):
    model, task = trained
    config = PruneConfig(ratio=0.6, steps=3, criterion="taylor", finetune_epochs=1, progress=False, latency_runs=1,
                         tolerance=0.5)
    uninterrupted = prune(model, task, config)

    def crash_after_two(step, _):
        if step == 2:
            raise Crash()

    torch.manual_seed(123)  # a different random state before the crash must not matter
    with pytest.raises(Crash):
        prune(model, task, config, checkpoint=tmp_path / "ckpt", on_step=crash_after_two)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no partial folders
    torch.manual_seed(999)
    resumed = prune(model, task, config, checkpoint=tmp_path / "ckpt", resume=True)
    assert len(resumed.report["steps"]) == len(uninterrupted.report["steps"])
    state_a, state_b = uninterrupted.model.state_dict(), resumed.model.state_dict()
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert resumed.plan.modules == uninterrupted.plan.modules


def test_resume_refuses_other_settings(trained, tmp_path):
    model, task = trained
    config = PruneConfig(ratio=0.5, steps=2, criterion="magnitude", **FAST)
    prune(model, task, config, checkpoint=tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="written with other settings \\(ratio\\)"):
        prune(model, task, PruneConfig(ratio=0.4, steps=2, criterion="magnitude", **FAST), checkpoint=tmp_path / "ckpt",
              resume=True)
