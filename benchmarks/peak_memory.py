"""Peak memory of a prune: a LLaMA-style decoder from ``lm_zoo``, one clean process per run.

Every run is a fresh subprocess (so its peak RSS, ``ru_maxrss``, belongs to that run alone) that
builds the model (random weights, seed 0, float32), a byte-level BPE tokenizer (2,048 tokens) and an
``LMTask`` on standard-library docstring sentences (blocks of 16 tokens, batch 4, 8 calibration
blocks, 8 validation and 4 test blocks, ``large``: 2, 2 and 1; latency timed at batch <= 2, 1
run), then calls
``neuroprune.prune`` once (``--steps 1``, no fine-tuning, tolerance 100 so the attempt is accepted,
unless a row says otherwise). The table gives the RSS right after building (model + data), the
peak during the whole run, and the peak in units of the model's own float32 size.

Trees: ``--before SRC`` (the code at the session start, a worktree kept untouched) and ``--after
SRC`` (this tree's ``src``), each run with ``PYTHONPATH=SRC``.

Sizes (``--sizes``): ``medium`` (hidden 1024, 24 layers, FFN 2752, 16 heads in 4 KV groups: 268 M
parameters, 1.0 GiB) is the default; ``half`` (hidden 2048, 24 layers, FFN 5504: 1.07 B, 4.0 GiB)
and ``large`` (48 layers: 2.1 B parameters, 7.9 GiB, a third of a 24 GiB machine) are opt-in
(minutes; never in CI). A prune that copies only what it must peaks near two models (the
caller's and the loop's working copy), so ``large`` needs ~17 GiB free.

Run:  .venv/bin/python benchmarks/peak_memory.py --before ../wt6-before/src [--sizes medium]
      .venv/bin/python benchmarks/peak_memory.py --sizes large --runs magnitude --nice 10   # 8 GiB model, after only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = {  # hidden, layers, heads, kv_heads, intermediate
    "small": (256, 4, 8, 4, 688),
    "medium": (1024, 24, 16, 4, 2752),
    "half": (2048, 24, 16, 4, 5504),
    "large": (2048, 48, 16, 4, 5504),
}
RUNS = {  # label -> PruneConfig options
    "magnitude": dict(criterion="magnitude", ratio=0.3),
    "wanda": dict(criterion="wanda", ratio=0.3),
    "magnitude, rolled back": dict(criterion="magnitude", ratio=0.3, tolerance=0.0, max_retries=0),
    "flap + reconstruct": dict(criterion="flap", ratio=0.3, reconstruct=True),
}


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(size: str, run: str) -> dict:
    """Build, prune, report (runs inside the subprocess)."""
    import torch

    from neuroprune import PruneConfig, prune
    from neuroprune.models.lm_zoo import tiny_llama, train_tokenizer
    from neuroprune.tasks.language_model import LMTask
    from neuroprune.tasks.text import stdlib_sentences

    torch.set_num_threads(int(os.environ.get("PEAK_MEMORY_THREADS", "2")))
    hidden, layers, heads, kv_heads, intermediate = SIZES[size]
    sentences = stdlib_sentences(3000)
    tokenizer = train_tokenizer(sentences, vocab_size=2048)

    class ShortLatencyTask(LMTask):
        def make_input(self, batch_size: int):  # latency at batch <= 2: the table is about memory
            return super().make_input(min(batch_size, 2))

    blocks = dict(calibration_samples=2, val_blocks=2, test_blocks=1) if size in ("half", "large") else dict(
        calibration_samples=8, val_blocks=8, test_blocks=4)  # the 2 B model: a short run on a shared CPU
    task = ShortLatencyTask(sentences, tokenizer, seq_len=16, batch_size=4, **blocks)
    started = time.perf_counter()
    model = tiny_llama(tokenizer.vocab_size, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                       intermediate=intermediate, max_positions=64)
    build_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    built = _rss_mib()
    options = {"steps": 1, "tolerance": 100.0, "progress": False, "latency_runs": 1, **RUNS[run]}
    started = time.perf_counter()
    result = prune(model, task, PruneConfig(**options))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    accepted = [s["accepted"] for s in result.report["steps"]]
    return {"size": size, "run": run, "params": params, "model_mib": params * 4 / 2**20, "built_mib": built,
            "peak_mib": peak, "prune_s": seconds, "build_s": build_s, "accepted": accepted,
            "params_after": sum(p.numel() for p in result.model.parameters())}


def run_one(src: str, size: str, run: str, nice: int) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, __file__, "--child", size, run]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"size": size, "run": run, "error": (done.stderr or done.stdout)[-2000:], "rc": done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| size | run | tree | params | model (GiB) | after build (GiB) | peak RSS (GiB) | peak / model | "
             "peak - build (GiB) | prune (s) | accepted |", "|" + " --- |" * 11]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['size']} | {row['run']} | {row['tree']} | failed (rc {row['rc']}) |||||||")
            continue
        gib = 1024
        lines.append(f"| {row['size']} | {row['run']} | {row['tree']} | {row['params'] / 1e6:.0f} M | "
                     f"{row['model_mib'] / gib:.2f} | {row['built_mib'] / gib:.2f} | {row['peak_mib'] / gib:.2f} | "
                     f"{row['peak_mib'] / row['model_mib']:.2f} | {(row['peak_mib'] - row['built_mib']) / gib:.2f} | "
                     f"{row['prune_s']:.1f} | {row['accepted']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "RUN"), help=argparse.SUPPRESS)
    parser.add_argument("--before", help="src folder of the code before (optional)")
    parser.add_argument("--after", default=str(Path(__file__).resolve().parents[1] / "src"))
    parser.add_argument("--sizes", nargs="+", default=["medium"], choices=sorted(SIZES))
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--nice", type=int, default=0, help="run each child under nice -n NICE (0: not niced)")
    parser.add_argument("--quick", action="store_true", help="the small model, magnitude only (smoke run)")
    parser.add_argument("--out", default=None, help="markdown file (default: benchmarks/results/peak_memory.md)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    if args.quick:
        args.sizes, args.runs = ["small"], ["magnitude"]
    trees = ([("before", args.before)] if args.before else []) + [("after", args.after)]
    rows = []
    for size in args.sizes:
        for run in args.runs:
            for tree, src in trees:
                row = {**run_one(src, size, run, args.nice), "tree": tree}
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = Path(args.out or Path(__file__).parent / "results" / "peak_memory.md")
    header = (f"# Peak memory of a prune (LLaMA-style decoder, float32, random weights)\n\n"
              f"One subprocess per run; peak = ru_maxrss. {platform.machine()}, {os.cpu_count()} cores, "
              f"torch threads {os.environ.get('PEAK_MEMORY_THREADS', '2')}, shared machine (times vary with load).\n"
              f"Reproduce: `.venv/bin/python benchmarks/peak_memory.py {' '.join(sys.argv[1:])}`\n\n")
    out.write_text(header + table(rows) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
