"""Reaching the asked target: neuroprune's default command vs. Torch-Pruning at --ratio 0.8.

The user of issue 15: an MNIST-shaped MLP 784-500-300-10 (ReLU), trained dense, then 80 % of its
hidden neurons removed with 5 epochs of fine-tuning. Compared, per seed, on the same trained
dense model and the same data:

* **neuroprune default**: ``PruneConfig(ratio=0.8, finetune_epochs=5)``, i.e. what
  ``neuroprune prune --ratio 0.8 --finetune-epochs 5`` runs (rank criterion, tolerance 0.02,
  ``steps="auto"``, ``judge="after"``: each attempt is fine-tuned before it is validated);
* **neuroprune judge=before**: the same with ``judge="before"`` (the write-up's order, validated
  right after masking, as the loop did before issue 15; it still continues after a rollback);
* **neuroprune recipe**: the default command plus ``--reconstruct --distill 0.7`` (least-squares
  re-fit before the fine-tuning, which is distilled from the dense model), same budget per attempt;
* **Torch-Pruning**: ``MetaPruner`` with L2 magnitude importance, ``pruning_ratio=0.8`` (output
  layer ignored), one shot, then fine-tuned for as many epochs as neuroprune's default command
  spent in all (its report's ``finetune.epochs_total``), same optimiser, learning rate and batches.

Delivered reduction: share of hidden neurons and of parameters removed. Error: on the test split.
Wall time: pruning + fine-tuning (not the dense training), one thread.

Data: a real MNIST ``.npz`` (``x_train, y_train, x_test, y_test``, e.g. Keras' ``mnist.npz``) with
``--data``; without it, the MNIST-shaped file of ``examples/write_up_scenario.py`` (scikit-learn's
digits upsampled to 28x28) is written to a temporary folder. Pixels are scaled to [0, 1] (the
write-up's preprocessing); 10 % of the training arrays are held out for validation.

    .venv/bin/python benchmarks/reach_target.py                    # digits as 28x28, 3 seeds
    .venv/bin/python benchmarks/reach_target.py --data mnist.npz   # real MNIST
    .venv/bin/python benchmarks/reach_target.py --quick            # 1 seed
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import version as _version
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from omp_policy import reexec_with_omp_policy  # noqa: E402

import neuroprune as npr  # noqa: E402
from neuroprune.data import DataSplits  # noqa: E402
from neuroprune.torch.recover.finetune import finetune  # noqa: E402

RATIO = 0.8
FINETUNE_EPOCHS = 5
LEARNING_RATE = 1e-3
BATCH_SIZE = 64
WIDTHS = (500, 300)


class MLP(nn.Module):
    """784-500-300-10 with ReLU: the MLP of the issue."""

    def __init__(self, in_features: int = 784, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, WIDTHS[0])
        self.fc2 = nn.Linear(WIDTHS[0], WIDTHS[1])
        self.fc3 = nn.Linear(WIDTHS[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def build() -> nn.Module:
    """The MLP as a model file for the command line (``--model benchmarks/reach_target.py:build``)."""
    return MLP()


def load_splits(path: str | Path, seed: int = 0) -> DataSplits:
    """The .npz as float32 pixels in [0, 1], flattened, with a stratified 10 % validation split."""
    from sklearn.model_selection import train_test_split

    with np.load(path, allow_pickle=False) as arrays:
        x_train, y_train = arrays["x_train"], arrays["y_train"].astype(np.int64)
        x_test, y_test = arrays["x_test"], arrays["y_test"].astype(np.int64)
    scale = 255.0 if x_train.dtype == np.uint8 or x_train.max() > 1.5 else 1.0
    flat = lambda x: torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / scale)  # noqa: E731
    fit, val = train_test_split(np.arange(len(x_train)), test_size=0.1, stratify=y_train, random_state=seed)
    return DataSplits(str(path), flat(x_train[fit]), torch.from_numpy(y_train[fit]), flat(x_train[val]),
                      torch.from_numpy(y_train[val]), flat(x_test), torch.from_numpy(y_test), int(y_train.max()) + 1)


def hidden_widths(model: nn.Module) -> tuple[int, int]:
    return model.fc1.out_features, model.fc2.out_features


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def row(model: nn.Module, dense_params: int, task, seconds: float, epochs: int, reached: bool | None = None) -> dict:
    widths = hidden_widths(model)
    return {"widths": widths, "neurons_removed": 1 - sum(widths) / sum(WIDTHS),
            "params_removed": 1 - count_params(model) / dense_params,
            "error": 1 - task.evaluate(model, "test"), "seconds": seconds, "epochs": epochs, "reached": reached}


def run_neuroprune(dense: nn.Module, task, seed: int, **settings) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    start = time.perf_counter()
    result = npr.prune(dense, task, npr.PruneConfig(ratio=RATIO, finetune_epochs=FINETUNE_EPOCHS, seed=seed,
                                                    progress=False, latency_runs=1, **settings))
    seconds = time.perf_counter() - start
    report = result.report
    return row(result.model, count_params(dense), task, seconds, report["finetune"]["epochs_total"],
               report["target"]["reached"]), report


def run_torch_pruning(tp, dense: nn.Module, task, seed: int, epochs: int) -> dict:
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = copy.deepcopy(dense).eval()
    pruner = tp.pruner.MetaPruner(model, task.example_input(), tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=RATIO, ignored_layers=[model.fc3])
    pruner.step()
    finetune(model, task, epochs=epochs, learning_rate=LEARNING_RATE, progress=False)
    return row(model, count_params(dense), task, time.perf_counter() - start, epochs)


def mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", metavar="NPZ", help="MNIST-shaped .npz (default: digits upsampled to 28x28)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dense-epochs", type=int, default=20, help="training epochs of the dense MLP")
    parser.add_argument("--quick", action="store_true", help="1 seed")
    parser.add_argument("--out", default="benchmarks/results/reach_target.md")
    parser.add_argument("--omp-wait-policy", choices=["passive", "active", "env"], default="passive")
    args = parser.parse_args(argv)
    reexec_with_omp_policy(args.omp_wait_policy)
    torch.set_num_threads(1)
    seeds = list(range(1 if args.quick else args.seeds))
    data_path = args.data
    if data_path is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
        from write_up_scenario import make_demo_npz  # noqa: PLC0415

        data_path = make_demo_npz(Path(tempfile.mkdtemp()) / "digits28.npz")
    try:
        import torch_pruning as tp  # noqa: PLC0415
    except ImportError:
        tp = None
        print("torch_pruning not installed: its rows are skipped", file=sys.stderr)
    rows: dict[str, list[dict]] = {"dense": [], "neuroprune default": [], "neuroprune judge=before": [],
                                   "neuroprune recipe": [], "Torch-Pruning (L2)": []}
    stories = []
    for seed in seeds:
        splits = load_splits(data_path, seed=0)  # one split for every seed: seeds vary the training
        task = npr.ClassificationTask(splits, batch_size=BATCH_SIZE, seed=seed)
        torch.manual_seed(seed)
        dense = MLP(splits.input_shape[0], splits.num_classes)
        start = time.perf_counter()
        finetune(dense, task, epochs=args.dense_epochs, learning_rate=LEARNING_RATE, progress=False)
        rows["dense"].append(row(dense, count_params(dense), task, time.perf_counter() - start, args.dense_epochs))
        default, report = run_neuroprune(dense, task, seed)
        rows["neuroprune default"].append(default)
        stories.append((seed, report))
        rows["neuroprune judge=before"].append(run_neuroprune(dense, task, seed, judge="before")[0])
        rows["neuroprune recipe"].append(run_neuroprune(dense, task, seed, reconstruct=True, distill_weight=0.7)[0])
        if tp is not None:
            rows["Torch-Pruning (L2)"].append(run_torch_pruning(tp, dense, task, seed, default["epochs"]))
        print(f"seed {seed}: " + "; ".join(f"{name} err {r[-1]['error']:.2%} removed {r[-1]['neurons_removed']:.0%}"
                                           for name, r in rows.items() if r), file=sys.stderr)
    rows = {name: r for name, r in rows.items() if r}

    splits = load_splits(data_path)
    lines = [
        "# Reaching the asked target (issue 15)",
        "",
        f"MLP 784-500-300-10 on `{Path(str(data_path)).name}` ({len(splits.x_train)} train, {len(splits.x_val)} "
        f"validation, {len(splits.x_test)} test samples, pixels in [0, 1]); dense: Adam lr {LEARNING_RATE:g}, "
        f"batch {BATCH_SIZE}, {args.dense_epochs} epochs. `--ratio {RATIO}`, {FINETUNE_EPOCHS} epochs of fine-tuning "
        f"per attempt for neuroprune; Torch-Pruning gets the total neuroprune's default command spent. Seeds "
        f"{seeds} (mean ± std). torch {torch.__version__}, "
        f"torch-pruning {_version('torch-pruning') if tp else 'n/a'}, 1 thread, {platform.processor() or platform.machine()}.",
        "",
        "| method | hidden widths | neurons removed | parameters removed | test error (%) | fine-tune epochs | "
        "target reached | wall time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, results in rows.items():
        widths = sorted({"/".join(map(str, r["widths"])) for r in results})
        reached = [r["reached"] for r in results if r["reached"] is not None]
        lines.append(
            f"| {name} | {', '.join(widths)} | {mean_std([r['neurons_removed'] for r in results], 100, 1)} % | "
            f"{mean_std([r['params_removed'] for r in results], 100, 1)} % | "
            f"{mean_std([r['error'] for r in results], 100)} | {mean_std([r['epochs'] for r in results], 1, 1)} | "
            f"{(str(sum(reached)) + '/' + str(len(reached))) if reached else '-'} | "
            f"{mean_std([r['seconds'] for r in results], 1, 1)} |")
    dense_error = statistics.fmean(r["error"] for r in rows["dense"])
    ours = rows["neuroprune default"]
    delivered = all(r["neurons_removed"] >= RATIO - 1e-9 for r in ours)
    gap = (statistics.fmean(r["error"] for r in ours) - dense_error) * 100
    verdicts = [f"- 80 % delivered by the default command: {'met' if delivered else 'NOT met'} "
                "(" + ", ".join(f"{r['neurons_removed']:.1%}" for r in ours) + ")",
                f"- error within 0.1 point of dense: {'met' if gap <= 0.1 else 'NOT met'} ({gap:+.2f} points)"]
    if "Torch-Pruning (L2)" in rows:
        theirs = statistics.fmean(r["error"] for r in rows["Torch-Pruning (L2)"]) * 100
        mine = statistics.fmean(r["error"] for r in ours) * 100
        verdicts.append(f"- ahead of Torch-Pruning: {'met' if mine < theirs else 'NOT met'} "
                        f"({mine:.2f} % vs {theirs:.2f} % error)")
    lines += ["", "Targets:", *verdicts, "", "What neuroprune's default command did (attempts per seed):", ""]
    for seed, report in stories:
        attempts = "; ".join(f"step {s['step']}.{s['attempt']} {s['removed']} removed, drop {s['drop']:+.4f} "
                             f"{'accepted' if s['accepted'] else 'rolled back'}" for s in report["steps"] if s["removed"])
        lines.append(f"- seed {seed}: {attempts}")
    lines += ["", f"Reproduce: `.venv/bin/python benchmarks/reach_target.py"
              + (f" --data {args.data}" if args.data else "") + (" --quick" if args.quick else "") + "`"]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
