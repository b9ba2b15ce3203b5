"""The demo: the write-up's network on the bundled digits data, 75 % of its hidden neurons removed.

Example (about 20 s, so not run here)::

    result = run_demo(seed=0, progress=False)
    result.report["after"]["params"] < result.report["before"]["params"]   # True
"""

from __future__ import annotations

import torch

from neuroprune.core.config import PruneConfig
from neuroprune.core.loop import PruneResult, prune
from neuroprune.data import load_digits
from neuroprune.models.zoo import build_model
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.torch.recover.finetune import finetune
from neuroprune.workflows.listener import Listener
from neuroprune.workflows.outputs import Outputs, save_result

#: The demo's pruning settings: rank criterion, 75 % in 5 validated steps, reconstruction, 3 epochs of fine-tuning.
DEMO_CONFIG = dict(criterion="rank", ratio=0.75, steps=5, tolerance=0.02, reconstruct=True, finetune_epochs=3)

#: Epochs of training before pruning (Adam).
DEMO_TRAIN_EPOCHS = 30


def run_demo(*, seed: int = 0, progress: bool = True, outputs: Outputs | None = None,
             listener: Listener | None = None) -> PruneResult:
    """Train the 64-128-64-10 MLP on digits, prune it with :data:`DEMO_CONFIG`, save it to ``outputs``."""
    listener = listener or Listener()
    torch.manual_seed(seed)
    task = ClassificationTask(load_digits(seed=seed), seed=seed)
    model = build_model("mlp")
    listener.note(f"training the 64-128-64-10 MLP on digits ({DEMO_TRAIN_EPOCHS} epochs, Adam)")
    finetune(model, task, epochs=DEMO_TRAIN_EPOCHS, progress=progress, desc="training")
    result = prune(model, task, PruneConfig(**DEMO_CONFIG, seed=seed, progress=progress))
    listener.report_ready(result)
    save_result(result, outputs or Outputs())
    listener.saved(outputs)
    return result
