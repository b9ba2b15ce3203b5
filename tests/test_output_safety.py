"""Every output path is checked before any work, and nothing the user owns is overwritten or deleted."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import neuroprune.cli.export as export_cli
import neuroprune.cli.prune as prune_cli
import neuroprune.cli.sensitivity as sensitivity_cli
import neuroprune.cli.train_prune as train_prune_cli
import neuroprune.workflows.demo as demo_workflow
import neuroprune.workflows.prune_and_report as prune_workflow
from neuroprune import load
from neuroprune.cli.main import main
from neuroprune.core.errors import ConfigError
from neuroprune.models.zoo import build_model

QUICK = ["--train-epochs", "0", "--criterion", "magnitude", "--tolerance", "1", "--quiet", "--latency-runs", "1"]


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    items = [path] if path.is_file() else sorted(path.rglob("*"))
    for item in items:
        digest.update(str(item).encode())
        if item.is_file():
            digest.update(item.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as loading data, training or pruning."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the output paths were checked")

    monkeypatch.setattr(prune_cli, "trained_model_and_task", forbidden)
    monkeypatch.setattr(prune_workflow, "prune", forbidden)
    monkeypatch.setattr(demo_workflow, "finetune", forbidden)
    monkeypatch.setattr(train_prune_cli, "data_for_model", forbidden)
    monkeypatch.setattr(sensitivity_cli, "trained_model_and_task", forbidden)
    monkeypatch.setattr(export_cli, "export_folder", forbidden)


def refused(capsys, *argv: str, code: int = 2) -> str:
    assert main(list(argv)) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neuroprune: error: "), err
    return err[0]


@pytest.fixture
def mine(tmp_path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    (folder / "w.safetensors").write_bytes(os.urandom(32))
    return folder


def test_checkpoint_dir_that_is_a_user_folder_is_refused_even_with_overwrite(tmp_path, capsys, mine, no_work):
    before = tree_hash(mine)
    for extra in ([], ["--overwrite"]):
        line = refused(capsys, "prune", "--model", "zoo:mlp", "--steps", "2", "--checkpoint", str(mine),
                       "--out", str(tmp_path / "o"), *QUICK, *extra)
        assert "is not a neuroprune checkpoint" in line and str(mine) in line
    assert tree_hash(mine) == before


def test_default_checkpoint_that_is_a_user_folder_is_refused(tmp_path, capsys, no_work):
    user = tmp_path / "o.checkpoint"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    before = tree_hash(user)
    line = refused(capsys, "prune", "--model", "zoo:mlp", "--steps", "3", "--out", str(tmp_path / "o"), *QUICK)
    assert "o.checkpoint' exists and is not a neuroprune checkpoint" in line
    assert tree_hash(user) == before and not (tmp_path / "o").exists()


def test_checkpoint_path_that_is_a_file_is_refused(tmp_path, capsys, no_work):
    file = tmp_path / "ckpt"
    file.write_text("x")
    line = refused(capsys, "prune", "--model", "zoo:mlp", "--steps", "2", "--checkpoint", str(file), *QUICK,
                   "--out", str(tmp_path / "o"))
    assert "is a file; a folder is wanted there" in line and file.read_text() == "x"


@pytest.mark.parametrize("out, message", [
    (".", "--out '.' is the current folder"),
    ("..", "--out '..' holds the current folder"),
    ("missing/sub/out", "the folder it goes in, .*missing/sub', does not exist"),
])
def test_bad_out_folder_is_refused_before_any_work(capsys, no_work, out, message):
    import re
    line = refused(capsys, "prune", "--model", "zoo:mlp", "--out", out, *QUICK)
    assert re.search(message, line), line


def test_out_that_is_a_file_is_refused_even_with_overwrite(tmp_path, capsys, no_work):
    file = tmp_path / "result"
    file.write_text("precious")
    for command in (["prune", "--model", "zoo:mlp", *QUICK], ["demo", "--quiet"],
                    ["train-prune", "--model", "zoo:mlp", "--quiet"]):
        line = refused(capsys, *command, "--out", str(file), "--overwrite")
        assert "is a file; a folder is wanted there" in line
    assert file.read_text() == "precious"


def test_out_holding_the_weights_is_refused_even_with_overwrite(tmp_path, capsys, mine, no_work):
    before = tree_hash(mine)
    line = refused(capsys, "prune", "--model", "zoo:mlp", "--weights", str(mine / "w.safetensors"),
                   "--out", str(mine), "--overwrite", *QUICK)
    assert "would replace the input" in line and "w.safetensors" in line
    assert tree_hash(mine) == before


def test_json_onto_an_input_or_a_folder_is_refused(tmp_path, capsys, mine, no_work):
    weights = mine / "w.safetensors"
    before = tree_hash(mine)
    line = refused(capsys, "prune", "--model", "zoo:mlp", "--weights", str(weights), "--json", str(weights),
                   "--out", str(tmp_path / "o"), *QUICK)
    assert f"--json '{weights}' would replace the input" in line
    line = refused(capsys, "prune", "--model", "zoo:mlp", "--json", str(mine), "--out", str(tmp_path / "o"), *QUICK)
    assert "is a folder; a file is wanted there" in line
    line = refused(capsys, "demo", "--json", str(mine), "--out", str(tmp_path / "o"))
    assert "is a folder; a file is wanted there" in line
    assert tree_hash(mine) == before


def test_explain_inside_the_checkpoint_and_colliding_outputs_are_refused(tmp_path, capsys, no_work):
    line = refused(capsys, "prune", "--model", "zoo:mlp", "--steps", "2", "--out", str(tmp_path / "o"),
                   "--explain", str(tmp_path / "o.checkpoint" / "scores.csv"), *QUICK)
    assert "lies inside the checkpoint" in line
    line = refused(capsys, "prune", "--model", "zoo:mlp", "--out", str(tmp_path / "o"), "--json", "r.json",
                   "--explain", "r.json", *QUICK)
    assert "--explain 'r.json' and --json 'r.json' overlap" in line
    line = refused(capsys, "prune", "--model", "zoo:mlp", "--out", str(tmp_path / "o"), "--checkpoint",
                   str(tmp_path / "o" / "ck"), *QUICK)
    assert "overlap" in line


def test_sensitivity_and_export_outputs_are_checked_first(tmp_path, capsys, mine, no_work):
    line = refused(capsys, "sensitivity", "--model", "zoo:mlp", "--json", str(tmp_path / "no" / "s.json"))
    assert "does not exist" in line
    line = refused(capsys, "sensitivity", "--model", "zoo:mlp", "--plot", str(mine))
    assert "--plot" in line and "is a folder" in line
    line = refused(capsys, "export", str(mine), "--from", str(mine), "--model", "zoo:mlp")
    assert f"OUT_DIR '{mine}' would replace the input '{mine}'" in line
    line = refused(capsys, "export", str(mine / "notes.txt"), "--from", str(mine), "--model", "zoo:mlp")
    assert "is a file; a folder is wanted there" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_parent_is_refused(tmp_path, capsys, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = refused(capsys, "prune", "--model", "zoo:mlp", "--out", str(locked / "o"), *QUICK)
        assert "permission denied" in line
    finally:
        locked.chmod(0o755)


def test_overwrite_replaces_only_a_folder_neuroprune_wrote(tmp_path, capsys, mine, no_work):
    before = tree_hash(mine)
    for command in (["prune", "--model", "zoo:mlp", *QUICK], ["demo", "--quiet"],
                    ["train-prune", "--model", "zoo:mlp", "--quiet"]):
        line = refused(capsys, *command, "--out", str(mine), "--overwrite")
        assert "is a folder neuroprune did not write" in line and "--overwrite only replaces" in line
    assert tree_hash(mine) == before


def test_overwrite_replaces_an_earlier_result(tmp_path):
    out = tmp_path / "o"
    argv = ["prune", "--model", "zoo:mlp", "--out", str(out), "--no-html", *QUICK]
    assert main([*argv, "--ratio", "0.5"]) == 0
    assert main([*argv, "--ratio", "0.25", "--overwrite"]) == 0
    assert load(out, lambda: build_model("mlp")).fc1.out_features == 96
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_out_left_as_hidden_siblings_by_a_kill_is_recovered_and_refused_up_front(tmp_path, capsys, no_work):
    hidden = tmp_path / ".o.old-0badc0de"  # what a kill between the two renames of a replacement leaves
    hidden.mkdir()
    (hidden / "model.safetensors").write_bytes(b"weights")
    (hidden / "plan.json").write_text('{"format": "neuroprune-plan", "version": 1, "modules": {}}')
    line = refused(capsys, "prune", "--model", "zoo:mlp", "--out", str(tmp_path / "o"), *QUICK)
    assert "already exists" in line and (tmp_path / "o" / "model.safetensors").read_bytes() == b"weights"


def test_resume_without_a_checkpoint_is_refused_before_training(tmp_path, capsys, no_work):
    line = refused(capsys, "prune", "--model", "zoo:mlp", "--resume", "--out", str(tmp_path / "p"), *QUICK)
    assert "nothing to resume" in line


def test_failing_explain_keeps_the_saved_result(tmp_path, capsys, monkeypatch):
    def explode(*args, **kwargs):
        raise ConfigError(["criterion 'obs' cannot score this model"])

    monkeypatch.setattr(prune_workflow, "explain", explode)
    out = tmp_path / "o"
    assert main(["prune", "--model", "zoo:mlp", "--out", str(out), "--json", str(tmp_path / "r.json"),
                 "--explain", str(tmp_path / "s.csv"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "--explain failed after the run; kept: the pruned model in" in err
    assert load(out, lambda: build_model("mlp")).fc1.out_features == 64
    assert json.loads((tmp_path / "r.json").read_text())["after"]["params"] > 0
    assert not (tmp_path / "s.csv").exists()


def test_explain_inside_out_survives_and_the_folder_has_the_scores(tmp_path):
    out = tmp_path / "o"
    assert main(["prune", "--model", "zoo:mlp", "--out", str(out), "--explain", str(out / "scores.csv"),
                 "--no-html", *QUICK]) == 0
    assert (out / "scores.csv").read_text().startswith("layer,neuron,")
    assert "scores" in json.loads((out / "report.json").read_text())


def test_default_checkpoint_of_ours_is_replaced_then_removed(tmp_path, capsys):
    argv = ["prune", "--model", "zoo:mlp", "--steps", "2", "--out", str(tmp_path / "o"), *QUICK]
    assert main(argv) == 0
    assert not (tmp_path / "o.checkpoint").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
