"""Exit status of the command: 0 done, 2 user error, 130 / 143 interrupted (saying what was kept), 1 a bug."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import neuroprune.cli.criteria as criteria_cli
import neuroprune.core.loop as schedule
from neuroprune.cli.main import BUG_HINT, main

QUICK = ["--train-epochs", "0", "--criterion", "magnitude", "--tolerance", "1", "--quiet", "--latency-runs", "1"]
SRC = str(Path(__file__).resolve().parent.parent / "src")


def test_success_is_0(capsys):
    assert main(["criteria"]) == 0


def test_user_error_is_2_with_one_line_and_no_traceback(tmp_path, capsys):
    assert main(["prune", "--model", "zoo:nope", "--out", str(tmp_path / "o"), *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neuroprune: error: unknown") and "Traceback" not in err[0]


def test_usage_error_is_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", "--no-such-option"])
    assert exit_info.value.code == 2


def test_a_bug_is_1_with_its_traceback_and_a_request_to_report_it(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(criteria_cli, "run", broken)  # registered when main builds its parser
    assert main(["criteria"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError: oops" in err
    assert err.strip().splitlines()[-1] == BUG_HINT


def test_a_full_disk_is_2_with_one_line(monkeypatch, capsys):
    import errno

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "o/model.safetensors")

    monkeypatch.setattr(criteria_cli, "run", full)
    assert main(["criteria"]) == 2
    assert capsys.readouterr().err.strip() == ("neuroprune: error: [Errno 28] No space left on device: "
                                               "'o/model.safetensors'")


def interrupt_at_step(monkeypatch, step: int, action):
    real = schedule._run_step

    def run_step(work, current, *args, **kwargs):
        if current == step:
            action()
        return real(work, current, *args, **kwargs)

    monkeypatch.setattr(schedule, "_run_step", run_step)


def raise_keyboard_interrupt():
    raise KeyboardInterrupt


def test_ctrl_c_is_130_and_names_the_checkpoint_to_resume(tmp_path, monkeypatch, capsys):
    interrupt_at_step(monkeypatch, 3, raise_keyboard_interrupt)
    out = tmp_path / "o"
    argv = ["prune", "--model", "zoo:mlp", "--steps", "3", "--out", str(out), *QUICK]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"neuroprune: interrupted; checkpoint after step 2 of 3 in {out}.checkpoint; rerun the same command "
                   "with --resume")
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0 and (out / "model.safetensors").is_file()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_sigterm_is_143_and_names_the_checkpoint(tmp_path, monkeypatch, capsys):
    interrupt_at_step(monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    previous = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "o"
    assert main(["prune", "--model", "zoo:mlp", "--steps", "2", "--out", str(out), *QUICK]) == 143
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("neuroprune: terminated (SIGTERM); checkpoint after step 1 of 2 in ")
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is restored
    assert not any(p.name.startswith(".o") for p in tmp_path.iterdir())  # no half-written folder


def test_interrupt_before_anything_is_written_says_so(tmp_path, monkeypatch, capsys):
    import neuroprune.cli.prune as prune_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prune_cli, "trained_model_and_task", interrupted)
    assert main(["prune", "--model", "zoo:mlp", "--out", str(tmp_path / "o"), *QUICK]) == 130
    assert capsys.readouterr().err.strip() == "neuroprune: interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_interrupt_after_the_folder_is_saved_names_it(tmp_path, monkeypatch, capsys):
    import neuroprune.workflows.outputs as outputs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "write_report_json", interrupted)
    out = tmp_path / "o"
    assert main(["prune", "--model", "zoo:mlp", "--out", str(out), "--json", str(tmp_path / "r.json"), *QUICK]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"neuroprune: interrupted; the pruned model in {out}/")  # then the checkpoint, if any


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_signal_to_a_running_command_then_resume(tmp_path, signum, code, word):
    out = tmp_path / "o"
    argv = [sys.executable, "-m", "neuroprune.cli.main", "prune", "--model", "zoo:mlp", "--train-epochs", "0",
            "--steps", "6", "--finetune-epochs", "5", "--criterion", "magnitude", "--tolerance", "1", "--quiet",
            "--latency-runs", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": SRC}
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    state = Path(f"{out}.checkpoint") / "state.json"
    deadline = time.monotonic() + 120
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.exists(), "no checkpoint appeared"
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == code
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"neuroprune: {word}; checkpoint after step ") and last.endswith("--resume")
    resumed = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "model.safetensors").is_file() and not Path(f"{out}.checkpoint").exists()
