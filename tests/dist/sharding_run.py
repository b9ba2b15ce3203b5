"""torchrun script: sharded validation, owner-rank Gram solves and the debug state check.

Usage: python -m torch.distributed.run --nproc_per_node=N tests/dist/sharding_run.py MODE OUT
MODE: "metrics" (accuracy and perplexity of sharded validation), "owners" (obs scores, a
reconstruction and a full prune with obs + reconstruction), "debug" (NEUROPRUNE_DEBUG_DIST=1 prune,
then one with rank 1's weights perturbed). Rank 0 writes OUT (torch.save) or OUT/error-RANK.json.
The functions are also run in one process by tests/test_distributed_sharding.py, to compare.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cases import prune_config, trained_mlp  # noqa: E402

from neuroprune import ClassificationTask, prune  # noqa: E402
from neuroprune.core.criteria import ScoringInput, score  # noqa: E402
from neuroprune.torch import distributed  # noqa: E402
from neuroprune.torch.graph.discover import discover  # noqa: E402
from neuroprune.torch.recover.reconstruct import reconstruct  # noqa: E402
from neuroprune.torch.stats import collect_statistics  # noqa: E402


class Counting:
    """Counts the batches a task's ``metric_sums`` sees on this rank."""

    def __init__(self, task):
        self.task, self.seen = task, 0
        original = task.metric_sums

        def counted(model, batch):
            self.seen += 1
            return original(model, batch)

        task.metric_sums = counted


def lm_case():
    from test_lm import make_documents

    from neuroprune.models.lm_zoo import tiny_llama, train_tokenizer
    from neuroprune.tasks.language_model import LMTask

    documents = make_documents()
    tokenizer = train_tokenizer(documents, vocab_size=300)
    task = LMTask(documents, tokenizer, seq_len=32, batch_size=5, calibration_samples=16, val_blocks=16, test_blocks=16)
    return tiny_llama(tokenizer.vocab_size, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64), task


def metrics() -> dict:
    """Accuracy (3 validation batches: uneven over 2 ranks) and perplexity (4 batches: uneven over 3)."""
    from models import toy_data

    model, _ = trained_mlp()
    task = ClassificationTask(toy_data(n=3000), batch_size=16)
    counter = Counting(task)
    result = {"accuracy_val": task.evaluate(model, "val"), "accuracy_test": task.evaluate(model, "test")}
    lm, lm_task = lm_case()
    lm_task.bind(lm)
    lm_counter = Counting(lm_task)
    result["perplexity_val"] = lm_task.evaluate(lm, "val")
    result["batches_seen"] = counter.seen + lm_counter.seen
    return result


def owners() -> dict:
    """obs scores (one Gram matrix per Linear input), a reconstruction, and a full prune with both."""
    model, task = trained_mlp()
    graph = discover(model, task.example_input())
    stats = collect_statistics(model, graph, task.calibration_batches(), task.loss, gram=True, progress=False)
    held = sorted(key for key, axis in stats.axes.items() if axis.gram is not None)
    scores = score(ScoringInput(model, graph, stats), "obs", {})
    student = copy.deepcopy(model)
    keep = {path: {"in": np.arange(0, module.in_features, 2)} for path, module in student.named_modules()
            if isinstance(module, torch.nn.Linear) and path != "0"}
    with torch.no_grad():
        for path in keep:
            weight = student.get_submodule(path).weight
            weight[:, 1::2] = 0  # the masked model a reconstruction re-fits
    refitted = reconstruct(student, model, keep, task.calibration_batches(), task.loss, progress=False)
    result = prune(model, task, prune_config(criterion="obs", ratio=0.5, tolerance=0.05))
    return {"held": held, "owners": dict(stats.gram_owners), "scores": {k: np.asarray(v) for k, v in scores.items()},
            "refitted": refitted, "student": {k: v.clone() for k, v in student.state_dict().items()},
            "plan": result.plan.to_dict()["modules"],
            "steps": [{k: s.get(k) for k in ("step", "attempt", "removed", "accepted", "accuracy")}
                      for s in result.report["steps"]]}


def debug(out: Path) -> None:
    """A debug-checked prune passes; with rank 1's weights perturbed it fails on every rank."""
    model, task = trained_mlp()
    prune(model, task, prune_config(finetune_epochs=0))
    if distributed.rank() == 1:
        with torch.no_grad():
            model[0].bias += 1e-3  # the first layer: neither removed whole nor re-fitted
    try:
        prune(model, task, prune_config(finetune_epochs=0))
        outcome = {"type": None}
    except Exception as error:
        outcome = {"type": type(error).__name__, "message": str(error)}
    (out / f"debug-{distributed.rank()}.json").write_text(json.dumps(outcome))


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    distributed.init_from_env(timeout_s=60)
    if mode == "debug":
        debug(out)
    else:
        result = {"metrics": metrics, "owners": owners}[mode]()
        everyone = [None] * distributed.world_size()
        dist.all_gather_object(everyone, result)
        if distributed.is_writer():
            torch.save({"ranks": everyone, "world_size": distributed.world_size()}, out)
    distributed.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
