"""The user's own model, weights and raw data through the command line: used exactly as given.

A model trained on unstandardised pixels (digits, 0..16) must be evaluated on those pixels: the
report's ``before.accuracy`` equals the user's own evaluation on ``x_test``, and the saved folder,
reloaded with ``neuroprune.load``, reproduces ``after.accuracy`` on the raw ``x_test``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

import neuroprune as npr
from neuroprune.cli.main import main
from neuroprune.data import load_data, load_npz

MODEL_FILE = """\
import torch.nn as nn


def build():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
"""


def _build() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x).float()).argmax(dim=1).numpy()
    return float((predicted == y).mean())


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """What a user brings: raw digits pixels (0..16) in an .npz, a model file, trained safetensors."""
    folder = tmp_path_factory.mktemp("user")
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)  # raw pixels 0..16, never standardised
    np.savez(folder / "digits_raw.npz", x_train=x[:1400], y_train=y[:1400], x_test=x[1400:], y_test=y[1400:])
    (folder / "net.py").write_text(MODEL_FILE)
    torch.manual_seed(0)
    model = _build()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x[:1400]), torch.from_numpy(y[:1400])
    for _ in range(15):
        for i in range(0, 1400, 64):
            loss = F.cross_entropy(model(xt[i:i + 64]), yt[i:i + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    safetensors.torch.save_model(model, str(folder / "trained.safetensors"))
    return {"folder": folder, "x_test": x[1400:], "y_test": y[1400:], "accuracy": _accuracy(model, x[1400:], y[1400:])}


def test_npz_is_fed_to_the_model_exactly_as_stored(user_files):
    splits = load_npz(user_files["folder"] / "digits_raw.npz")
    assert torch.equal(splits.x_test, torch.from_numpy(user_files["x_test"]))
    assert not splits.standardized and float(splits.x_train.max()) == 16.0


def test_standardize_is_opt_in_and_digits_stay_standardised(user_files):
    splits = load_data(f"npz:{user_files['folder'] / 'digits_raw.npz'}", standardize=True)
    assert splits.standardized and abs(float(splits.x_train.mean())) < 1e-3
    assert load_data("digits").standardized


def test_prune_reports_the_users_own_accuracy_and_reloads_it(user_files, tmp_path, capsys):
    folder, out = user_files["folder"], tmp_path / "small-net"
    assert user_files["accuracy"] > 0.85  # the user's model works on the user's raw data
    code = main(["prune", "--model", f"{folder / 'net.py'}:build", "--weights", str(folder / "trained.safetensors"),
                 "--data", f"npz:{folder / 'digits_raw.npz'}", "--criterion", "magnitude", "--ratio", "0.8",
                 "--finetune-epochs", "3", "--tolerance", "0.05", "--out", str(out), "--quiet", "--latency-runs", "20",
                 "--require-target"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["target"]["reached"] and report["target"]["delivered"] == pytest.approx(0.8, abs=0.01)
    assert [layer["width_after"] for layer in report["layers"][:2]] == [26, 13]  # 80 % of 128 and 64 removed
    assert report["before"]["accuracy"] == pytest.approx(user_files["accuracy"], abs=1e-12)
    assert report["data"] == {"spec": f"npz:{folder / 'digits_raw.npz'}", "standardized": False, "train": 1260,
                              "val": 140, "test": 397, "num_classes": 10}
    reloaded = npr.load(out, _build)
    assert _accuracy(reloaded, user_files["x_test"], user_files["y_test"]) == pytest.approx(report["after"]["accuracy"], abs=1e-12)
    assert sum(p.numel() for p in reloaded.parameters()) == report["after"]["params"]


def test_standardize_flag_is_recorded_in_the_report(user_files, tmp_path, capsys):
    folder, out = user_files["folder"], tmp_path / "std"
    code = main(["prune", "--model", f"{folder / 'net.py'}:build", "--weights", str(folder / "trained.safetensors"),
                 "--data", f"npz:{folder / 'digits_raw.npz'}", "--standardize", "--criterion", "magnitude",
                 "--ratio", "0.25", "--tolerance", "1", "--out", str(out), "--quiet", "--latency-runs", "20"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["standardized"] is True
    # a model trained on raw pixels, fed standardised ones: not the accuracy the user measured
    assert report["before"]["accuracy"] != pytest.approx(user_files["accuracy"], abs=1e-12)


@pytest.mark.parametrize("budget", [["--target-flops", "0.5"], ["--target-params", "0.5"], ["--max-drop", "0.01"]])
@pytest.mark.parametrize("fixed", [["--ratio", "0.5"], ["--threshold", "0.1"]])
def test_ratio_with_a_budget_target_is_refused(tmp_path, capsys, budget, fixed):
    out = tmp_path / "o"
    assert main(["prune", "--model", "zoo:mlp", "--out", str(out), "--quiet", *fixed, *budget]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{fixed[0]} and {budget[0]} both set the target; give one" in err[0]
    assert not out.exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["uint8", "int16", "int64", "float16", "float32", "float64"]),
       features=st.integers(1, 5), scale=st.sampled_from([1.0, 255.0, 1e3]), seed=st.integers(0, 10_000))
def test_npz_arrays_reach_the_model_unchanged_but_for_float32(tmp_path, dtype, features, scale, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random(size=(60, features)) * scale).astype(dtype)
    y = np.arange(60) % 3
    path = tmp_path / f"d{seed}.npz"
    np.savez(path, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    splits = load_npz(path)
    assert splits.x_test.dtype == torch.float32
    assert torch.equal(splits.x_test, torch.from_numpy(x[40:].astype(np.float32)))
    seen = torch.cat([splits.x_train, splits.x_val])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, x[:40].astype(np.float32).tolist()))


def test_export_uses_the_data_as_the_pruning_run_did(user_files, tmp_path):
    from neuroprune.torch.export import load_folder_for_export
    from neuroprune.core.plan import PruningPlan

    folder = user_files["folder"]
    npr.save(tmp_path / "saved", _build(), PruningPlan())
    spec, data = f"{folder / 'net.py'}:build", f"npz:{folder / 'digits_raw.npz'}"
    _, (raw,) = load_folder_for_export(tmp_path / "saved", spec, data=data)
    _, (scaled,) = load_folder_for_export(tmp_path / "saved", spec, data=data, standardize=True)
    assert torch.equal(raw, torch.from_numpy(user_files["x_test"][:2]))
    assert not torch.equal(raw, scaled)
