import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path, monkeypatch):
    """Every test runs in its own empty folder: default outputs such as ``neuroprune-out`` (which
    ``make demo`` leaves in the checkout) neither get in the way nor land in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained on toy data, and its task (shared by the loop, budget and target tests)."""
    from models import mlp, toy_data

    from neuroprune import ClassificationTask
    from neuroprune.torch.recover.finetune import finetune

    torch.manual_seed(0)
    task = ClassificationTask(toy_data(n=240), batch_size=16)
    model = mlp((6, 24, 16, 3))
    finetune(model, task, epochs=20, progress=False)
    return model, task
