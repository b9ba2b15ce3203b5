"""The library behind the CLI: workflows, model specs, and one of each shared helper.

The CLI parses, prints and exits; the workflows do the work and write outputs in one place
(``neuroprune.workflows.outputs``); the library never imports the CLI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from models import mlp, toy_data

from neuroprune.core.config import PruneConfig
from neuroprune.core.errors import ConfigError, NonFiniteError
from neuroprune.report.formatting import summary_rows
from neuroprune.report.html import render_html
from neuroprune.report.table import format_report
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.torch.modes import traceable_eval_mode
from neuroprune.torch.recover.training import training_step
from neuroprune.workflows.listener import Listener
from neuroprune.workflows.outputs import Outputs
from neuroprune.workflows.prune_and_report import prune_and_report
from neuroprune.workflows.train_prune import epoch_window, train_prune

SRC = Path(__file__).resolve().parents[1] / "src" / "neuroprune"
QUICK = dict(criterion="magnitude", ratio=0.5, tolerance=1.0, progress=False, latency_runs=1)


class Recorder(Listener):
    def __init__(self):
        self.events = []

    def note(self, message):
        self.events.append(("note", message))

    def report_ready(self, result):
        self.events.append(("report_ready", sorted(result.report)))

    def saved(self, outputs):
        self.events.append(("saved", list(outputs.kept)))

    def epoch_done(self, record, epochs, metric_name):
        self.events.append(("epoch", record["step"], epochs, metric_name))


def small_task(seed: int = 0):
    torch.manual_seed(seed)
    return mlp((6, 16, 12, 3), seed=seed), ClassificationTask(toy_data(n=120), batch_size=16)


# --------------------------------------------------------------------------- the library does not import the CLI


def _imports_of(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return re.findall(r"^\s*(?:from|import)\s+(neuroprune\.cli\b[\w.]*)", text, flags=re.M)


def test_no_module_outside_the_cli_imports_it():
    offenders = {str(p.relative_to(SRC)): _imports_of(p) for p in SRC.rglob("*.py")
                 if "cli" not in p.relative_to(SRC).parts and p.name != "__main__.py" and _imports_of(p)}  # the entry point
    assert not offenders, f"library modules import the CLI: {offenders}"


def test_export_and_workflows_load_without_the_cli():
    code = ("import sys, neuroprune.torch.export, neuroprune.workflows.prune_and_report, "
            "neuroprune.workflows.train_prune, neuroprune.workflows.demo, neuroprune.models.spec; "
            "print(sorted(m for m in sys.modules if m.startswith('neuroprune.cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(SRC.parent)})
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- one of each


def _grep(pattern: str, allowed: set[str]) -> list[str]:
    hits = []
    for path in SRC.rglob("*.py"):
        name = str(path.relative_to(SRC))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if re.search(pattern, code) and not code.lstrip().startswith((">>>", "...")) and name not in allowed:
                hits.append(f"{name}:{number}: {line.strip()}")
    return hits


def test_one_atomic_writer():
    assert not _grep(r"\bos\.replace\(|\.rename\(", {"core/atomic.py"})


def test_one_mode_restoring_context():
    assert not _grep(r"\.training\s*=[^=]", {"torch/modes.py"})


def test_one_training_step():
    # stats.py (and the Keras frontend's torch gradients) back-propagate for gradient statistics
    # only, without an optimizer
    assert not _grep(r"^\s*optimizer\.step\(\)\s*$|^\s*[\w.]+\.backward\(\)\s*$",
                     {"torch/recover/training.py", "torch/recover/precision.py", "torch/stats.py",
                      "keras/gradients.py"})


def test_training_step_refuses_a_non_finite_loss_before_stepping():
    model = nn.Linear(2, 1)
    before = model.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.ones(3, 2)).sum() * float("nan")
    with pytest.raises(NonFiniteError, match=r"^fine-tuning loss became nan in epoch 2; lower the learning rate$"):
        training_step(loss, optimizer, what="fine-tuning loss", where="in epoch 2")
    assert torch.equal(model.weight, before) and model.weight.grad is None


def test_traceable_eval_mode_restores_modes_and_the_fast_path_on_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    model[1].eval()  # frozen by the user
    fast_path = torch.backends.mha.get_fastpath_enabled()
    with pytest.raises(RuntimeError, match="boom"), traceable_eval_mode(model):
        assert not model.training and not torch.is_grad_enabled()
        assert torch.backends.mha.get_fastpath_enabled() is False
        raise RuntimeError("boom")
    assert (model.training, model[0].training, model[1].training) == (True, True, False)
    assert torch.backends.mha.get_fastpath_enabled() == fast_path


def test_text_and_html_summaries_show_the_same_cells():
    side = {"params": 4000, "flops": 2_000_000, "size_bytes": 16000, "accuracy": 0.9,
            "latency_ms": {"batch_1": 2.0, "batch_64": 9.0}}
    report = {"before": side, "after": dict(side, params=1000, accuracy=0.85, latency_ms={"batch_1": 1.0})}
    text, page = format_report(report), render_html(report)
    for row in summary_rows(report["before"], report["after"], "accuracy"):
        assert "  ".join(cell for cell in row if cell) in re.sub(r" {2,}", "  ", text)
        for cell in row:
            assert f">{cell}</t" in page
    assert summary_rows(side, side, "accuracy", latency_runs=1)[-1][-1].endswith("(unreliable: 1 runs)")


# --------------------------------------------------------------------------- workflows


def test_prune_and_report_saves_once_then_tells_in_order(tmp_path):
    model, task = small_task()
    recorder = Recorder()
    outputs = Outputs(folder=str(tmp_path / "out"), json=str(tmp_path / "r.json"), html=False)
    result = prune_and_report(model, task, PruneConfig(**QUICK), outputs=outputs, explain_csv=str(tmp_path / "s.csv"),
                              listener=recorder)
    assert [event[0] for event in recorder.events] == ["report_ready", "saved"]
    assert "data" in recorder.events[0][1]
    assert recorder.events[1][1] == [f"the pruned model in {tmp_path / 'out'}/", f"the report in {tmp_path / 'r.json'}"]
    assert outputs.kept[-1] == f"the scores in {tmp_path / 's.csv'}"
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["after"] == result.report["after"] and "scores" in saved  # rewritten after the explanation
    assert (tmp_path / "out" / "model.safetensors").is_file() and not (tmp_path / "out" / "report.html").exists()
    assert (tmp_path / "s.csv").read_text().startswith("layer,neuron,")


def test_prune_and_report_writes_nothing_without_outputs(tmp_path):
    model, task = small_task()
    result = prune_and_report(model, task, PruneConfig(**QUICK))
    assert result.report["data"]["spec"] == "toy"
    assert list(tmp_path.iterdir()) == []


def test_train_prune_reports_every_epoch_and_removes_the_masked_neurons():
    model, task = small_task()
    recorder = Recorder()
    result = train_prune(model, task, ratio=0.5, epochs=3, start_epoch=0, end_epoch=2, listener=recorder)
    assert recorder.events == [("epoch", 1, 3, "accuracy"), ("epoch", 2, 3, "accuracy"), ("epoch", 3, 3, "accuracy")]
    assert [layer["width_after"] for layer in result.report["layers"]] == [8, 6]
    assert result.model[0].out_features == 8 and result.report["config"]["mode"] == "train-prune"
    assert len(result.report["steps"]) == 3 and result.report["after"]["params"] < result.report["before"]["params"]


def test_epoch_window_refuses_an_empty_window():
    assert epoch_window(10) == (1, 7)
    with pytest.raises(ConfigError, match="need 0 <= --start-epoch < --end-epoch <= --epochs, got 3, 2, 4"):
        epoch_window(4, 3, 2)
