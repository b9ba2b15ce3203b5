"""CNN speed benchmark: neuroprune vs. Torch-Pruning on ResNet-50/18/56 and MobileNetV2 (CPU).

One run, every tool measured in the same process with interleaved measurements (A, B, A, B ...;
the order is swapped every repetition) because the machine is noisy:

1. ResNet-50 (ImageNet style, 1x3x224x224), 50 % of the channels of every group (local):
   wall time of neuroprune's discovery + magnitude scoring + selection + surgery, stage by
   stage, vs. Torch-Pruning's ``DependencyGraph.build_dependency`` + ``MetaPruner`` init +
   ``step()``; each repetition on a freshly built model, after one untimed warm-up run of each
   tool; median of the repetitions. Peak-RSS increase per stage (Linux ``/proc``), MACs,
   parameters and batch-1 latency of both pruned models.
2. Latency speed-up vs. MAC reduction at 50 % of the channels (ResNet-18 CIFAR; also ResNet-56
   and MobileNetV2 on 32x32 unless ``--quick``) for neuroprune (``round_to`` 1 and 8) and
   Torch-Pruning (``round_to`` None and 8), batch 1 and 32, plus a diagnosis of what limits the
   speed-up (channels_last, BN folded into conv, 1 thread, the other OMP wait policy).
3. Overhead of ``collect_statistics`` (activations + gradients; activations only) over a plain
   forward + backward (forward only) loop on ResNet-18 CIFAR, 8 batches of 32.

The script re-executes itself with ``OMP_WAIT_POLICY=PASSIVE`` (``--omp-wait-policy``): on a
shared, oversubscribed machine the default spinning OpenMP threads make 2-thread forwards up to
40x slower than 1-thread ones (ResNet-18 batch 1: ~1.2 s instead of ~30 ms), which swamps every
comparison; section 2's diagnosis measures the other policy in a child process.

    .venv/bin/python benchmarks/cnn_speed.py            # about 4-7 minutes on 2 busy cores
    .venv/bin/python benchmarks/cnn_speed.py --quick    # about 2 minutes
    .venv/bin/python benchmarks/cnn_speed.py --threads 1 --sections 2,3
"""

from __future__ import annotations

import argparse
import copy
import gc
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

import neuroprune as npr
from neuroprune.torch.graph.discover import discover
from neuroprune.torch.metrics import count_flops, count_parameters
from neuroprune.core.criteria import ScoringInput, score
from neuroprune.core.selection import counts_for_ratio, select_units
from neuroprune.torch.stats import collect_statistics
from neuroprune.torch.surgery import apply_keep
from neuroprune.models.zoo import build_model

RATIO = 0.5

# Earlier Torch-Pruning measurements on this machine (ResNet-18 CIFAR, 50 %), for context only.
TP_REFERENCE = ("3.98x fewer MACs gave 2.3x-2.6x at batch 1 and 3.2x-3.5x at batch 32 "
                "(speed-up / MAC reduction 0.57-0.65 and 0.80-0.88)")

# name, build kwargs, input shape (batch 1), name of the classifier layer TP must ignore
MODELS = {
    "resnet50": ({}, (3, 224, 224), "fc"),
    "resnet18": ({"in_channels": 3, "num_classes": 10}, (3, 32, 32), "fc"),
    "resnet56": ({"in_channels": 3, "num_classes": 10}, (3, 32, 32), "fc"),
    "mobilenetv2": ({"in_channels": 3, "num_classes": 10}, (3, 32, 32), "classifier"),
}


# ----------------------------------------------------------------------------- helpers


def fresh(name: str, seed: int = 0) -> nn.Module:
    kwargs, _, _ = MODELS[name]
    torch.manual_seed(seed)
    return build_model(name, **kwargs).eval()


def example(name: str, batch: int = 1) -> torch.Tensor:
    _, shape, _ = MODELS[name]
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))


def macs(model: nn.Module, x: torch.Tensor) -> int:
    return count_flops(model, x) // 2


def _proc_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
        return int(match.group(1)) if match else None
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


PEAK_RSS_OK = _proc_kib("VmHWM") is not None and _reset_peak_rss()


def _load_malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``: hands freed heap memory back to the OS so that the RSS at the
    start of a stage is not inflated by memory an earlier stage freed (no-op elsewhere)."""
    try:
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
        return lambda: trim(0) and None
    except (OSError, AttributeError):
        return lambda: None


_malloc_trim = _load_malloc_trim()


class Stages:
    """Times named stages and, where Linux allows, the peak-RSS increase during each."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_mib: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        if PEAK_RSS_OK:
            _malloc_trim()
            _reset_peak_rss()
            before = _proc_kib("VmRSS")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        if PEAK_RSS_OK:
            self.peak_mib[name] = max(0, _proc_kib("VmHWM") - before) / 1024


def progress(message: str) -> None:
    print(f"[cnn_speed {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def interleaved_latency_ms(models: dict[str, nn.Module], x: torch.Tensor, runs: int, warmup: int,
                           prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
                           minima: dict[str, float] | None = None) -> dict[str, float]:
    """Median forward time (ms) per model; one forward of each model per round, order rotated.

    ``minima``, if given, receives the fastest forward (ms) per model."""
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    inputs = {n: prepare(x) if prepare else x for n in names}
    with torch.inference_mode():
        for m in models.values():
            m.eval()
        for _ in range(warmup):
            for n in names:
                models[n](inputs[n])
        for r in range(runs):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                start = time.perf_counter()
                models[n](inputs[n])
                times[n].append(time.perf_counter() - start)
    if minima is not None:
        minima.update({n: min(t) * 1000 for n, t in times.items()})
    return {n: median(t) * 1000 for n, t in times.items()}


# ----------------------------------------------------------------------------- pruning


def neuroprune_prune(model: nn.Module, x: torch.Tensor, round_to: int = 1,
                     stages: Stages | None = None) -> nn.Module:
    stages = stages or Stages()
    with stages("discovery"):
        graph = discover(model, x)
    with stages("scoring"):
        scores = score(ScoringInput(model, graph, None), "magnitude")
    with stages("selection"):
        counts = counts_for_ratio(graph, scores, {}, RATIO, scope="local", round_to=round_to)
        keep = graph.keep_indices(select_units(graph, scores, counts))
    with stages("surgery"):
        pruned = apply_keep(model, keep)
    return pruned


def tp_prune(model: nn.Module, x: torch.Tensor, classifier: str, round_to: int | None = None,
             stages: Stages | None = None, separate_graph: bool = False) -> nn.Module:
    import torch_pruning as tp

    stages = stages or Stages()
    if separate_graph:  # MetaPruner builds its own graph in __init__; this is for comparison only
        with stages("graph"):
            tp.DependencyGraph().build_dependency(model, example_inputs=x)
    with stages("init"):
        pruner = tp.pruner.MetaPruner(model, x, tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=RATIO, round_to=round_to,
                                      ignored_layers=[model.get_submodule(classifier)])
    with stages("step"):
        pruner.step()
    return model


def conv_widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


# ----------------------------------------------------------------------------- section 1


def section_resnet50(reps: int, runs: int, out: io.StringIO) -> None:
    name = "resnet50"
    classifier = MODELS[name][2]
    x = example(name)
    # warm-up: one untimed run of each tool (first-call oneDNN / FX / import costs)
    neuroprune_prune(fresh(name), x)
    tp_prune(fresh(name), x, classifier, separate_graph=True)

    np_runs: list[Stages] = []
    tp_runs: list[Stages] = []
    copy_s: list[float] = []
    for rep in range(reps):
        order = ["np", "tp"] if rep % 2 == 0 else ["tp", "np"]
        for tool in order:
            model = fresh(name, seed=rep)
            gc.collect()
            stages = Stages()
            if tool == "np":
                neuroprune_prune(model, x, stages=stages)
                np_runs.append(stages)
                start = time.perf_counter()
                copy.deepcopy(model)
                copy_s.append(time.perf_counter() - start)
            else:
                tp_prune(model, x, classifier, stages=stages, separate_graph=True)
                tp_runs.append(stages)
            del model
            gc.collect()

    def med(runs_: list[Stages], stage: str, attr: str = "seconds") -> float:
        return median([getattr(s, attr)[stage] for s in runs_])

    def mem(runs_: list[Stages], stage: str) -> str:
        return f"{med(runs_, stage, 'peak_mib'):.0f}" if PEAK_RSS_OK else "n/a"

    np_total = median([sum(s.seconds.values()) for s in np_runs])
    tp_total = median([s.seconds["init"] + s.seconds["step"] for s in tp_runs])
    rows = [
        ["neuroprune", "discovery (FX trace + dependency groups)", fmt_ms(med(np_runs, "discovery")), mem(np_runs, "discovery")],
        ["neuroprune", "scoring (magnitude)", fmt_ms(med(np_runs, "scoring")), mem(np_runs, "scoring")],
        ["neuroprune", "selection (counts + select + keep indices)", fmt_ms(med(np_runs, "selection")), mem(np_runs, "selection")],
        ["neuroprune", f"surgery (returns a pruned copy; `copy.deepcopy` of the dense model alone: {fmt_ms(median(copy_s))} ms)",
         fmt_ms(med(np_runs, "surgery")), mem(np_runs, "surgery")],
        ["neuroprune", "**total**", f"**{fmt_ms(np_total)}**", ""],
        ["Torch-Pruning", "`DependencyGraph().build_dependency` (standalone, not part of total)", fmt_ms(med(tp_runs, "graph")), mem(tp_runs, "graph")],
        ["Torch-Pruning", "`MetaPruner(...)` init (builds its own dependency graph)", fmt_ms(med(tp_runs, "init")), mem(tp_runs, "init")],
        ["Torch-Pruning", "`pruner.step()` (in place)", fmt_ms(med(tp_runs, "step")), mem(tp_runs, "step")],
        ["Torch-Pruning", "**total (init + step)**", f"**{fmt_ms(tp_total)}**", ""],
    ]
    out.write(f"## 1. ResNet-50 (1x3x224x224), {RATIO:.0%} of the channels of every group (local)\n\n")
    out.write(f"Median of {reps} repetitions, each on a freshly built model, after one untimed warm-up run "
              "of each tool; neuroprune and Torch-Pruning alternate (order swapped every repetition). "
              "Peak memory: increase of the process's peak RSS over its RSS at the start of the stage "
              "(`/proc/self/status` VmHWM, reset through `/proc/self/clear_refs`, after glibc `malloc_trim(0)`), median.\n\n")
    out.write(table(["tool", "stage", "wall ms", "peak RSS +MiB"], rows) + "\n\n")
    faster = (f"neuroprune {tp_total / np_total:.2f}x faster" if np_total <= tp_total
              else f"Torch-Pruning {np_total / tp_total:.2f}x faster")
    out.write(f"Speed: neuroprune total / Torch-Pruning total = {np_total / tp_total:.2f} ({faster}).\n"
              "Note: Torch-Pruning's `step()` prunes the model in place, while neuroprune's `apply_keep` "
              "returns a pruned copy, so its surgery time includes a `copy.deepcopy` of the dense model. "
              "`MetaPruner` builds its dependency graph inside `__init__`, so the standalone "
              "`build_dependency` row is shown for comparison with neuroprune's discovery only.\n\n")

    dense = fresh(name)
    np_model = neuroprune_prune(fresh(name), x)
    tp_model = tp_prune(fresh(name), x, classifier)
    models = {"dense": dense, "neuroprune": np_model, "Torch-Pruning": tp_model}
    lat = interleaved_latency_ms(models, x, runs=runs, warmup=3)
    dense_macs = macs(dense, x)
    rows = []
    for label, m in models.items():
        mm = macs(m, x)
        rows.append([label, f"{mm / 1e6:.0f}", f"{dense_macs / mm:.2f}x", f"{count_parameters(m) / 1e6:.2f}",
                     f"{lat[label]:.1f}", f"{lat['dense'] / lat[label]:.2f}x"])
    out.write(table(["model", "MMACs", "MAC reduction", "params (M)", "batch-1 latency ms",
                     "speed-up"], rows) + "\n\n")
    out.write(f"Latency: median of {runs} interleaved forwards after 3 warm-up forwards, "
              "eval + `torch.inference_mode()`.\n\n")


# ----------------------------------------------------------------------------- section 2


def arch(model: nn.Module) -> tuple:
    """The layer widths that fix a pruned model's cost (conv/linear in/out sizes and groups)."""
    return tuple((m.in_channels, m.out_channels, m.groups) if isinstance(m, nn.Conv2d)
                 else (m.in_features, m.out_features)
                 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def pruned_variants(name: str) -> dict[str, nn.Module]:
    classifier = MODELS[name][2]
    x = example(name)
    return {
        "dense": fresh(name),
        "neuroprune round_to=1": neuroprune_prune(fresh(name), x, round_to=1),
        "neuroprune round_to=8": neuroprune_prune(fresh(name), x, round_to=8),
        "Torch-Pruning": tp_prune(fresh(name), x, classifier, round_to=None),
        "Torch-Pruning round_to=8": tp_prune(fresh(name), x, classifier, round_to=8),
    }


def section_speedup(names: list[str], runs: int, out: io.StringIO) -> dict[str, float]:
    out.write(f"## 2. Latency speed-up vs. MAC reduction, {RATIO:.0%} of the channels (local)\n\n")
    out.write(f"Median of {runs} interleaved forwards (one forward of each model per round, order "
              "rotated) after 5 warm-up forwards each; eval + `torch.inference_mode()`; "
              "ratio = latency speed-up / MAC reduction (1.0 = the speed-up the MACs promise); the last "
              "column uses each model's fastest batch-32 forward instead of the median (least disturbed "
              "by other processes). "
              "A `round_to=8` variant whose layer widths equal those of its `round_to=1` variant is "
              "the same network and is not timed again. neuroprune and Torch-Pruning rows with the "
              "same widths are timed separately although they are the same network: the gap between "
              "them is a measure of the noise.\n\n")
    found: dict[str, float] = {}
    for name in names:
        progress(f"section 2: {name}")
        variants = pruned_variants(name)
        aliases = {}
        for label in ("neuroprune round_to=8", "Torch-Pruning round_to=8"):
            base = label.replace(" round_to=8", "" if label.startswith("Torch") else " round_to=1")
            if arch(variants[label]) == arch(variants[base]):
                aliases[label] = base
        timed = {k: v for k, v in variants.items() if k not in aliases}
        x1 = example(name, 1)
        dense_macs = macs(variants["dense"], x1)
        fastest: dict[int, dict[str, float]] = {1: {}, 32: {}}
        lat = {b: interleaved_latency_ms(timed, example(name, b), runs=runs, warmup=5, minima=fastest[b])
               for b in (1, 32)}
        same_np_tp = arch(variants["neuroprune round_to=1"]) == arch(variants["Torch-Pruning"])
        rows = []
        for label, m in variants.items():
            source = aliases.get(label, label)
            reduction = dense_macs / macs(m, x1)
            row = [label if label not in aliases else f"{label} (= {source}: same widths)",
                   f"{macs(m, x1) / 1e6:.1f}", f"{reduction:.2f}x", f"{count_parameters(m) / 1e6:.3f}"]
            for b in (1, 32):
                speedup = lat[b]["dense"] / lat[b][source]
                row += [f"{lat[b][source]:.2f}", f"{speedup:.2f}x", f"{speedup / reduction:.2f}"]
                found[f"{name}/{label}/b{b}"] = speedup / reduction
            row.append(f"{fastest[32]['dense'] / fastest[32][source] / reduction:.2f}")
            rows.append(row)
        widths = sorted(set(conv_widths(variants["neuroprune round_to=1"])))
        out.write(f"### {name} (1x{'x'.join(map(str, MODELS[name][1]))}); neuroprune round_to=1 conv widths: "
                  f"{widths}; neuroprune and Torch-Pruning (round_to=1/None) give "
                  f"{'the same' if same_np_tp else 'different'} widths\n\n")
        out.write(table(["model", "MMACs", "MAC reduction", "params (M)",
                         "b1 ms", "b1 speed-up", "b1 ratio", "b32 ms", "b32 speed-up", "b32 ratio",
                         "b32 ratio of fastest runs"], rows)
                  + "\n\n")
    return found


def probe(runs: int) -> dict[str, float]:
    """Dense vs. pruned ResNet-18 latency (ms) at batch 1 and 32 under this process's settings."""
    x1 = example("resnet18")
    models = {"dense": fresh("resnet18"), "pruned": neuroprune_prune(fresh("resnet18"), x1)}
    result = {}
    for b in (1, 32):
        lat = interleaved_latency_ms(models, example("resnet18", b), runs=runs, warmup=2)
        result.update({f"{k}/b{b}": v for k, v in lat.items()})
    return result


def probe_other_wait_policy(threads: int) -> tuple[str, dict[str, float] | None]:
    """Run :func:`probe` in a child process with the other ``OMP_WAIT_POLICY``."""
    current = os.environ.get("OMP_WAIT_POLICY", "").lower()
    other = "active" if current == "passive" else "passive"
    command = [sys.executable, os.path.abspath(__file__), "--sections", "probe", "--threads", str(threads),
               "--omp-wait-policy", other]
    env = {k: v for k, v in os.environ.items() if k != "_CNN_SPEED_REEXEC"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=True)
        return other, json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return other, None


def section_diagnosis(runs: int, threads: int, out: io.StringIO) -> dict[str, float]:
    name = "resnet18"
    progress("section 2: diagnosis")
    x1 = example(name)
    dense = fresh(name)
    pruned = neuroprune_prune(fresh(name), x1)
    reduction = macs(dense, x1) / macs(pruned, x1)
    out.write(f"### What limits the speed-up ({name}, neuroprune round_to=1, {reduction:.2f}x fewer MACs)\n\n")
    out.write(f"Dense vs. pruned again under other settings (median of {runs} interleaved forwards); "
              f"the {threads}-thread contiguous case is the table above.\n\n")
    from torch.fx.experimental.optimization import fuse

    channels_last = lambda t: t.contiguous(memory_format=torch.channels_last)
    settings = [
        (f"{threads} threads, channels_last", threads,
         lambda m: m.to(memory_format=torch.channels_last), channels_last),
        (f"{threads} threads, BN folded into conv (`torch.fx.experimental.optimization.fuse`)", threads,
         fuse, None),
        ("1 thread, contiguous", 1, lambda m: m, None),
        ("1 thread, BN folded into conv", 1, fuse, None),
    ]
    rows = []
    found = {}
    for label, n_threads, transform, prepare in settings:
        torch.set_num_threads(n_threads)
        models = {"dense": transform(copy.deepcopy(dense)), "pruned": transform(copy.deepcopy(pruned))}
        row = [label]
        for b in (1, 32):
            lat = interleaved_latency_ms(models, example(name, b), runs=runs, warmup=3, prepare=prepare)
            speedup = lat["dense"] / lat["pruned"]
            found[f"{label}/b{b}"] = speedup / reduction
            row += [f"{lat['dense']:.2f}", f"{lat['pruned']:.2f}", f"{speedup:.2f}x", f"{speedup / reduction:.2f}"]
        rows.append(row)
    torch.set_num_threads(threads)
    other, child = probe_other_wait_policy(threads)
    if child is not None:
        row = [f"{threads} threads, contiguous, `OMP_WAIT_POLICY={other.upper()}` (child process, 5 runs)"]
        for b in (1, 32):
            speedup = child[f"dense/b{b}"] / child[f"pruned/b{b}"]
            found[f"{threads} threads, OMP_WAIT_POLICY={other.upper()}/b{b}"] = speedup / reduction
            row += [f"{child[f'dense/b{b}']:.2f}", f"{child[f'pruned/b{b}']:.2f}", f"{speedup:.2f}x",
                    f"{speedup / reduction:.2f}"]
        rows.append(row)
    out.write(table(["setting", "b1 dense ms", "b1 pruned ms", "b1 speed-up", "b1 ratio",
                     "b32 dense ms", "b32 pruned ms", "b32 speed-up", "b32 ratio"], rows) + "\n\n")
    return found


@contextmanager
def _instrumented_recording(seconds: dict[str, float]):
    """Time neuroprune's own recording code inside ``collect_statistics`` (private helpers of
    ``neuroprune.torch.stats``; skipped silently if they were renamed)."""
    import neuroprune.torch.stats as stats_module

    patched = []
    observer = getattr(stats_module, "_ActivationObserver", None)
    targets = []
    if observer is not None and hasattr(observer, "_record"):
        targets.append((observer, "_record", "activation recording"))
    if hasattr(stats_module, "_record_gradients"):
        targets.append((stats_module, "_record_gradients", "gradient recording"))
    for owner, attr, label in targets:
        original = getattr(owner, attr)

        def timed(*args, _original=original, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                seconds[_label] = seconds.get(_label, 0.0) + time.perf_counter() - start

        setattr(owner, attr, timed)
        patched.append((owner, attr, original))
    try:
        yield
    finally:
        for owner, attr, original in patched:
            setattr(owner, attr, original)


def section_statistics(reps: int, out: io.StringIO) -> dict[str, float]:
    name = "resnet18"
    model = fresh(name)
    graph = discover(model, example(name))
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g))
               for _ in range(8)]
    params = list(model.parameters())

    def loss_fn(m: nn.Module, batch) -> torch.Tensor:
        return F.cross_entropy(m(batch[0]), batch[1])

    def plain(gradients: bool, data=batches) -> None:
        model.eval()
        for p in params:
            p.requires_grad_(gradients)
        for batch in data:
            with torch.set_grad_enabled(gradients):
                loss = loss_fn(model, batch)
                if gradients:
                    loss.backward()
                    for p in params:
                        p.grad = None
        for p in params:
            p.requires_grad_(True)

    def stats(gradients: bool, data=batches) -> None:
        collect_statistics(model, graph, data, loss_fn, activations=True, gradients=gradients,
                           progress=False)

    comparisons = [("activations + gradients vs. forward + backward", True, 1.3),
                   ("activations only vs. forward only", False, None)]
    rows = []
    found = {}
    for label, gradients, target in comparisons:
        stats(gradients, batches[:1]), plain(gradients, batches[:1])  # warm-up
        ta, tb, inside = [], [], []
        for rep in range(reps):
            for tool in ("stats", "plain") if rep % 2 == 0 else ("plain", "stats"):
                gc.collect()
                if tool == "stats":
                    seconds: dict[str, float] = {}
                    with _instrumented_recording(seconds):
                        start = time.perf_counter()
                        stats(gradients)
                        ta.append(time.perf_counter() - start)
                    inside.append(sum(seconds.values()) / ta[-1])
                else:
                    start = time.perf_counter()
                    plain(gradients)
                    tb.append(time.perf_counter() - start)
        ratio = median(ta) / median(tb)
        per_rep = median([a / b for a, b in zip(ta, tb)])
        found[label] = ratio
        verdict = "" if target is None else (f"<= {target}x: {'met' if ratio <= target else 'MISSED'}")
        rows.append([label, f"{median(ta) * 1000:.0f}", f"{median(tb) * 1000:.0f}", f"{ratio:.2f}x",
                     f"{per_rep:.2f}x", f"{median(inside):.1%}" if inside and inside[0] > 0 else "n/a", verdict])
    out.write("## 3. Statistics pass overhead (ResNet-18 CIFAR, 8 batches of 32 random images, "
              "cross-entropy on random labels)\n\n")
    out.write("`collect_statistics(..., activations=True, gradients=True/False, progress=False)` vs. a plain "
              "loop over the same batches (model in eval mode both times; plain loop: forward + "
              "cross-entropy + backward with parameter gradients, or forward under `no_grad`). "
              f"Median of {reps} repetitions, alternating (order swapped every repetition), after a "
              "one-batch warm-up of each. The last-but-one column is the share of the statistics pass "
              "spent inside neuroprune's recording code (activation hooks' reductions and gradient "
              "accumulation, timed by wrapping `neuroprune.torch.stats` helpers): a noise-robust estimate "
              "of the overhead, since the rest is the same forward/backward.\n\n")
    out.write(table(["comparison", "statistics ms", "plain ms", "ratio of medians",
                     "median of per-rep ratios", "time in recording code", "target"], rows) + "\n\n")
    return found


# ----------------------------------------------------------------------------- main


def _cpu_pressure() -> str:
    """Linux pressure-stall information: share of time some runnable task waited for a CPU."""
    try:
        with open("/proc/pressure/cpu") as f:
            match = re.search(r"some avg10=([\d.]+) avg60=([\d.]+)", f.read())
        return (f"; CPU pressure (share of time a runnable task waited for a CPU, last 10 s / 60 s): "
                f"{match.group(1)} % / {match.group(2)} %") if match else ""
    except OSError:
        return ""


def _version(distribution: str, module: object) -> str:
    """Installed distribution version (``torch_pruning.__version__`` lags behind it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return str(getattr(module, "__version__", "?"))


def _reexec_with_wait_policy(policy: str, argv: list[str]) -> None:
    """Restart the script with ``OMP_WAIT_POLICY`` set: OpenMP reads it only when torch loads it."""
    if policy == "env" or os.environ.get("OMP_WAIT_POLICY", "").lower() == policy:
        return
    if os.environ.get("_CNN_SPEED_REEXEC"):  # never loop
        return
    env = dict(os.environ, OMP_WAIT_POLICY=policy.upper(), _CNN_SPEED_REEXEC="1")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions/runs, ResNet-18 only in section 2, no diagnosis")
    parser.add_argument("--out", default="benchmarks/results/cnn_speed.md", help="Markdown output file")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--omp-wait-policy", choices=["passive", "active", "env"], default="passive",
                        help="OMP_WAIT_POLICY for the run (default passive: idle OpenMP threads sleep instead "
                             "of spinning, which keeps multi-threaded timings sane on a shared, oversubscribed "
                             "machine); 'env' leaves the environment as it is")
    parser.add_argument("--sections", default="1,2,3", help="comma-separated sections to run (default 1,2,3)")
    args = parser.parse_args(argv)
    _reexec_with_wait_policy(args.omp_wait_policy, argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(args.threads)
    if args.sections == "probe":  # used by section 2's diagnosis, in a child process
        print(json.dumps(probe(runs=5)))
        return 0

    import torch_pruning as tp

    sections = {s.strip() for s in args.sections.split(",")}
    reps = 3 if args.quick else 5
    lat_runs = 15 if args.quick else 30
    stat_reps = 3 if args.quick else 5
    started = time.perf_counter()

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
            cpu = match.group(1) if match else cpu
    except OSError:
        pass
    cmd = " ".join([".venv/bin/python", "benchmarks/cnn_speed.py", *(argv if argv is not None else sys.argv[1:])])

    out = io.StringIO()
    out.write("# CNN speed: neuroprune vs. Torch-Pruning (CPU)\n\n")
    out.write(f"- machine: {cpu}, {os.cpu_count()} logical CPUs, Linux {platform.release()}; shared and noisy, "
              "so every comparison interleaves the tools (A, B, A, B, order swapped each round) and reports medians\n")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load:
        out.write(f"- load average at start (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    out.write(f"- `OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(not set)')}`"
              f"{_cpu_pressure()}\n")
    out.write(f"- `torch.set_num_threads({args.threads})`, float32, eval mode; pruning-time medians of {reps} "
              f"repetitions, latency medians of {lat_runs} forwards, statistics-pass medians of {stat_reps}\n")
    out.write(f"- neuroprune {_version('neuroprune', npr)}, torch {torch.__version__}, "
              f"torch-pruning {_version('torch-pruning', tp)}, Python {platform.python_version()}\n")
    out.write(f"- pruning: {RATIO:.0%} of the channels of every group (local); neuroprune magnitude scores, "
              "Torch-Pruning `MetaPruner` + `MagnitudeImportance(p=2)`, classifier ignored\n")
    out.write(f"- reproduce: `{cmd}`\n\n")

    found_speed: dict[str, float] = {}
    found_stats: dict[str, float] = {}
    found_diag: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "1" in sections:
            progress("section 1: ResNet-50 pruning time")
            section_resnet50(reps, lat_runs, out)
            print(out.getvalue(), end="", flush=True)
            out_pos = out.tell()
        else:
            out_pos = out.tell()
            print(out.getvalue(), end="", flush=True)
        if "2" in sections:
            names = ["resnet18"] if args.quick else ["resnet18", "resnet56", "mobilenetv2"]
            found_speed = section_speedup(names, lat_runs, out)
            if not args.quick:
                found_diag = section_diagnosis(max(15, lat_runs // 2), args.threads, out)
            print(out.getvalue()[out_pos:], end="", flush=True)
            out_pos = out.tell()
        if "3" in sections:
            progress("section 3: statistics pass")
            found_stats = section_statistics(stat_reps, out)
            print(out.getvalue()[out_pos:], end="", flush=True)
            out_pos = out.tell()

    summary = ["## Targets\n"]
    if found_speed:
        for key in ("resnet18/neuroprune round_to=1/b32", "resnet18/neuroprune round_to=8/b32"):
            ratio = found_speed[key]
            summary.append(f"- ResNet-18 batch 32, {key.split('/')[1]}: speed-up / MAC reduction = {ratio:.3f} "
                           f"(target >= 0.9: {'met' if ratio >= 0.9 else 'MISSED'})")
        for key, ratio in found_diag.items():
            if key.endswith("/b32"):
                summary.append(f"- ResNet-18 batch 32, neuroprune round_to=1, {key[:-4]}: ratio = {ratio:.3f} "
                               f"({'>= 0.9' if ratio >= 0.9 else '< 0.9'})")
        summary.append(f"- earlier Torch-Pruning measurements on this machine: {TP_REFERENCE}")
    if found_stats:
        ratio = found_stats["activations + gradients vs. forward + backward"]
        summary.append(f"- statistics pass (activations + gradients) / forward + backward = {ratio:.3f}x "
                       f"(target <= 1.3x: {'met' if ratio <= 1.3 else 'MISSED'})")
    if hasattr(os, "getloadavg"):
        summary.append(f"- load average at the end (1/5/15 min): {' / '.join(f'{v:.1f}' for v in os.getloadavg())}"
                       f"{_cpu_pressure()}")
    summary.append(f"\nTotal run time: {time.perf_counter() - started:.0f} s.\n")
    out.write("\n".join(summary) + "\n")
    print(out.getvalue()[out_pos:], end="", flush=True)

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(out.getvalue())
    print(f"\nwritten to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
