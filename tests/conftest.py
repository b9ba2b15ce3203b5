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
