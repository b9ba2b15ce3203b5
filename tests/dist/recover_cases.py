"""Recovery runs that must give the same weights on 2 ranks (each a slice of every batch) as in one process.

Shared by tests/dist/recover_run.py (under torchrun) and tests/test_distributed_recover.py (one
process, then the comparison). Train batches of 7 and 149 rows split unevenly over 2 ranks (4 + 3;
the last batch of 1 row leaves rank 1 an empty slice of weight 0).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import mlp, toy_data  # noqa: E402

from neuroprune import ClassificationTask  # noqa: E402
from neuroprune.torch import distributed  # noqa: E402
from neuroprune.torch.recover.distill import distill  # noqa: E402
from neuroprune.torch.recover.finetune import finetune  # noqa: E402


class ResidualMLP(nn.Module):
    """Linear, a residual block (the add ties its output to the stem), LayerNorm, Linear; no BatchNorm."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Linear(6, 12)
        self.block = nn.Sequential(nn.Linear(12, 16), nn.GELU(), nn.Linear(16, 12))
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        h = F.relu(self.stem(x))
        return self.head(self.norm(h + self.block(h)))


def _task(batch_size: int) -> ClassificationTask:
    return ClassificationTask(toy_data(n=250), batch_size=batch_size)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _count_rows(model: nn.Module, rows: list[int]) -> nn.Module:
    model.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    return model


def run_case(name: str) -> dict:
    """Train case ``name`` from fixed weights; returns the final state, the loss history and the
    rows this process's forward passes saw (a rank's share under DDP / FSDP2)."""
    rows: list[int] = []
    if name in ("mlp", "mlp-tail", "mlp-fsdp", "mlp-none"):
        model, task = _count_rows(mlp((6, 24, 16, 3)), rows), _task(149 if name == "mlp-tail" else 7)
        sharding = {"mlp-fsdp": "fsdp", "mlp-none": "none"}.get(name, "ddp")
        history = finetune(model, task, epochs=3, learning_rate=1e-2, progress=False, sharding=sharding)
    elif name == "mlp-user-ddp":  # the user's own DDP model: sliced, not wrapped again
        model, task = _count_rows(mlp((6, 24, 16, 3)), rows), _task(7)
        net = nn.parallel.DistributedDataParallel(model) if distributed.active() else model
        history = finetune(net, task, epochs=3, learning_rate=1e-2, progress=False)
    elif name == "residual":
        model, task = _count_rows(ResidualMLP(), rows), _task(7)
        history = finetune(model, task, epochs=3, learning_rate=1e-2, progress=False)
    elif name == "kd":  # fine-tuning against the unpruned model (ClassificationTask.distillation_loss)
        model, task = ResidualMLP(), _task(7)
        teacher = copy.deepcopy(model)
        with torch.no_grad():
            teacher.head.weight.mul_(2.0)
        history = finetune(model, task, epochs=2, learning_rate=1e-2, progress=False, teacher=teacher,
                           distill_weight=0.5)
    elif name in ("distill", "distill-fsdp"):  # distill(): AdamW with warm-up and cosine decay, on task.loss
        model, task = ResidualMLP(), _task(7)
        result = distill(model, task, epochs=2, learning_rate=1e-2, warmup_steps=5, progress=False,
                         sharding="fsdp" if name == "distill-fsdp" else "ddp")
        history = result.losses + [float(result.steps)]
    else:
        raise KeyError(name)
    return {"state": _state(model), "history": history, "rows": sum(rows)}


RECOVER_CASES = ("mlp", "mlp-tail", "mlp-user-ddp", "residual", "kd", "distill", "mlp-fsdp", "distill-fsdp", "mlp-none")


def backward_alone() -> bool:
    """After a DDP fine-tuning, rank 0 alone back-propagates through the model: no gradient hook of
    the dropped DDP wrapper may stay behind (it would wait for the other ranks)."""
    model, task = mlp((6, 24, 16, 3)), _task(7)
    finetune(model, task, epochs=1, progress=False)
    if distributed.rank() == 0:
        model(torch.randn(4, 6)).sum().backward()
    return model[0].weight.grad is not None or distributed.rank() != 0


def prune_case(sharding: str = "ddp") -> dict:
    """A full prune() with reconstruction and two fine-tuning epochs per attempt: plan, decisions, weights."""
    from cases import prune_config, trained_mlp

    from neuroprune import prune

    model, task = trained_mlp()
    result = prune(model, task, prune_config(finetune_epochs=2, recover_sharding=sharding))
    keys = ("step", "attempt", "removed", "accepted", "accuracy")
    steps = [{k: s.get(k) for k in keys} for s in result.report["steps"]]
    return {"plan": result.plan.to_dict()["modules"], "steps": steps, "state": _state(result.model)}
