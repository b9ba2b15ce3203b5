"""Export latency: pruned zoo models in PyTorch and as ONNX in onnxruntime, dense vs. pruned (CPU).

For each zoo model (``mlp``, ``lenet5``, ``resnet18`` at 32x32, ``transformer``; sized for digits
as the CLI does), built with seed 0:

1. prune 50 % with the magnitude criterion (``neuroprune.prune``, ``tolerance=1.0``, one step);
2. export the dense and the pruned model with ``neuroprune.torch.export.export_onnx`` (dynamic batch
   axis, checked against PyTorch with onnxruntime at two batch sizes by the exporter itself);
3. time, at batch 1 and 32, PyTorch dense, PyTorch pruned, onnxruntime dense and onnxruntime
   pruned round-robin in one loop (one call of each per round, the order rotated every round,
   after warm-up rounds), median of ``--runs`` calls;
4. check the deployment path: save the pruned model (``PruneResult.save``) and export the folder
   with the CLI, ``neuroprune export OUT_DIR --from FOLDER --model zoo:NAME --format onnx``, and
   compare that file's outputs with the one from step 2.

The models are not trained: latency does not depend on the weights' values. PyTorch runs in eval
mode under ``torch.inference_mode()`` with ``torch.set_num_threads(2)``; onnxruntime uses the
CPUExecutionProvider with ``intra_op_num_threads=2``, ``inter_op_num_threads=1``, all graph
optimisations, and (by default) no spin-waiting, the counterpart of ``OMP_WAIT_POLICY=PASSIVE``
with which this script re-executes itself (see ``cnn_speed.py``: spinning threads swamp timings
on a shared machine).

    .venv/bin/python benchmarks/export_latency.py            # about 1.5 min on 2 busy cores
    .venv/bin/python benchmarks/export_latency.py --quick    # 30 calls, mlp/lenet5/transformer, ~20 s
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from omp_policy import POLICIES, reexec_with_omp_policy

import neuroprune as npr
from neuroprune.data import load_digits
from neuroprune.torch.export import export_onnx
from neuroprune.torch.metrics import count_flops, count_parameters
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.models.zoo import build_model, zoo_entry

MODELS = ("mlp", "lenet5", "resnet18", "transformer")
RATIO = 0.5
BATCHES = (1, 32)
RESULTS = Path(__file__).resolve().parent / "results"
COMMAND = ".venv/bin/python benchmarks/export_latency.py"
VARIANTS = ("PyTorch dense", "PyTorch pruned", "ORT dense", "ORT pruned")


def progress(message: str) -> None:
    print(f"[export_latency {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ort_session(path: Path, threads: int, spinning: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def round_robin_ms(calls: dict[str, callable], runs: int, warmup: int) -> dict[str, dict[str, float]]:
    """Median (and quartiles) in ms of ``runs`` calls of each callable, interleaved, order rotated."""
    names = list(calls)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(warmup):
        for n in names:
            calls[n]()
    for r in range(runs):
        shift = r % len(names)
        for n in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[n]()
            times[n].append(time.perf_counter() - start)
    out = {}
    for n, t in times.items():
        q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0]] * 3
        out[n] = {"median": statistics.median(t) * 1000, "p25": q[0] * 1000, "p75": q[2] * 1000}
    return out


def macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of one forward pass (``count_flops`` / 2) with ``nn.MultiheadAttention``'s fused fast path off:
    in eval mode without gradients the fast path runs ``aten::_native_multi_head_attention``, which
    ``torch.utils.flop_counter`` does not count (``count_flops`` switches it off itself since the
    commit "FLOPs of nn.MultiheadAttention are counted with its fused fast path switched off"; this
    keeps the numbers right with older neuroprune versions)."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return count_flops(model, x) // 2
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def cli_export(result, name: str, work: Path, reference: Path, x: np.ndarray, threads: int) -> dict:
    """Save the pruned model and export it with the CLI; compare the file with ``reference``."""
    folder, out_dir = work / f"{name}-pruned", work / f"{name}-cli"
    result.save(folder, overwrite=True, html=False)
    exe = Path(sys.executable).with_name("neuroprune")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "neuroprune.cli.main"]),
           "export", str(out_dir), "--from", str(folder), "--model", f"zoo:{name}", "--format", "onnx", "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    info = {"returncode": proc.returncode, "seconds": seconds,
            "command": "neuroprune export OUT_DIR --from FOLDER --model zoo:%s --format onnx" % name,
            "output": (proc.stdout + proc.stderr).strip().splitlines()[-3:]}
    path = out_dir / "model.onnx"
    if proc.returncode == 0 and path.exists():
        a = ort_session(path, threads, False).run(None, {"input": x})[0]
        b = ort_session(reference, threads, False).run(None, {"input": x})[0]
        info["max_abs_diff_vs_export_onnx"] = float(np.abs(a - b).max())
        info["size_bytes"] = path.stat().st_size
    return info


def bench_model(name: str, runs: int, warmup: int, threads: int, spinning: bool, work: Path, cli: bool) -> dict:
    entry = zoo_entry(name)
    data = load_digits(seed=0, layout=entry.layout, image_size=entry.image_size)
    task = ClassificationTask(data, calibration_samples=64, seed=0)
    torch.manual_seed(0)
    dense = build_model(name).eval()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = npr.prune(dense, task, npr.PruneConfig(criterion="magnitude", ratio=RATIO, tolerance=1.0,
                                                        progress=False, latency_runs=1))
    prune_seconds = time.perf_counter() - start
    pruned = result.model.eval()
    example = data.x_test[:2]
    row: dict = {"model": name, "description": entry.description, "prune_seconds": prune_seconds,
                 "layers": result.report["layers"], "input_shape": list(example.shape[1:])}
    files = {}
    for label, model in (("dense", dense), ("pruned", pruned)):
        path = work / f"{name}-{label}.onnx"
        start = time.perf_counter()
        check = export_onnx(model, example, path)
        row[label] = {"params": count_parameters(model), "macs": macs(model, data.x_test[:1]),
                      "onnx_bytes": check.size_bytes, "export_seconds": time.perf_counter() - start,
                      "export_max_abs_diff": check.max_abs_diff, "export_batches": list(check.batch_sizes),
                      "exporter": check.exporter}
        files[label] = path
    sessions = {label: ort_session(path, threads, spinning) for label, path in files.items()}
    row["latency_ms"] = {}
    row["ort_vs_torch_max_abs_diff"] = {}
    for batch in BATCHES:
        x = data.x_test[:batch].contiguous()
        xn = x.numpy().astype(np.float32, copy=False)
        with torch.inference_mode():
            for label, model in (("dense", dense), ("pruned", pruned)):
                diff = np.abs(sessions[label].run(None, {"input": xn})[0] - model(x).numpy()).max()
                row["ort_vs_torch_max_abs_diff"][f"{label} batch {batch}"] = float(diff)
            feed = {"input": xn}
            calls = {
                "PyTorch dense": lambda x=x: dense(x),
                "PyTorch pruned": lambda x=x: pruned(x),
                "ORT dense": lambda feed=feed: sessions["dense"].run(None, feed),
                "ORT pruned": lambda feed=feed: sessions["pruned"].run(None, feed),
            }
            row["latency_ms"][str(batch)] = round_robin_ms(calls, runs, warmup)
    if cli:
        row["cli"] = cli_export(result, name, work, files["pruned"], data.x_test[:4].numpy(), threads)
    return row


def _si(n: float) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"


def widths_text(layers: list[dict]) -> str:
    parts = [f"{layer['name']} {layer['width_before']}->{layer['width_after']}" for layer in layers]
    return ", ".join(parts[:3]) + (f", ... ({len(parts)} groups)" if len(parts) > 3 else "")


def render(rows: list[dict], args, runs: int, warmup: int, threads: int, elapsed: float, command: str) -> str:
    import onnx
    import onnxruntime

    how = (f"median of {runs} calls per variant after {warmup} warm-up rounds, the four variants timed "
           f"round-robin in one loop (order rotated every round); PyTorch: eval, `torch.inference_mode()`, "
           f"`torch.set_num_threads({threads})`, `OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(not set)')}`; "
           f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider, `intra_op_num_threads={threads}`, "
           f"`inter_op_num_threads=1`, `ORT_ENABLE_ALL`, spin-waiting {'on' if args.ort_spinning else 'off'}")
    lines = [
        "# Export latency: PyTorch vs. onnxruntime, dense vs. pruned (CPU)",
        "",
        f"- Zoo models sized for digits (input shapes below), seed 0, untrained (latency does not depend on the "
        f"weights). Pruned with `neuroprune.prune(model, task, PruneConfig(criterion=\"magnitude\", ratio={RATIO}, "
        "tolerance=1.0))`, exported with `neuroprune.torch.export.export_onnx(model, x_test[:2], path)` (classic "
        "TorchScript-based exporter, dynamic batch axis; the exporter checks the file with onnxruntime at batch 2 "
        "and 3).",
        f"- Latency: {how}. Inputs: the first 1 / 32 digits test samples.",
        f"- {os.cpu_count()} logical CPUs, shared with other jobs (noisy: absolute times drift by up to 2x between "
        f"runs; the round-robin loop exposes all variants to the same load). torch {torch.__version__}, onnx "
        f"{onnx.__version__}, Python {platform.python_version()}; wall time {elapsed:.0f} s.",
        f"- Reproduce: `{command}`",
        "",
        "## Latency (ms, median)",
        "",
        "| model | batch | MACs dense -> pruned | PyTorch dense | PyTorch pruned | ORT dense | ORT pruned | "
        "pruning speed-up PyTorch | pruning speed-up ORT | ORT pruned vs PyTorch pruned | ORT pruned vs PyTorch dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            continue
        d, p = row["dense"], row["pruned"]
        for batch in BATCHES:
            lat = {k: v["median"] for k, v in row["latency_ms"][str(batch)].items()}
            lines.append(
                f"| {row['model']} | {batch} | {_si(d['macs'])} -> {_si(p['macs'])} "
                f"({d['macs'] / p['macs']:.2f}x fewer) | {lat['PyTorch dense']:.3f} | {lat['PyTorch pruned']:.3f} | "
                f"{lat['ORT dense']:.3f} | {lat['ORT pruned']:.3f} | "
                f"{lat['PyTorch dense'] / lat['PyTorch pruned']:.2f}x | {lat['ORT dense'] / lat['ORT pruned']:.2f}x | "
                f"{lat['PyTorch pruned'] / lat['ORT pruned']:.2f}x | {lat['PyTorch dense'] / lat['ORT pruned']:.2f}x |")
    lines += [
        "",
        "Speed-ups are ratios of medians, slower / faster: > 1 means the pruned model (pruning speed-up columns) or "
        "the onnxruntime file (ORT vs PyTorch columns) is faster. Interquartile ranges are in "
        "`export_latency.json`. MACs: one sample, `neuroprune.torch.metrics.count_flops` / 2, counted with "
        "`nn.MultiheadAttention`'s fused fast path switched off (`torch.backends.mha.set_fastpath_enabled(False)`), "
        "since `torch.utils.flop_counter` does not see the fused kernel (current `count_flops` does this itself); "
        "the timed PyTorch dense transformer does use the fast path, as users get it.",
        "",
        "## Models and files",
        "",
        "| model | input | groups pruned | params dense -> pruned | ONNX bytes dense -> pruned | prune s | "
        "export s (dense / pruned) | export check max abs diff (dense / pruned) | ORT vs PyTorch max abs diff "
        "(b1, b32) | CLI `neuroprune export` |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | failed: {row['error']} |||||||||")
            continue
        d, p = row["dense"], row["pruned"]
        cli = row.get("cli")
        if cli is None:
            cli_text = "not run"
        elif cli["returncode"] == 0 and "max_abs_diff_vs_export_onnx" in cli:
            cli_text = (f"ok, {cli['size_bytes']} bytes, {cli['seconds']:.1f} s, max abs diff to the "
                        f"`export_onnx` file {cli['max_abs_diff_vs_export_onnx']:.2g}")
        else:
            cli_text = f"FAILED (exit {cli['returncode']}): {' / '.join(cli['output'])}"
        diffs = row["ort_vs_torch_max_abs_diff"]
        lines.append(
            f"| {row['model']} | {'x'.join(map(str, row['input_shape']))} | {widths_text(row['layers'])} | "
            f"{d['params']} -> {p['params']} ({d['params'] / p['params']:.2f}x) | {d['onnx_bytes']} -> "
            f"{p['onnx_bytes']} ({d['onnx_bytes'] / p['onnx_bytes']:.2f}x) | {row['prune_seconds']:.1f} | "
            f"{d['export_seconds']:.2f} / {p['export_seconds']:.2f} | {d['export_max_abs_diff']:.2g} / "
            f"{p['export_max_abs_diff']:.2g} | "
            f"{max(diffs[f'dense batch {b}'] for b in BATCHES):.2g} / {max(diffs[f'pruned batch {b}'] for b in BATCHES):.2g} "
            f"| {cli_text} |")
    lines += [
        "",
        "`prune s` is the whole `neuroprune.prune` call, including its before/after measurements and test-set "
        "evaluations. The CLI column exported the saved pruned folder with "
        "`neuroprune export OUT_DIR --from FOLDER --model zoo:NAME --format onnx --overwrite` in a subprocess and "
        "ran both files in onnxruntime on 4 test samples.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 calls, 5 warm-up rounds, no resnet18")
    parser.add_argument("--models", default=None, help=f"comma-separated zoo models (default {','.join(MODELS)})")
    parser.add_argument("--runs", type=int, default=None, help="timed calls per variant (default 50; --quick 30)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads and onnxruntime intra-op threads")
    parser.add_argument("--ort-spinning", action="store_true",
                        help="let onnxruntime's threads spin-wait (its default; off here, like OMP_WAIT_POLICY=PASSIVE)")
    parser.add_argument("--omp-wait-policy", choices=POLICIES, default="passive")
    parser.add_argument("--no-cli", action="store_true", help="skip the `neuroprune export` CLI check")
    parser.add_argument("--keep-onnx", default=None, help="folder to keep the ONNX files in (default: a temp dir)")
    parser.add_argument("--out", default=str(RESULTS / "export_latency.md"), help="Markdown output (.json next to it)")
    args = parser.parse_args(argv)
    reexec_with_omp_policy(args.omp_wait_policy)
    torch.set_num_threads(args.threads)
    runs = args.runs or (30 if args.quick else 50)
    if runs < 30:
        parser.error("--runs must be >= 30")
    warmup = 5 if args.quick else 10
    names = args.models.split(",") if args.models else [m for m in MODELS if not (args.quick and m == "resnet18")]
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep_onnx) if args.keep_onnx else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            progress(f"{name}: prune, export, time ({runs} calls x 4 variants x {len(BATCHES)} batch sizes)")
            try:
                rows.append(bench_model(name, runs, warmup, args.threads, args.ort_spinning, work, not args.no_cli))
            except Exception as error:  # report it and go on with the other models
                rows.append({"model": name, "error": f"{type(error).__name__}: {error}"})
                progress(f"{name} FAILED: {type(error).__name__}: {error}")
    elapsed = time.perf_counter() - started
    command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    text = render(rows, args, runs, warmup, args.threads, elapsed, command)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"threads": args.threads, "runs": runs, "warmup": warmup,
                                                    "ort_spinning": args.ort_spinning, "rows": rows}, indent=1,
                                                   default=str))
    print(text)
    progress(f"wrote {out} and {out.with_suffix('.json').name} ({elapsed:.0f} s)")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
