"""Saved folders and checkpoints: atomic replacement that survives a kill, recovery, validation, fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models import mlp, toy_data

import neuroprune.core.atomic as atomic
from neuroprune import ClassificationTask, PruneConfig, load, prune, read_plan, save
from neuroprune.torch.checkpoint import STATE_FILE, is_checkpoint
from neuroprune.core.errors import CheckpointError, NeuropruneError, PlanError
from neuroprune.torch.io import MODEL_FILE, PLAN_FILE, WEIGHTS_SHA256

BUILD = lambda: mlp((6, 16, 12, 3))  # noqa: E731
FAST = dict(criterion="magnitude", tolerance=1.0, progress=False, latency_runs=1)
SRC = str(Path(__file__).resolve().parent.parent / "src")
TESTS = str(Path(__file__).resolve().parent)


def folder_hash(folder: Path) -> str:
    """Names and contents of every file under ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def user_folder(path: Path) -> str:
    path.mkdir()
    (path / "thesis.txt").write_text("years of work")
    (path / "sub").mkdir()
    (path / "sub" / "data.bin").write_bytes(os.urandom(64))
    return folder_hash(path)


@pytest.fixture(scope="module")
def task():
    return ClassificationTask(toy_data(), batch_size=16)


@pytest.fixture(scope="module")
def results(task):
    small = prune(BUILD(), task, PruneConfig(ratio=0.5, **FAST))
    smaller = prune(BUILD(), task, PruneConfig(ratio=0.75, **FAST))
    return small, smaller


def outputs(model, seed=0):
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


# -- replacing a folder ---------------------------------------------------------------------------


def test_error_between_the_two_renames_keeps_the_old_folder_reachable(results, tmp_path, monkeypatch):
    old, new = results
    target = tmp_path / "out"
    save(target, old.model, old.plan)
    before = folder_hash(target)
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # the rename fallback (no renameat2)
    real, calls = os.replace, []

    def fail_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", fail_second)
    with pytest.raises(OSError, match="disk gone"):
        save(target, new.model, new.plan, overwrite=True)
    monkeypatch.setattr(atomic.os, "replace", real)
    assert folder_hash(target) == before  # the old folder is back, whole
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert torch.equal(outputs(load(target, BUILD)), outputs(old.model))


KILL_BETWEEN_RENAMES = """
import os, sys
sys.path[:0] = [{src!r}, {tests!r}]
import torch
import neuroprune.core.atomic as atomic
from neuroprune import ClassificationTask, PruneConfig, prune
from models import mlp, toy_data
task = ClassificationTask(toy_data(), batch_size=16)
config = PruneConfig(ratio=0.75, steps=3, criterion="magnitude", tolerance=1.0, progress=False, latency_runs=1)
atomic._exchange = lambda a, b: False          # the two-rename fallback
real, calls = os.replace, []
def replace(src, dst):
    calls.append(dst)
    if len([c for c in calls if str(c).endswith("ckpt")]) == {kill_at}:
        os._exit(9)                             # killed: no clean-up runs
    return real(src, dst)
atomic.os.replace = replace
torch.manual_seed(0)
prune(mlp((6, 16, 12, 3)), task, config, checkpoint={folder!r})
"""


def run_killed(folder: Path, kill_at: int) -> int:
    code = KILL_BETWEEN_RENAMES.format(src=SRC, tests=TESTS, folder=str(folder), kill_at=kill_at)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], timeout=120).returncode


def test_kill_between_the_two_renames_then_load_and_resume_recover(task, tmp_path):
    folder = tmp_path / "ckpt"
    # step 1 renames its folder onto ckpt; step 2 moves the old one aside, then dies before renaming the new one in
    assert run_killed(folder, kill_at=2) == 9
    assert not folder.exists()  # the state a kill leaves: only hidden siblings
    leftovers = sorted(p.name.split("-")[0] for p in tmp_path.iterdir())
    assert leftovers == [".ckpt.old", ".ckpt.partial"]
    plan = read_plan(folder)  # recovers the newest complete folder: the checkpoint after step 2
    assert folder.is_dir() and json.loads((folder / STATE_FILE).read_text())["step"] == 2
    assert plan.modules
    config = PruneConfig(ratio=0.75, steps=3, **FAST)
    torch.manual_seed(0)
    resumed = prune(mlp((6, 16, 12, 3)), task, config, checkpoint=folder, resume=True)
    torch.manual_seed(0)
    uninterrupted = prune(mlp((6, 16, 12, 3)), task, config)
    assert [s["step"] for s in resumed.report["steps"]] == [s["step"] for s in uninterrupted.report["steps"]]
    assert torch.equal(outputs(resumed.model), outputs(uninterrupted.model))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # the stale old sibling was ours: cleaned


def test_swap_keeps_a_folder_at_the_path_and_a_later_save_cleans_the_leftover(results, tmp_path, monkeypatch):
    old, new = results
    target = tmp_path / "out"
    save(target, old.model, old.plan)
    seen = []
    real_exchange = atomic._exchange

    def exchange_then_look(a, b):
        swapped = real_exchange(a, b)
        seen.append(swapped and (target / PLAN_FILE).is_file())
        return swapped

    monkeypatch.setattr(atomic, "_exchange", exchange_then_look)
    monkeypatch.setattr(atomic.shutil, "rmtree", lambda *a, **k: None)  # "killed" before the old one is deleted
    save(target, new.model, new.plan, overwrite=True)
    if seen != [True]:
        pytest.skip("this filesystem cannot swap folders (renameat2 RENAME_EXCHANGE)")
    assert torch.equal(outputs(load(target, BUILD)), outputs(new.model))
    assert len(list(tmp_path.iterdir())) == 2  # the old folder under a hidden name
    monkeypatch.undo()
    save(target, old.model, old.plan, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_stale_siblings_that_are_not_ours_are_left_alone(results, tmp_path):
    small, _ = results
    theirs = tmp_path / ".out.old-12345678"
    digest = user_folder(theirs)
    ours_partial = tmp_path / ".out.partial-abcdef12"
    ours_partial.mkdir()
    (ours_partial / atomic.PARTIAL_MARKER).write_text("")
    save(tmp_path / "out", small.model, small.plan)
    save(tmp_path / "out", small.model, small.plan, overwrite=True)
    assert folder_hash(theirs) == digest and not ours_partial.exists()


def test_model_safetensors_has_the_mode_of_the_other_files(results, tmp_path):
    small, _ = results
    save(tmp_path / "out", small.model, small.plan)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert modes[MODEL_FILE] == modes[PLAN_FILE] == modes["report.json"]


# -- sha256 of the weights ---------------------------------------------------------------------------


def test_changed_weights_file_is_refused_naming_it(results, tmp_path):
    small, _ = results
    folder = tmp_path / "out"
    save(folder, small.model, small.plan)
    assert len(json.loads((folder / PLAN_FILE).read_text())[WEIGHTS_SHA256]) == 64
    tampered = {k: v.clone() for k, v in small.model.state_dict().items()}
    first = next(iter(tampered))
    tampered[first].view(-1)[0] += 1.0
    import safetensors.torch
    safetensors.torch.save_file(tampered, folder / MODEL_FILE)  # still a valid file of the right shapes
    with pytest.raises(CheckpointError, match=r"model.safetensors does not match the sha256 recorded in plan.json"):
        load(folder, BUILD)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(0, 1, exclude_max=True), delta=st.integers(1, 255))
def test_any_changed_byte_of_the_weights_is_an_error(results, tmp_path, position, delta):
    small, _ = results
    folder = tmp_path / f"out-{position}-{delta}"
    save(folder, small.model, small.plan)
    data = bytearray((folder / MODEL_FILE).read_bytes())
    index = int(position * len(data))
    data[index] = (data[index] + delta) % 256
    (folder / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load(folder, BUILD)


# -- plan.json edge cases -------------------------------------------------------------------------------


@pytest.fixture
def saved(results, tmp_path):
    small, _ = results
    folder = tmp_path / "saved"
    save(folder, small.model, small.plan)
    return folder, json.loads((folder / PLAN_FILE).read_text())


def write_plan(folder: Path, plan) -> None:
    (folder / PLAN_FILE).write_text(plan if isinstance(plan, str) else json.dumps(plan))


@pytest.mark.parametrize("change, message", [
    (lambda p: p["modules"].update({"": {"type": "Sequential", "axes": {}}}), "module path ''"),
    (lambda p: p["modules"]["0"]["axes"]["out"].update(size=True), "'size' must be a positive integer"),
    (lambda p: p["modules"]["0"]["axes"]["out"].update(keep=[1, 0]), "increasing positions"),
    (lambda p: p["modules"]["0"]["axes"]["out"].update(keep=[0, 0]), "increasing positions"),
    (lambda p: p["modules"]["0"]["axes"]["out"].update(keep="0,1"), "'keep' must list"),
    (lambda p: p["modules"].update({"0": ["Linear"]}), "needs 'type' and 'axes'"),
    (lambda p: p.update(version=True), "plan version True is not supported"),
    (lambda p: p.update(modules=[]), "no 'modules' mapping"),
    (lambda p: p.update({WEIGHTS_SHA256: 5}), "must be 64 lowercase hex digits"),
])
def test_malformed_plan_is_a_plan_error(saved, change, message):
    folder, plan = saved
    change(plan)
    write_plan(folder, plan)
    with pytest.raises(PlanError, match=message):
        load(folder, BUILD)


def test_deeply_nested_plan_is_a_plan_error(saved):
    folder, _ = saved
    write_plan(folder, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(PlanError, match="nests deeper than 64 levels"):
        load(folder, BUILD)


def test_plan_json_that_is_a_folder_is_a_plan_error(saved):
    folder, _ = saved
    (folder / PLAN_FILE).unlink()
    (folder / PLAN_FILE).mkdir()
    with pytest.raises(PlanError, match="plan.json is a folder; plan.json must be a JSON file"):
        read_plan(folder)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=False) | st.text(max_size=4),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
                           max_leaves=20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(modules=json_values, adapter=json_values)
def test_any_plan_json_loads_or_raises_a_neuroprune_error(saved, modules, adapter):
    folder, plan = saved
    write_plan(folder, {**plan, "modules": modules, "adapter": adapter})
    try:
        load(folder, BUILD)
    except NeuropruneError:
        pass


# -- state.json and resuming ------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(task, tmp_path):
    folder = tmp_path / "ckpt"
    prune(BUILD(), task, PruneConfig(ratio=0.5, steps=2, **FAST), checkpoint=folder)
    return folder


def resume(task, folder, model=None, config=None, data_task=None):
    return prune(model or BUILD(), data_task or task, config or PruneConfig(ratio=0.5, steps=2, **FAST),
                 checkpoint=folder, resume=True)


@pytest.mark.parametrize("field", ["step", "reference", "original", "fixed", "before", "steps", "config", "rng",
                                   "fingerprint"])
def test_state_json_missing_field_is_a_checkpoint_error(task, checkpoint, field):
    state = json.loads((checkpoint / STATE_FILE).read_text())
    del state[field]
    (checkpoint / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=f"state.json is not a valid checkpoint state: '{field}' is missing"):
        resume(task, checkpoint)


@pytest.mark.parametrize("field, value, message", [
    ("step", "2", "'step' must be an integer >= 0"),
    ("step", -1, "'step' must be an integer >= 0"),
    ("reference", None, "'reference' must be a number"),
    ("steps", {}, "'steps' must be a list of objects"),
    ("fingerprint", {"weights": 1}, "'fingerprint' must be an object"),
    ("rng", "not base64!", "'rng' is not valid base64"),
    ("rng", "AAAA", "'rng' holds 3 bytes"),
])
def test_state_json_wrong_field_is_a_checkpoint_error(task, checkpoint, field, value, message):
    state = json.loads((checkpoint / STATE_FILE).read_text())
    state[field] = value
    (checkpoint / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=message):
        resume(task, checkpoint)


def test_state_json_that_is_not_an_object_is_a_checkpoint_error(task, checkpoint):
    (checkpoint / STATE_FILE).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="holds a list, not an object"):
        resume(task, checkpoint)


def test_resume_with_other_weights_is_refused_naming_them(task, checkpoint):
    with pytest.raises(CheckpointError, match="was started from other model weights"):
        resume(task, checkpoint, model=mlp((6, 16, 12, 3), seed=1))


def test_resume_with_other_data_is_refused_naming_it(task, checkpoint):
    other = ClassificationTask(toy_data(seed=1), batch_size=16)
    with pytest.raises(CheckpointError, match=r"was started from other data \(the data set"):
        resume(task, checkpoint, data_task=other)
    with pytest.raises(CheckpointError, match="other data"):
        resume(task, checkpoint, data_task=ClassificationTask(toy_data(), batch_size=8))


def test_resume_with_same_weights_and_data_works(task, checkpoint):
    result = resume(task, checkpoint)
    assert [s["step"] for s in result.report["steps"]] == [1, 2]


def test_resume_without_a_checkpoint_says_so(task, tmp_path):
    with pytest.raises(CheckpointError, match="resume=True needs a checkpoint: pass checkpoint=FOLDER"):
        prune(BUILD(), task, PruneConfig(ratio=0.5, **FAST), resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume: .*holds no checkpoint"):
        prune(BUILD(), task, PruneConfig(ratio=0.5, **FAST), checkpoint=tmp_path / "none", resume=True)


def test_checkpoint_into_a_user_folder_is_refused_and_it_stays_intact(task, tmp_path):
    folder = tmp_path / "mine"
    digest = user_folder(folder)
    with pytest.raises(CheckpointError, match="exists and is not a neuroprune checkpoint"):
        prune(BUILD(), task, PruneConfig(ratio=0.5, steps=2, **FAST), checkpoint=folder)
    assert folder_hash(folder) == digest


def test_checkpoint_into_an_empty_folder_is_fine(task, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    prune(BUILD(), task, PruneConfig(ratio=0.5, steps=2, **FAST), checkpoint=folder)
    assert is_checkpoint(folder)


def test_cli_resume_with_other_weights_is_refused_naming_them(tmp_path, monkeypatch, capsys):
    import safetensors.torch

    import neuroprune.core.loop as schedule
    from neuroprune.cli.main import main
    from neuroprune.models.zoo import build_model

    for seed, name in ((0, "a.safetensors"), (1, "b.safetensors")):
        torch.manual_seed(seed)
        safetensors.torch.save_file(build_model("mlp").state_dict(), tmp_path / name)
    real = schedule._run_step

    def stop_at_step_2(work, step, *args, **kwargs):
        if step == 2:
            raise KeyboardInterrupt
        return real(work, step, *args, **kwargs)

    monkeypatch.setattr(schedule, "_run_step", stop_at_step_2)
    argv = ["prune", "--model", "zoo:mlp", "--criterion", "magnitude", "--steps", "2", "--tolerance", "1", "--quiet",
            "--latency-runs", "1", "--out", str(tmp_path / "o")]
    assert main([*argv, "--weights", str(tmp_path / "a.safetensors")]) == 130
    monkeypatch.undo()
    state = (tmp_path / "o.checkpoint" / STATE_FILE).read_bytes()
    capsys.readouterr()
    assert main([*argv, "--weights", str(tmp_path / "b.safetensors"), "--resume"]) == 2
    assert "was started from other model weights (--weights" in capsys.readouterr().err
    assert (tmp_path / "o.checkpoint" / STATE_FILE).read_bytes() == state  # the checkpoint is untouched
    assert main([*argv, "--weights", str(tmp_path / "a.safetensors"), "--resume"]) == 0


@pytest.mark.parametrize("swap", [True, False])
@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_a_failure_at_any_rename_leaves_the_old_or_the_new_folder(results, tmp_path, monkeypatch, swap, fail_at):
    old, new = results
    target = tmp_path / "out"
    save(target, old.model, old.plan)
    if not swap:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    real, calls = os.replace, []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            raise OSError("failed here")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    try:
        save(target, new.model, new.plan, overwrite=True)
    except OSError:
        pass
    monkeypatch.undo()
    got = outputs(load(target, BUILD))
    assert torch.equal(got, outputs(old.model)) or torch.equal(got, outputs(new.model))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_fingerprint_covers_every_dtype_and_zero_dim_buffers(dtype):
    from neuroprune.torch.fingerprint import fingerprint_model

    model = mlp((6, 16, 3), norm="bn").to(dtype)  # BatchNorm's num_batches_tracked is a 0-dim int64
    same = mlp((6, 16, 3), norm="bn").to(dtype)
    assert fingerprint_model(model) == fingerprint_model(same)
    weight = same[0].weight.data.view(-1)
    weight.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[weight.element_size()])[3] += 1  # one ulp
    assert fingerprint_model(model) != fingerprint_model(same)
    same[1].num_batches_tracked += 1
    assert fingerprint_model(mlp((6, 16, 3), norm="bn").to(dtype)) != fingerprint_model(same)
