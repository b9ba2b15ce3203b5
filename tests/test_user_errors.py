"""Mismatches between the user's model, weights and data are found before any work, in one sentence
(exit 2, the user's files untouched), and suspicious-but-usable inputs give one-line warnings."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn as nn

from neuroprune.cli.main import main
from neuroprune.data import load_npz
from neuroprune.core.errors import (DataError, DataMismatchError, DataWarning, MeasurementWarning, SettingsWarning,
                               UnsupportedModuleError, WeightsWarning)
from neuroprune.torch.io import load_weights
from neuroprune.torch.probe import probe_model
from neuroprune.torch.metrics import measure_model
from neuroprune.report.table import format_report

NET = "import torch.nn as nn\n\n\ndef build():\n    return nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Linear(20, 3))\n"


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Linear(20, 3))


def _save_npz(path, n_train=160, y_train=None, y_test=None, scale=1.0, dtype="float32"):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(n_train + 40, 6)) * scale).astype(dtype)
    y = rng.integers(0, 3, n_train + 40)
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train] if y_train is None else y_train,
             x_test=x[n_train:], y_test=y[n_train:] if y_test is None else y_test)
    return path


@pytest.fixture
def user(tmp_path):
    """A user's folder: model file, weights, data; ``snapshot()`` proves the files stay as they were."""
    (tmp_path / "net.py").write_text(NET)
    torch.manual_seed(0)
    safetensors.torch.save_file(_net().state_dict(), tmp_path / "w.safetensors")
    _save_npz(tmp_path / "d.npz")

    def snapshot():
        return {p.name: p.read_bytes() for p in sorted(tmp_path.iterdir()) if p.is_file()}

    return tmp_path, snapshot


def _lines(capsys) -> tuple[list[str], list[str]]:
    """The CLI's error lines and warning lines on stderr."""
    err = capsys.readouterr().err.strip().splitlines()
    return ([line for line in err if line.startswith("neuroprune: error: ")],
            [line for line in err if line.startswith("neuroprune: warning: ")])


def _prune(folder, *extra: str, model: str = "net.py:build", data: str = "d.npz", weights: str | None = "w.safetensors"):
    argv = ["prune", "--model", str(folder / model.split(":")[0]) + ":" + model.split(":")[1], "--data",
            f"npz:{folder / data}", "--quiet", "--train-epochs", "0", "--out", str(folder / "out"), *extra]
    if weights:
        argv += ["--weights", str(folder / weights)]
    return main(argv)


def _assert_refused(code, capsys, fragment, folder, before):
    errors, _ = _lines(capsys)
    assert code == 2 and len(errors) == 1, errors
    assert fragment in errors[0], errors[0]
    assert not (folder / "out").exists()
    assert {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} == before


# --- section 3: mismatches found before the work -------------------------------------------------


def test_input_width_mismatch_names_sample_shape_and_first_layer(user, capsys):
    folder, snapshot = user
    (folder / "wide.py").write_text(NET.replace("nn.Linear(6, 20)", "nn.Linear(784, 20)"))
    before = snapshot()
    code = _prune(folder, model="wide.py:build", weights=None)
    _assert_refused(code, capsys, "samples of npz:" + str(folder / "d.npz") + " have shape (6,) (flat: 6 features), "
                    "but the model's first layer '0' (Linear) expects 784 input features", folder, before)


def test_image_layout_mismatch_names_the_conv_channels():
    from neuroprune.data import load_digits

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(DataMismatchError, match=r"have shape \(1, 8, 8\) \(image: 1 channels of 8x8\), but the model's "
                                                r"first layer '0' \(Conv2d\) expects 3 input channels"):
        probe_model(model, load_digits(layout="image"))


def test_label_beyond_the_models_outputs_is_refused_before_training(user, capsys):
    folder, snapshot = user
    y = np.random.default_rng(0).integers(0, 3, 160)
    y[5] = 57
    _save_npz(folder / "d.npz", y_train=y)
    before = snapshot()
    _assert_refused(_prune(folder), capsys, "go up to 57, but the model outputs 3 classes (labels 0..2)", folder, before)


def test_absurd_label_for_a_zoo_model_is_refused_with_a_bound(user, capsys):
    folder, snapshot = user
    y = np.zeros(160, dtype=np.int64)
    y[0] = 10**9
    _save_npz(folder / "d.npz", y_train=y)
    before = snapshot()
    code = main(["prune", "--model", "zoo:mlp", "--data", f"npz:{folder / 'd.npz'}", "--quiet", "--out", str(folder / "out")])
    _assert_refused(code, capsys, "a zoo classifier would need 1000000001 outputs, more than the 100000 allowed",
                    folder, before)


@pytest.mark.parametrize("source, fragment", [
    ("import torch.nn as nn\ndef build(:\n    pass\n", "bad.py:2: syntax error in the model file"),
    ("import torch.nn as nn\nimport not_a_module_xyz\n", "bad.py:2: the model file imports something that cannot be "
                                                         "imported: No module named 'not_a_module_xyz'"),
    ("x = 1\nraise RuntimeError('no GPU here')\n", "bad.py:2: importing the model file raised RuntimeError: no GPU here"),
    ("def build():\n    raise RuntimeError('cuda only')\n", "bad.py:2: build() raised RuntimeError: cuda only"),
    ("def build(width, depth=2):\n    pass\n", "bad.py: build(width, depth=2) needs arguments; the builder must take none"),
])
def test_broken_model_file_names_file_and_line(user, capsys, source, fragment):
    folder, snapshot = user
    (folder / "bad.py").write_text(source)
    before = snapshot()
    _assert_refused(_prune(folder, model="bad.py:build", weights=None), capsys, fragment, folder, before)


def test_module_named_like_a_python_keyword_is_a_clear_tracing_error():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module("if", nn.Linear(4, 8))
            self.out = nn.Linear(8, 2)

        def forward(self, x):
            return self.out(torch.relu(getattr(self, "if")(x)))

    from neuroprune.torch.graph.discover import discover

    with pytest.raises(UnsupportedModuleError, match="module names 'if' are Python keywords"):
        discover(Net(), torch.randn(2, 4))


@pytest.mark.parametrize("args, fragment", [
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--batch-size", "0", "--calibration-samples", "0"],
     "--batch-size must be >= 1, got 0; --calibration-samples must be >= 1, got 0"),
    (["--image-size", "0"], "--image-size must be >= 1, got 0"),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
])
def test_invalid_integer_options_are_refused_up_front(user, capsys, args, fragment):
    folder, snapshot = user
    before = snapshot()
    _assert_refused(_prune(folder, *args), capsys, fragment, folder, before)


def test_train_prune_refuses_calibration_samples_it_cannot_use(tmp_path, capsys):
    code = main(["train-prune", "--model", "zoo:mlp", "--calibration-samples", "10", "--out", str(tmp_path / "out")])
    errors, _ = _lines(capsys)
    assert code == 2 and "--calibration-samples has no effect in train-prune" in errors[0]


def test_hf_model_without_importable_transformers_reports_the_real_reason(tmp_path, capsys, monkeypatch):
    (tmp_path / "s.txt").write_text("one sentence\nanother sentence\na third one\n")
    monkeypatch.setitem(sys.modules, "transformers", None)  # what a broken installation looks like to Python
    monkeypatch.delitem(sys.modules, "neuroprune.hf.adapter", raising=False)
    code = main(["prune", "--model", "hf:some-model", "--data", f"text:{tmp_path / 's.txt'}", "--out", str(tmp_path / "o")])
    errors, _ = _lines(capsys)
    assert code == 2 and "hf:some-model needs the transformers package, which cannot be imported here" in errors[0]
    # the ImportError's own words, not a guess (which import fails first depends on the import order)
    assert "halted; None in sys.modules" in errors[0] or "'transformers' is not a package" in errors[0]


def test_hf_distill_temperature_is_refused_rather_than_ignored(tmp_path, capsys):
    code = main(["prune", "--model", "hf:x", "--data", "text:s.txt", "--distill-temperature", "2",
                 "--out", str(tmp_path / "o")])
    errors, _ = _lines(capsys)
    assert code == 2 and "--distill-temperature applies to classification models" in errors[0]


# --- weights files ---------------------------------------------------------------------------------


def test_corrupt_weights_are_not_steered_to_allow_pickle(user, capsys):
    folder, snapshot = user
    (folder / "w.pt").write_bytes(b"garbage bytes, not a checkpoint")
    before = snapshot()
    _assert_refused(_prune(folder, weights="w.pt"), capsys, "neither a safetensors nor a torch.save file", folder, before)


def test_truncated_torch_file_is_called_corrupt_not_pickled(tmp_path):
    torch.save(_net().state_dict(), tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "w.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match="corrupt, truncated or not a state_dict") as caught:
        load_weights(_net(), tmp_path / "w.pt")
    assert "allow" not in str(caught.value)


def test_torch_file_with_safetensors_suffix_says_rename(tmp_path):
    torch.save(_net().state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(Exception, match=r"not a valid safetensors file \(a torch.save file; rename it to .pt\)"):
        load_weights(_net(), tmp_path / "w.safetensors")


def test_safetensors_with_another_suffix_loads(tmp_path):
    source = _net()
    safetensors.torch.save_file(source.state_dict(), tmp_path / "w.bin")
    loaded = load_weights(_net(), tmp_path / "w.bin")
    assert torch.equal(loaded[0].weight, source[0].weight)


def test_pickled_module_still_points_to_allow_pickle(tmp_path):
    torch.save(_net(), tmp_path / "m.pt")
    with pytest.raises(Exception, match=r"contains pickled objects.*--allow-pickle"):
        load_weights(_net(), tmp_path / "m.pt")


# --- section 6: warnings ---------------------------------------------------------------------------


def test_int_weights_cast_to_float_warn(tmp_path):
    state = {k: (v * 10).to(torch.int64) if k == "0.weight" else v for k, v in _net().state_dict().items()}
    torch.save(state, tmp_path / "int.pt")
    with pytest.warns(WeightsWarning, match=r"1 integer weight tensor\(s\) cast to the model's float dtype: 0.weight"):
        load_weights(_net(), tmp_path / "int.pt")


def test_single_class_warns(tmp_path):
    with pytest.warns(DataWarning, match="every training label is 0: a single class"):
        load_npz(_save_npz(tmp_path / "d.npz", y_train=np.zeros(160, dtype=np.int64)))


def test_tiny_validation_split_warns(tmp_path):
    with pytest.warns(DataWarning, match=r"the validation split has only 3 samples \(fewer than 10\)"):
        load_npz(_save_npz(tmp_path / "d.npz", n_train=30))


def test_huge_features_warn_and_float32_overflow_is_refused(tmp_path):
    with pytest.warns(DataWarning, match="features reach 3.9e\\+06 in magnitude; they are fed to the model as stored, "
                                         "so pass --standardize"):
        load_npz(_save_npz(tmp_path / "d.npz", scale=1e6))
    with pytest.raises(DataError, match="overflow float32"):
        load_npz(_save_npz(tmp_path / "e.npz", scale=1e300, dtype="float64"))


def test_test_labels_the_model_cannot_output_warn(tmp_path):
    y_test = np.zeros(40, dtype=np.int64)
    y_test[3] = 9
    splits = load_npz(_save_npz(tmp_path / "d.npz", y_test=y_test))
    with pytest.warns(DataWarning, match="1 of 40 test labels .* reach 9, which the model cannot output"):
        assert probe_model(_net(), splits) == 3


def test_min_width_above_every_layer_warns():
    from neuroprune.core.config import PruneConfig
    from neuroprune.torch.graph.discover import discover
    from neuroprune.core.policy import resolve_policies

    graph = discover(_net(), torch.randn(2, 6))
    with pytest.warns(SettingsWarning, match="min_width 64 is at or above the width of every prunable layer"):
        resolve_policies(graph, PruneConfig(min_width=64))


def test_latency_from_few_runs_warns_and_is_marked_unreliable():
    with pytest.warns(MeasurementWarning, match="latency from 3 timed runs"):
        metrics = measure_model(_net(), lambda b: torch.randn(b, 6), accuracy=0.5, batch_sizes=(1,), runs=3, warmup=0)
    side = metrics.to_dict()
    text = format_report({"before": side, "after": side, "config": {"latency_runs": 3}})
    assert "(unreliable: 3 runs)" in text
    assert "unreliable" not in format_report({"before": side, "after": side, "config": {"latency_runs": 20}})


def test_cli_prints_each_warning_as_one_line(user, capsys):
    folder, _ = user
    y_test = np.zeros(40, dtype=np.int64)
    y_test[3] = 9
    _save_npz(folder / "d.npz", n_train=30, y_test=y_test)
    code = _prune(folder, "--ratio", "0.2", "--tolerance", "1", "--latency-runs", "3", "--no-html")
    errors, warned = _lines(capsys)
    assert code == 0 and not errors
    assert any("the validation split has only 3 samples" in line for line in warned)
    assert any("test labels" in line and "which the model cannot output" in line for line in warned)
    assert any("latency from 3 timed runs" in line for line in warned)
    assert len(warned) == len(set(warned))  # each once


def test_api_prune_finds_the_mismatch_before_any_work():
    from neuroprune.data import load_digits

    import neuroprune as npr

    model = nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DataMismatchError, match=r"have shape \(64,\).*expects 784 input features"):
        npr.prune(model, npr.ClassificationTask(load_digits()), npr.PruneConfig(progress=False))
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_hf_standardize_is_refused_rather_than_ignored(tmp_path, capsys):
    code = main(["prune", "--model", "hf:x", "--data", "text:s.txt", "--standardize", "--out", str(tmp_path / "o")])
    errors, _ = _lines(capsys)
    assert code == 2 and "--standardize applies to npz: data" in errors[0]


# --- every error a user can trigger is a NeuropruneError ------------------------------------------

#: builtin exceptions src/ may still raise on purpose, and where (file, exception)
BUILTIN_RAISES_ALLOWED = {
    ("__init__.py", "AttributeError"),  # the module __getattr__ protocol
    ("core/atomic.py", "OSError"),  # re-raises an errno as the OS would
}


def test_src_raises_no_bare_builtin_errors():
    """A ``raise ValueError(...)`` (or TypeError, RuntimeError, KeyError, ...) reaches a user as a traceback;
    raise a class of neuroprune.core.errors instead (keep the builtin as a second base where callers catch it)."""
    import ast
    import builtins
    from pathlib import Path

    import neuroprune

    src = Path(neuroprune.__file__).parent
    builtin_errors = {name for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, BaseException)}
    found = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                name = target.id if isinstance(target, ast.Name) else None
                where = (path.relative_to(src).as_posix(), name)
                if name in builtin_errors - {"NotImplementedError"} and where not in BUILTIN_RAISES_ALLOWED:
                    found.append(f"{where[0]}:{node.lineno}: raise {name}")
    assert not found, "bare builtin errors raised: " + ", ".join(found)


def test_example_inputs_that_do_not_fit_are_a_data_mismatch():
    from neuroprune import discover
    from neuroprune.core.errors import UnsupportedModelError

    with pytest.raises(DataMismatchError, match=r"the example inputs do not fit the model: running 0 on them raised "
                                                r"RuntimeError: mat1 and mat2 shapes cannot be multiplied"):
        discover(_net(), torch.zeros(1, 5))
    with pytest.raises(UnsupportedModelError, match="discover needs a torch.nn.Module, got str"):
        discover("a model", torch.zeros(1, 6))


def test_plans_of_the_wrong_type_are_plan_errors(tmp_path):
    from neuroprune import PlanError, apply_plan, save

    with pytest.raises(PlanError, match="expected a PruningPlan, got dict"):
        apply_plan(_net(), {"modules": {}})
    with pytest.raises(PlanError, match="expected a PruningPlan, got str"):
        save(tmp_path / "out", _net(), "plan")
    assert not (tmp_path / "out").exists()


def test_zoo_and_data_arguments_are_checked():
    from neuroprune import ConfigError, build_model
    from neuroprune.data import load_digits

    with pytest.raises(ConfigError, match=r"hidden must be a sequence of layer widths, e.g. \(128, 64\), got 5"):
        build_model("mlp", hidden=5)
    for seed in ("a", -1, 2**32, 1.5):
        with pytest.raises(DataError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
            load_digits(seed=seed)


# --- registries refuse a duplicate name the same way ------------------------------------------------


def _registries():
    """(kind, name, register(replace) -> None, undo) for every registry."""
    import torch.nn as nn

    from neuroprune.core import backend as backends
    from neuroprune.core.criteria import registry as criteria
    from neuroprune.models import zoo
    from neuroprune.torch import adapters
    from neuroprune.torch.graph import ops
    from neuroprune.torch.layers import registry as layers

    magnitude, linear = criteria.get_criterion("magnitude"), layers.handler_for(nn.Linear(1, 1))
    rule = ops.rule_for("call_function", torch.relu)
    fx_adapter = adapters.get_adapter("fx")

    class Toy:
        name = "toy-duplicate"

        def matches(self, model):
            return False

    toy = Toy()
    backends.register_backend(toy)
    return [
        ("criterion", "magnitude", lambda replace: criteria.register_criterion(magnitude, replace=replace), None),
        ("layer handler for", "Linear", lambda replace: layers.register_handler(linear, replace=replace), None),
        ("flow rule for", "relu", lambda replace: ops.register_function_rule(torch.relu, rule, replace=replace), None),
        ("backend", "toy-duplicate", lambda replace: backends.register_backend(toy, replace=replace),
         lambda: backends.unregister_backend("toy-duplicate")),
        ("backend", "fx", lambda replace: adapters.register_adapter(fx_adapter, replace=replace), None),  # deprecated alias
        ("zoo model", "mlp", lambda replace: zoo.register_model("mlp", zoo.ZOO["mlp"], replace=replace), None),
    ]


def test_every_registry_refuses_a_duplicate_alike_and_replace_overrides():
    from neuroprune.core.errors import ConfigError, DuplicateNameError

    for kind, name, register, undo in _registries():
        try:
            with pytest.raises(DuplicateNameError) as caught:
                register(False)
            assert isinstance(caught.value, ConfigError) and (caught.value.kind, caught.value.name) == (kind, name)
            assert str(caught.value) == (f"invalid configuration: {kind} {name!r} is already registered; "
                                         "pass replace=True to replace it")
            register(True)  # the same entry again, on purpose: accepted
        finally:
            if undo:
                undo()
