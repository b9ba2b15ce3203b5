"""One statistics pass and one full prune at 1 vs 2 processes (torchrun, gloo on CPU).

Every run is launched the same way (``python -m torch.distributed.run --nproc_per_node=N``), so
start-up costs are alike; the times are measured inside the workers, after a barrier, and exclude
start-up. The statistics pass: the zoo transformer, activations + gradients + Gram matrices over
``--batches`` calibration batches of 64 sequences. The full prune: the zoo MLP on digits, taylor,
2 steps with reconstruction and one epoch of fine-tuning per attempt (under DDP on 2 processes:
each rank a slice of every batch of 64). The statistics pass also records the time spent in its
collectives (the flat all-reduce), the prune the time spent in recovery (fine-tuning). Fine-tuning
alone: one epoch of the zoo transformer over the same batches (under DDP on 2 processes).

Run:  .venv/bin/python benchmarks/distributed.py [--batches 48] [--repeats 3]
      [--out benchmarks/results/distributed.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(out: str, batches: int, repeats: int) -> None:
    import torch
    import torch.nn.functional as F

    from neuroprune import ClassificationTask, PruneConfig, prune
    from neuroprune.data import load_digits
    from neuroprune.models.zoo import build_model
    from neuroprune.torch import distributed
    from neuroprune.torch.graph.discover import discover
    from neuroprune.torch.stats import collect_statistics

    distributed.init_from_env(timeout_s=300)
    torch.manual_seed(0)
    model = build_model("transformer").eval()
    generator = torch.Generator().manual_seed(1)
    data = [(torch.randn(64, 8, 8, generator=generator), torch.randint(0, 10, (64,), generator=generator))
            for _ in range(batches)]
    graph = discover(model, data[0][0][:1])
    loss = lambda m, b: F.cross_entropy(m(b[0]), b[1])  # noqa: E731
    reduce_seconds = []
    original = distributed.all_reduce_statistics

    def timed_reduce(*args, **kwargs):
        started = time.perf_counter()
        result = original(*args, **kwargs)
        reduce_seconds.append(time.perf_counter() - started)
        return result

    distributed.all_reduce_statistics = timed_reduce
    stats_times = []
    for _ in range(repeats):
        distributed.barrier()
        started = time.perf_counter()
        collect_statistics(model, graph, data, loss, gradients=True, gram=True, progress=False)
        stats_times.append(time.perf_counter() - started)
    distributed.all_reduce_statistics = original

    from neuroprune.torch.recover.finetune import finetune

    class Batches:  # the calibration batches as training data
        def train_batches(self, epoch):
            return data

        def loss(self, net, batch):
            return loss(net, batch)

    finetune_times = []
    for _ in range(repeats):
        torch.manual_seed(0)
        student = build_model("transformer")
        distributed.barrier()
        started = time.perf_counter()
        finetune(student, Batches(), epochs=1, progress=False)
        finetune_times.append(time.perf_counter() - started)

    torch.manual_seed(0)
    task = ClassificationTask(load_digits(), batch_size=64)
    mlp = build_model("mlp")
    config = PruneConfig(criterion="taylor", ratio=0.5, steps=2, reconstruct=True, finetune_epochs=1,
                         tolerance=1.0, progress=False, latency_runs=1)
    from neuroprune.torch.backend import TorchBackend

    recover_seconds = []
    recover = TorchBackend.recover

    def timed_recover(*args, **kwargs):
        started = time.perf_counter()
        result = recover(*args, **kwargs)
        recover_seconds.append(time.perf_counter() - started)
        return result

    TorchBackend.recover = timed_recover
    distributed.barrier()
    started = time.perf_counter()
    result = prune(mlp, task, config)
    prune_seconds = time.perf_counter() - started
    TorchBackend.recover = recover
    if distributed.is_writer():
        Path(out).write_text(json.dumps({
            "world_size": distributed.world_size(), "stats_s": min(stats_times), "reduce_s": min(reduce_seconds),
            "finetune_s": min(finetune_times),
            "prune_s": prune_seconds, "recover_s": sum(recover_seconds), "plan": result.plan.to_dict()["modules"]}))
    distributed.worst_exit_status(0)


def launch(ranks: int, batches: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--rdzv-backend=c10d",
                   "--rdzv-endpoint=localhost:0", __file__, "--worker", str(out), "--batches", str(batches),
                   "--repeats", str(repeats)]
        subprocess.run(command, check=True, env=env, cwd=ROOT, timeout=1800, capture_output=True)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--out", default="benchmarks/results/distributed.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.batches, args.repeats)
    rows = [launch(int(n), args.batches, args.repeats) for n in args.ranks.split(",")]
    base = rows[0]
    lines = ["# Many processes: statistics pass and full prune at 1 vs 2 processes", "",
             f"{os.cpu_count()} CPU cores, gloo, one thread per process; statistics pass: zoo transformer, "
             f"{args.batches} batches of 64, activations + gradients + Gram (best of {args.repeats}); full prune: zoo "
             "MLP on digits, taylor, 2 steps, reconstruction, 1 fine-tuning epoch per attempt; fine-tuning alone: zoo "
             f"transformer, 1 epoch over the {args.batches} batches (best of {args.repeats}).", "",
             "| processes | statistics pass (s) | of it the flat all-reduce (s) | speed-up | fine-tuning alone (s) "
             "| speed-up | full prune (s) | of it fine-tuning (s) | speed-up | same plan |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|"]
    for row in rows:
        lines.append(f"| {row['world_size']} | {row['stats_s']:.3f} | {row['reduce_s']:.4f} | "
                     f"{base['stats_s'] / row['stats_s']:.2f}x | {row['finetune_s']:.2f} | "
                     f"{base['finetune_s'] / row['finetune_s']:.2f}x | {row['prune_s']:.2f} | {row['recover_s']:.2f} | "
                     f"{base['prune_s'] / row['prune_s']:.2f}x | {'yes' if row['plan'] == base['plan'] else 'NO'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
