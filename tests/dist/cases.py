"""Models, calibration batches and the measurements that must not depend on the world size.

Shared by the torchrun scripts in this folder (which run them over 2 or 3 ranks) and by
tests/test_distributed.py (which runs them in one process and compares).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from neuroprune.core.criteria import ScoringInput, criterion_names, score
from neuroprune.core.selection import select_units
from neuroprune.models.zoo import build_model
from neuroprune.torch.graph.discover import discover
from neuroprune.torch.owners import gather_grams
from neuroprune.torch.stats import collect_statistics


class ResidualCNN(nn.Module):
    """conv-bn-relu, one residual block (the add ties channels), pool, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.conv1 = nn.Conv2d(6, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def _tiny_bert(n_batches: int):
    """A 2-layer BERT (hidden 32, 4 heads) and padded token batches (dicts with an attention mask)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        vocab_size=50, max_position_embeddings=64, pad_token_id=0)
    model = BertModel(config).eval()
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(n_batches):
        ids = torch.randint(1, 50, (4, 10), generator=generator)
        mask = (torch.arange(10)[None] < torch.randint(4, 11, (4, 1), generator=generator)).long()
        batches.append({"input_ids": ids * mask, "attention_mask": mask})
    return model, batches


def _bert_loss(model, batch):
    mask = batch["attention_mask"]
    return (model(**batch).last_hidden_state.pow(2).mean(-1) * mask).sum() / mask.sum()


def build_case(name: str, n_batches: int = 5):
    """(model, calibration batches) of case ``name``, the same in every process (fixed seeds)."""
    if name == "bert":
        return _tiny_bert(n_batches)
    torch.manual_seed(0)
    if name.startswith("mlp"):
        model, shape, classes = build_model("mlp"), (64,), 10
    elif name == "resnet":
        model, shape, classes = ResidualCNN(), (1, 8, 8), 3
    elif name == "bilstm":
        model, shape, classes = build_model("bilstm"), (8, 8), 10
    elif name == "transformer":
        model, shape, classes = build_model("transformer"), (8, 8), 10
    else:
        raise KeyError(name)
    model.eval()
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, *shape, generator=generator), torch.randint(0, classes, (6,), generator=generator))
               for _ in range(n_batches)]
    return model, batches


def _loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def measure(name: str, n_batches: int = 5, *, ddp: bool = False, pairs: bool = False) -> dict:
    """Every statistic, every criterion's scores (or its error) and a half-width selection.

    ``ddp``: through a ``DistributedDataParallel`` wrapper (in a process group of 2). ``pairs``:
    one process, each step the mean loss of two consecutive batches, which is what the DDP run
    of 2 ranks computes (rank r takes batches r, r + 2, ...; gradients averaged per step).
    """
    model, batches = build_case(name, n_batches)
    loss, data, net, token_mask = _loss, batches, model, None
    if name == "bert":
        from neuroprune.torch.adapters import adapter_for

        graph = adapter_for(model).discover(model, batches[0])
        loss, token_mask = _bert_loss, (lambda batch: batch["attention_mask"])
    else:
        graph = discover(model, batches[0][0][:1])
    if pairs:
        data = list(zip(batches[0::2], batches[1::2]))
        loss = lambda m, pair: (_loss(m, pair[0]) + _loss(m, pair[1])) / 2  # noqa: E731
    if ddp:
        net = nn.parallel.DistributedDataParallel(model)
    stats = collect_statistics(net, graph, data, loss, gradients=True, per_weight=True, gram=True,
                               progress=False, token_mask=token_mask)
    if pairs:
        stats.batches = n_batches  # the DDP run counts every batch once
    result = {"scores": {}, "selection": {}}
    for criterion in criterion_names():
        try:
            scores = score(ScoringInput(model, graph, stats), criterion, {"seed": 0} if criterion == "random" else {})
        except Exception as error:  # a criterion that does not apply must fail the same way
            result["scores"][criterion] = f"{type(error).__name__}: {error}"
            continue
        result["scores"][criterion] = {group: torch.as_tensor(np.asarray(value)) for group, value in scores.items()}
        selection = select_units(graph, scores, {g.name: g.size // 2 for g in graph.groups})
        result["selection"][criterion] = {group: units.tolist() for group, units in selection.items()}
    # scores came from Gram matrices held on their owner ranks; bring them all here to compare every field
    gather_grams(stats)
    floats, ints = stats.flat_arrays()
    result.update(schema=[tuple(e) for e in stats.schema()], floats=floats, ints=ints)
    return result


CASES = ("mlp", "resnet", "bilstm", "transformer", "bert")


def trained_mlp():
    """A small MLP trained on toy data and its task (as tests/conftest.py's ``trained``)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from models import mlp, toy_data

    from neuroprune import ClassificationTask
    from neuroprune.torch.recover.finetune import finetune

    torch.manual_seed(0)
    task = ClassificationTask(toy_data(n=240), batch_size=16)
    model = mlp((6, 24, 16, 3))
    # whole batches on every rank: the same weights bit for bit in every world size (a checkpoint's
    # fingerprint is exact; DDP training would differ from one process at float rounding)
    finetune(model, task, epochs=20, progress=False, sharding="none")
    return model, task


def prune_config(**changes):
    """Steps, statistics (taylor), reconstruction and fine-tuning."""
    from neuroprune import PruneConfig

    settings = dict(criterion="taylor", ratio=0.6, steps=2, tolerance=0.01, max_retries=2, reconstruct=True,
                    finetune_epochs=1, progress=False, latency_runs=1)
    return PruneConfig(**{**settings, **changes})


#: the configurations a full prune is compared on: together they pass every decision point
PRUNE_CONFIGS = {
    "taylor": {},
    "rollback": dict(criterion="random", ratio=0.9, tolerance=0.0, judge="before", reconstruct=False, max_retries=1),
}
