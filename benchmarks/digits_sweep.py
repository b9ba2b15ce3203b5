"""Digits MLP sweep: test accuracy vs. fraction of hidden neurons removed, every method, one run.

Same machine, same seeds, same trained dense model per seed, same widths and the same
fine-tuning budget for every tool:

* dense: ``mlp`` (64-128-64-10) trained 30 epochs (Adam, lr 1e-3, batch 64) per seed, on the fixed
  split ``load_digits(seed=0)``; the seed varies initialisation and shuffles;
* fractions 0.25, 0.5, 0.6, 0.75, 0.9 of the hidden neurons (fc1 and fc2, classifier kept),
  removed in one shot; every tool is given exactly the widths neuroprune keeps (Torch-Pruning
  through a per-layer ``pruning_ratio_dict``, ``ln_structured`` through an integer ``amount``);
* A. raw quality curve, no fine-tuning: every neuroprune criterion without and with least-squares
  reconstruction (``PruneConfig(tolerance=1.0)``: no rollback), Torch-Pruning 1.6.1 ``MetaPruner``
  with magnitude (L2) and Taylor importance, ``torch.nn.utils.prune.ln_structured`` masks;
* B. 5 epochs of the same ``neuroprune.torch.recover.finetune`` at lr 1e-3 and 3e-3 for neuroprune
  magnitude / taylor, Torch-Pruning magnitude / Taylor and ``ln_structured``; neuroprune's recipe
  with magnitude, taylor and obs (reconstruction + 5 epochs at lr 3e-3 with knowledge distillation from the dense model, weight
  0.7); the recipe without distillation, and Torch-Pruning magnitude and neuroprune magnitude
  (no reconstruction) with the recipe's distillation fine-tuning, so that its parts can be told apart;
* C. parameters, safetensors size and batch-64 latency of dense, neuroprune, Torch-Pruning and
  ``ln_structured`` (masked, and after ``prune.remove``) models at every fraction (seed 0;
  interleaved round-robin timing, median).

Writes ``benchmarks/results/digits_sweep.md``, ``.png`` (accuracy vs. fraction) and ``.json``
(per-seed numbers). The script re-executes itself with ``OMP_WAIT_POLICY=PASSIVE`` (see
``cnn_speed.py``: spinning OpenMP threads swamp timings on a shared machine).

    .venv/bin/python benchmarks/digits_sweep.py            # 5 seeds, about 1-2 min on 2 busy cores
    .venv/bin/python benchmarks/digits_sweep.py --quick    # 2 seeds, 100 timed forwards, under 1 min
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune
from omp_policy import POLICIES, reexec_with_omp_policy

import neuroprune as npr
from neuroprune.data import load_digits
from neuroprune.torch.recover.finetune import finetune
from neuroprune.torch.metrics import count_parameters, serialized_size_bytes
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.models.zoo import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_mlp import DENSE_EPOCHS, HIDDEN, hidden_widths  # noqa: E402  (same dense training and widths)

FRACTIONS = (0.25, 0.5, 0.6, 0.75, 0.9)
FINETUNE_EPOCHS = 5
LEARNING_RATES = (1e-3, 3e-3)
DENSE_LR = 1e-3
RECIPE = dict(reconstruct=True, learning_rate=3e-3, distill_weight=0.7)
LATENCY_BATCH = 64
RESULTS = Path(__file__).resolve().parent / "results"
COMMAND = ".venv/bin/python benchmarks/digits_sweep.py"


# --------------------------------------------------------------------------- environment


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def progress(message: str) -> None:
    print(f"[digits_sweep {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- methods


@dataclass
class Method:
    """One line of the plot / one row of a table: how a dense model becomes a pruned one."""

    key: str
    tool: str  # neuroprune | Torch-Pruning | torch.nn.utils.prune
    label: str  # criterion / importance
    recovery: str  # human-readable recovery
    section: str  # "A" (no fine-tuning) or "B" (fine-tuning)
    run: Callable  # (dense, task, widths, seed) -> nn.Module
    accs: dict[float, list[float]] = field(default_factory=dict)
    widths: dict[float, set[str]] = field(default_factory=dict)
    params: dict[float, set[int]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, fraction: float, acc: float, model: nn.Module, seconds: float) -> None:
        self.accs.setdefault(fraction, []).append(acc)
        self.widths.setdefault(fraction, set()).add(hidden_widths(model))
        self.params.setdefault(fraction, set()).add(count_parameters(model))
        self.seconds.append(seconds)

    def mean(self, fraction: float) -> float | None:
        values = self.accs.get(fraction)
        return statistics.fmean(values) if values else None

    def std(self, fraction: float) -> float:
        values = self.accs.get(fraction, [])
        return statistics.stdev(values) if len(values) > 1 else 0.0

    @property
    def name(self) -> str:
        return f"{self.tool} {self.label}, {self.recovery}"


def npr_method(key, criterion, recovery, section, *, reconstruct=False, epochs=0, lr=DENSE_LR, distill=0.0,
               options=None) -> Method:
    def run(dense, task, widths, fraction, seed):
        config = npr.PruneConfig(criterion=criterion, criterion_options=options or {}, ratio=fraction, steps=1,
                                 tolerance=1.0, reconstruct=reconstruct, finetune_epochs=epochs, learning_rate=lr,
                                 distill_weight=distill, progress=False, latency_runs=1, seed=seed)
        return npr.prune(dense, task, config).model
    return Method(key, "neuroprune", criterion, recovery, section, run)


def tp_method(key, importance, recovery, section, *, epochs=0, lr=DENSE_LR, distill=0.0) -> Method:
    def run(dense, task, widths, fraction, seed):
        import torch_pruning as tp

        model = copy.deepcopy(dense).eval()
        if importance == "taylor":
            # as in Torch-Pruning's README (and benchmarks/digits_mlp.py): loss gradients on the
            # same calibration batches neuroprune scores with, then step()
            imp = tp.importance.TaylorImportance()
            model.zero_grad(set_to_none=True)
            for batch in task.calibration_batches():
                task.loss(model, batch).backward()
        else:
            imp = tp.importance.MagnitudeImportance(p=2)
        # neuroprune's widths exactly: TP keeps int(width * (1 - ratio)) per layer
        ratios = {getattr(model, name): 1 - (keep + 0.5) / getattr(model, name).out_features
                  for name, keep in zip(HIDDEN, widths)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tp.pruner.MetaPruner(model, task.example_input(), imp, pruning_ratio_dict=ratios,
                                 ignored_layers=[model.fc3]).step()
        model.zero_grad(set_to_none=True)
        if epochs:
            finetune(model, task, epochs=epochs, learning_rate=lr, progress=False,
                     teacher=dense if distill else None, distill_weight=distill)
        return model
    return Method(key, "Torch-Pruning", "magnitude (L2)" if importance == "magnitude" else "Taylor",
                  recovery, section, run)


def ln_masked(dense: nn.Module, widths: tuple[int, ...]) -> nn.Module:
    model = copy.deepcopy(dense)
    for name, keep in zip(HIDDEN, widths):
        layer = getattr(model, name)
        torch_prune.ln_structured(layer, "weight", amount=layer.out_features - keep, n=2, dim=0)
    return model


def ln_method(key, recovery, section, *, epochs=0, lr=DENSE_LR) -> Method:
    def run(dense, task, widths, fraction, seed):
        model = ln_masked(dense, widths)
        if epochs:
            finetune(model, task, epochs=epochs, learning_rate=lr, progress=False)
        return model
    return Method(key, "torch.nn.utils.prune", "ln_structured L2 (masks)", recovery, section, run)


def methods() -> list[Method]:
    ft = f"{FINETUNE_EPOCHS} ep fine-tune"
    kd = (f"reconstruct + {FINETUNE_EPOCHS} ep KD fine-tune (lr {RECIPE['learning_rate']:g}, distill "
          f"{RECIPE['distill_weight']:g})")
    kd_only = f"{FINETUNE_EPOCHS} ep KD fine-tune (lr {RECIPE['learning_rate']:g}, distill {RECIPE['distill_weight']:g})"
    out = []
    for criterion in npr.criterion_names():
        out.append(npr_method(f"npr:{criterion}", criterion, "none", "A"))
        out.append(npr_method(f"npr:{criterion}:rec", criterion, "reconstruct", "A", reconstruct=True))
        if criterion == "magnitude":  # Torch-Pruning's group magnitude also sums the weights reading a neuron
            m = npr_method("npr:magnitude:out", criterion, "none", "A", options={"outgoing": True})
            m.label = "magnitude (outgoing=True)"
            out.append(m)
    out += [tp_method("tp:magnitude", "magnitude", "none", "A"), tp_method("tp:taylor", "taylor", "none", "A"),
            ln_method("ln", "none", "A")]
    for lr in LEARNING_RATES:
        for criterion in ("magnitude", "taylor"):
            out.append(npr_method(f"npr:{criterion}:ft{lr:g}", criterion, f"{ft}, lr {lr:g}", "B",
                                  epochs=FINETUNE_EPOCHS, lr=lr))
        for importance in ("magnitude", "taylor"):
            out.append(tp_method(f"tp:{importance}:ft{lr:g}", importance, f"{ft}, lr {lr:g}", "B",
                                 epochs=FINETUNE_EPOCHS, lr=lr))
        out.append(ln_method(f"ln:ft{lr:g}", f"{ft}, lr {lr:g}", "B", epochs=FINETUNE_EPOCHS, lr=lr))
    for criterion in ("magnitude", "taylor", "obs"):
        out.append(npr_method(f"npr:{criterion}:recipe", criterion, f"**recipe**: {kd}", "B",
                              epochs=FINETUNE_EPOCHS, reconstruct=True, lr=RECIPE["learning_rate"],
                              distill=RECIPE["distill_weight"]))
    out.append(npr_method("npr:magnitude:recft", "magnitude",
                          f"reconstruct + {FINETUNE_EPOCHS} ep fine-tune, lr {RECIPE['learning_rate']:g} (recipe without KD)",
                          "B", epochs=FINETUNE_EPOCHS, reconstruct=True, lr=RECIPE["learning_rate"]))
    out.append(npr_method("npr:magnitude:kd", "magnitude", kd_only, "B", epochs=FINETUNE_EPOCHS,
                          lr=RECIPE["learning_rate"], distill=RECIPE["distill_weight"]))
    out.append(tp_method("tp:magnitude:kd", "magnitude", kd_only, "B", epochs=FINETUNE_EPOCHS,
                         lr=RECIPE["learning_rate"], distill=RECIPE["distill_weight"]))
    return out


# --------------------------------------------------------------------------- latency / size


def interleaved_latency_ms(models: dict[str, nn.Module], x: torch.Tensor, runs: int, warmup: int) -> dict[str, float]:
    """Median forward time per model; one forward of each per round, the order rotated every round."""
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for m in models.values():
            m.eval()
        for _ in range(warmup):
            for n in names:
                models[n](x)
        for r in range(runs):
            shift = r % len(names)
            for n in names[shift:] + names[:shift]:
                start = time.perf_counter()
                models[n](x)
                times[n].append(time.perf_counter() - start)
    return {n: statistics.median(t) * 1000 for n, t in times.items()}


def size_latency_section(dense: nn.Module, task, target_widths: dict[float, tuple[int, ...]], runs: int,
                         by_key: dict[str, Method], seed: int) -> tuple[list[str], list[dict]]:
    models = {"dense": dense}
    for fraction in FRACTIONS:
        widths = target_widths[fraction]
        models[f"{fraction}|neuroprune magnitude"] = by_key["npr:magnitude"].run(dense, task, widths, fraction, seed)
        models[f"{fraction}|Torch-Pruning magnitude (L2)"] = by_key["tp:magnitude"].run(dense, task, widths, fraction,
                                                                                     seed)
        masked = ln_masked(dense, widths)
        models[f"{fraction}|ln_structured, masked"] = masked
        removed = ln_masked(dense, widths)  # a masked model cannot be deep-copied (weight is not a leaf)
        for name in HIDDEN:
            torch_prune.remove(getattr(removed, name), "weight")
        models[f"{fraction}|ln_structured after prune.remove"] = removed
    x = task.make_input(LATENCY_BATCH)
    latency = interleaved_latency_ms(models, x, runs=runs, warmup=max(10, runs // 10))
    rows, raw = [], []
    base_params, base_size, base_lat = count_parameters(dense), serialized_size_bytes(dense), latency["dense"]
    for key, model in models.items():
        fraction, _, label = key.rpartition("|")
        params, size = count_parameters(model), serialized_size_bytes(model)
        zero = "/".join(str(int((getattr(model, n).weight.detach().abs().sum(dim=1) == 0).sum())) for n in HIDDEN)
        raw.append({"fraction": float(fraction) if fraction else 0.0, "model": label, "params": params,
                    "safetensors_bytes": size, "latency_ms_batch64": latency[key], "zero_rows": zero})
        rows.append(f"| {f'{float(fraction):.0%}' if fraction else '-'} | {label} | {hidden_widths(model)} | {zero} | "
                    f"{params} ({params / base_params:.2f}x) | {size} ({size / base_size:.2f}x) | "
                    f"{latency[key]:.3f} | {base_lat / latency[key]:.2f}x |")
    header = ["| removed | model | hidden widths (stored) | all-zero weight rows | parameters (vs dense) | "
              "safetensors bytes (vs dense) | batch-64 latency ms | speed-up |", "|---|---|---|---|---|---|---|---|"]
    return header + rows, raw


# --------------------------------------------------------------------------- output


def cell(method: Method, fraction: float, best: bool) -> str:
    mean = method.mean(fraction)
    if mean is None:
        return "failed" if method.errors else "-"
    text = f"{mean:.3f} ± {method.std(fraction):.3f}"
    return f"**{text}**" if best else text


def accuracy_table(rows: list[Method], with_time: bool = True) -> list[str]:
    best = {}
    for fraction in FRACTIONS:
        values = [m.mean(fraction) for m in rows if m.mean(fraction) is not None]
        best[fraction] = max(values) if values else None
    head = ["tool", "criterion / importance", "recovery", *[f"{f:.0%}" for f in FRACTIONS]]
    if with_time:
        head.append("s / run")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for m in rows:
        cells = [m.tool, m.label, m.recovery]
        cells += [cell(m, f, m.mean(f) is not None and best[f] is not None and abs(m.mean(f) - best[f]) < 1e-12)
                  for f in FRACTIONS]
        if with_time:
            cells.append(f"{statistics.fmean(m.seconds):.2f}" if m.seconds else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


STYLE = {"neuroprune": "-", "Torch-Pruning": "--", "torch.nn.utils.prune": ":"}
FT_COLORS = {"magnitude": ("#9ecae1", "#1f77b4"), "taylor": ("#fdae6b", "#e6550d"), "ln": ("#a1d99b", "#2ca02c")}


def _look(m: Method, criteria: list[str]) -> tuple[str, str, float]:
    """(colour, line style, width) of a method's line: one colour per criterion in panel A, per
    criterion and learning rate in panel B (light = lr 1e-3); line style = tool."""
    style = STYLE[m.tool]
    parts = m.key.split(":")
    if m.section == "A":
        if m.tool != "neuroprune":
            return {"tp:magnitude": "black", "tp:taylor": "dimgray", "ln": "black"}[m.key], style, 2.2
        color = f"C{criteria.index(parts[1]) % 10}"
        return color, {"rec": "-.", "out": ":"}.get(parts[-1], "-"), 1.3
    if parts[-1] == "recipe":
        return {"magnitude": "#d62728", "taylor": "#7f0000", "obs": "#ff7f0e"}[parts[1]], style, 2.4
    if parts[-1] == "recft":
        return "#ff9896", style, 1.8
    if parts[-1] == "kd":
        return ("#9467bd" if m.tool == "neuroprune" else "#c5b0d5"), style, 1.8
    family = "ln" if m.tool == "torch.nn.utils.prune" else parts[1]
    light, dark = FT_COLORS[family]
    return (light if parts[-1] == f"ft{LEARNING_RATES[0]:g}" else dark), style, 1.8


def plot(path: Path, section_a: list[Method], section_b: list[Method], dense: list[float], caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 7))
    criteria = npr.criterion_names()
    dense_mean = statistics.fmean(dense)

    def draw(ax, rows, title, bands):
        for m in rows:
            xs = [f for f in FRACTIONS if m.mean(f) is not None]
            if not xs:
                continue
            ys = [m.mean(f) for f in xs]
            sd = [m.std(f) for f in xs]
            color, style, width = _look(m, criteria)
            ax.plot(xs, ys, style, marker="o", ms=3, lw=width, color=color,
                    label=f"{m.tool}: {m.label}, {m.recovery.replace('**', '')}")
            if bands:
                ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)], color=color,
                                alpha=0.07)
        ax.axhline(dense_mean, color="black", lw=0.8, ls=":", label=f"dense {dense_mean:.3f}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("fraction of hidden neurons removed (fc1 128, fc2 64)")
        ax.set_xticks(FRACTIONS)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")

    draw(axes[0], section_a, "A. one shot, no fine-tuning (solid: plain, dash-dot: + reconstruction; "
                             "thick: other tools)", bands=False)
    draw(axes[1], section_b, f"B. same {FINETUNE_EPOCHS}-epoch fine-tuning budget (light: lr "
                             f"{LEARNING_RATES[0]:g}, dark: lr {LEARNING_RATES[1]:g}; band = ± 1 std)", bands=True)
    axes[0].set_ylabel("test accuracy (mean over seeds)")
    axes[0].set_ylim(0, 1.0)
    fig.text(0.01, 0.01, caption, fontsize=7, va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def observations(section_a: list[Method], section_b: list[Method], dense: list[float]) -> list[str]:
    out = []
    dense_mean = statistics.fmean(dense)

    def best(rows, fraction):
        rows = [m for m in rows if m.mean(fraction) is not None]
        return max(rows, key=lambda m: m.mean(fraction)) if rows else None

    plain = [m for m in section_a if m.tool == "neuroprune" and m.recovery == "none"]
    rec = [m for m in section_a if m.tool == "neuroprune" and m.recovery == "reconstruct"]
    tp_a = [m for m in section_a if m.tool == "Torch-Pruning"]
    npr_b = [m for m in section_b if m.tool == "neuroprune"]
    tp_b = [m for m in section_b if m.tool == "Torch-Pruning"]
    ln_b = [m for m in section_b if m.tool == "torch.nn.utils.prune"]
    for fraction in FRACTIONS:
        parts = []
        for title, rows in (("no recovery, neuroprune", plain), ("Torch-Pruning", tp_a),
                            ("neuroprune + reconstruction", rec)):
            b = best(rows, fraction)
            if b:
                parts.append(f"{title} best {b.label} {b.mean(fraction):.3f}")
        for title, rows in ((f"{FINETUNE_EPOCHS} ep: neuroprune", npr_b), ("Torch-Pruning", tp_b),
                            ("ln_structured", ln_b)):
            b = best(rows, fraction)
            if b:
                parts.append(f"{title} best {b.label} ({b.recovery.replace('**', '')}) {b.mean(fraction):.3f}")
        out.append(f"- {fraction:.0%} removed (dense {dense_mean:.3f}): " + "; ".join(parts) + ".")
    return out


def same_as_tp(by_key: dict[str, Method]) -> str:
    """Whether neuroprune magnitude with outgoing weights reproduces Torch-Pruning's magnitude pruning."""
    ours, theirs = by_key["npr:magnitude:out"], by_key["tp:magnitude"]
    same = all(ours.accs.get(f) == theirs.accs.get(f) for f in FRACTIONS)
    return ("- Torch-Pruning's `MagnitudeImportance` scores a neuron by all weights of its dependency group, the "
            "incoming row *and* the next layer's column that reads it; neuroprune's `magnitude` uses only the incoming "
            "weights (like `ln_structured`) unless `outgoing=True`. With `outgoing=True` it gives the same test "
            f"accuracy as Torch-Pruning at every seed and fraction: **{'yes' if same else 'no'}** (so the two tools "
            "pick the same neurons); the gap between the plain `magnitude` rows of the two tools is this choice of "
            "weights, not the tools.")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5,
                        help="number of seeds 0..N-1 (default 5, the seeds of digits_mlp.py)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 100 timed forwards instead of 300")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--latency-runs", type=int, default=None, help="timed forwards per model (default 300)")
    parser.add_argument("--omp-wait-policy", choices=POLICIES, default="passive")
    parser.add_argument("--out", default=str(RESULTS / "digits_sweep.md"),
                        help="Markdown file; the .png plot and .json numbers go next to it")
    args = parser.parse_args(argv)
    reexec_with_omp_policy(args.omp_wait_policy)
    torch.set_num_threads(args.threads)
    seeds = list(range(2 if args.quick else args.seeds))
    if not seeds:
        parser.error("--seeds must be >= 1")
    latency_runs = args.latency_runs or (100 if args.quick else 300)
    started = time.perf_counter()

    data = load_digits(seed=0)
    all_methods = methods()
    by_key = {m.key: m for m in all_methods}
    dense_accs: list[float] = []
    target_widths: dict[float, tuple[int, ...]] = {}
    size_lines: list[str] = []
    size_raw: list[dict] = []

    for seed in seeds:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        task = ClassificationTask(data, seed=seed)
        dense = build_model("mlp")
        finetune(dense, task, epochs=DENSE_EPOCHS, learning_rate=DENSE_LR, progress=False)
        dense.eval()
        dense_state = copy.deepcopy(dense.state_dict())
        dense_accs.append(task.evaluate(dense, "test"))
        if not target_widths:  # neuroprune's widths per fraction; every other tool is given the same
            for fraction in FRACTIONS:
                result = npr.prune(dense, task, npr.PruneConfig(criterion="magnitude", ratio=fraction, tolerance=1.0,
                                                                progress=False, latency_runs=1))
                target_widths[fraction] = tuple(getattr(result.model, n).out_features for n in HIDDEN)
        for method in all_methods:
            for fraction in FRACTIONS:
                start = time.perf_counter()
                try:
                    model = method.run(dense, task, target_widths[fraction], fraction, seed)
                except Exception as error:  # a failing method is reported, not hidden
                    method.errors.append(f"seed {seed}, {fraction:.0%}: {type(error).__name__}: {error}")
                    continue
                seconds = time.perf_counter() - start
                method.add(fraction, task.evaluate(model, "test"), model, seconds)
        if any(not torch.equal(v, dense.state_dict()[k]) for k, v in dense_state.items()):
            raise RuntimeError("the dense model was modified by a pruning run")
        progress(f"seed {seed}: dense {dense_accs[-1]:.3f}, {time.perf_counter() - t0:.0f} s")
        if seed == seeds[0]:
            progress(f"size and latency ({latency_runs} interleaved forwards per model)")
            size_lines, size_raw = size_latency_section(dense, task, target_widths, latency_runs, by_key, seed)

    elapsed = time.perf_counter() - started
    section_a = [m for m in all_methods if m.section == "A"]
    section_b = [m for m in all_methods if m.section == "B"]
    mismatches = [f"{m.name} at {f:.0%}: {', '.join(sorted(w))}" for m in all_methods for f, w in m.widths.items()
                  if w != {"/".join(map(str, target_widths[f]))} and m.tool != "torch.nn.utils.prune"]
    ln_ok = all(w == {"128/64"} for m in all_methods if m.tool == "torch.nn.utils.prune" for w in m.widths.values())
    errors = [f"{m.name}: {e}" for m in all_methods for e in m.errors]

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    measured = (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), test split ({len(data.x_test)} samples), "
                f"mean ± sample std; torch {torch.__version__}, {torch.get_num_threads()} threads, "
                f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(not set)')}")
    caption = (f"digits MLP 64-128-64-10, dense {DENSE_EPOCHS} ep; one-shot pruning of fc1/fc2; {measured}. "
               f"Reproduce: {command}")
    plot(png, section_a, section_b, dense_accs, caption)

    widths_text = ", ".join(f"{f:.0%} -> {'/'.join(map(str, w))}" for f, w in target_widths.items())
    lines = [
        "# Digits MLP: accuracy vs. fraction of neurons removed (neuroprune vs. Torch-Pruning vs. torch.nn.utils.prune)",
        "",
        f"- Model `mlp` 64-128-64-10 (ReLU) on scikit-learn digits, fixed split `load_digits(seed=0)` "
        f"({len(data.x_train)} train / {len(data.x_val)} val / {len(data.x_test)} test). Per seed one dense model, "
        f"trained {DENSE_EPOCHS} epochs (Adam lr {DENSE_LR:g}, batch 64, `neuroprune.torch.recover.finetune`); "
        f"the same dense models as `digits_mlp.py`; dense test accuracy {statistics.fmean(dense_accs):.3f} ± "
        f"{statistics.stdev(dense_accs) if len(dense_accs) > 1 else 0:.3f}. Every method starts from that model.",
        f"- One-shot removal of the hidden neurons of fc1 and fc2 (classifier kept). Hidden widths kept, the same "
        f"for every tool: {widths_text} (neuroprune removes floor(fraction x width); Torch-Pruning gets a per-layer "
        "`pruning_ratio_dict` that lands on the same widths, `ln_structured` an integer `amount`). "
        "neuroprune: `PruneConfig(criterion, ratio, steps=1, tolerance=1.0)` (no rollback); Torch-Pruning "
        f"{_version('torch-pruning')}: `MetaPruner(..., ignored_layers=[fc3]).step()`, Taylor gradients summed over "
        "the same `task.calibration_batches()` neuroprune scores with; `torch.nn.utils.prune.ln_structured(n=2, dim=0)` "
        "only masks rows (the stored widths stay 128/64).",
        f"- Fine-tuning (section B) is the same function for every tool: `finetune(model, task, epochs="
        f"{FINETUNE_EPOCHS}, learning_rate=lr)` (Adam, batch 64, same shuffles per seed), at lr "
        f"{' and '.join(f'{lr:g}' for lr in LEARNING_RATES)}; the KD rows blend cross-entropy with the KL divergence "
        f"to the dense model (weight {RECIPE['distill_weight']:g}, temperature 4). neuroprune's recipe = "
        f"`PruneConfig(reconstruct=True, finetune_epochs={FINETUNE_EPOCHS}, learning_rate={RECIPE['learning_rate']:g}, "
        f"distill_weight={RECIPE['distill_weight']:g})`; Torch-Pruning has no reconstruction, so its KD row gets the "
        "same fine-tuning without it.",
        f"- Accuracy: {measured}. **bold** = best of its table per fraction. `s / run` = mean wall time of one "
        "prune (+ recovery) call, evaluation excluded.",
        f"- Python {platform.python_version()}, {os.cpu_count()} logical CPUs (shared, noisy), wall time "
        f"{elapsed:.0f} s.",
        f"- Reproduce: `{command}`",
        "",
        f"![accuracy vs. fraction removed]({png.name})",
        "",
        f"*Figure: test accuracy vs. fraction of hidden neurons removed; {measured} (band in B = ± 1 std). "
        f"Reproduce: `{command}`.*",
        "",
        "## A. One shot, no fine-tuning (the raw quality curve)",
        "",
        *accuracy_table(section_a),
        "",
        f"## B. The same {FINETUNE_EPOCHS}-epoch fine-tuning budget for every tool",
        "",
        *accuracy_table(section_b),
        "",
        "## C. What the model becomes: size and latency",
        "",
        f"Seed {seeds[0]}, models without fine-tuning (size and speed do not depend on it). Latency: batch "
        f"{LATENCY_BATCH}, eval + `torch.inference_mode()`, {torch.get_num_threads()} threads, median of "
        f"{latency_runs} forwards per model after {max(10, latency_runs // 10)} warm-up rounds, all "
        f"{len(size_raw)} models timed round-robin in one loop (order rotated every round) so that machine "
        "load hits them alike. Parameters count `weight_orig` for masked layers (the mask is a buffer); "
        "safetensors bytes = `neuroprune.torch.metrics.serialized_size_bytes` (state dict incl. masks).",
        "",
        *size_lines,
        "",
        "## Observations (computed from the tables above)",
        "",
        *observations(section_a, section_b, dense_accs),
        same_as_tp(by_key),
        f"- Widths: every neuroprune and Torch-Pruning model has the target widths: "
        f"{'yes' if not mismatches else 'NO: ' + '; '.join(mismatches)}; ln_structured models keep 128/64 stored: "
        f"{'yes' if ln_ok else 'NO'}.",
    ]
    if errors:
        lines += ["", "## Failures", "", *[f"- {e}" for e in errors]]
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({
        "seeds": seeds, "threads": torch.get_num_threads(), "fractions": FRACTIONS, "dense_test_accuracy": dense_accs,
        "target_widths": {str(f): w for f, w in target_widths.items()},
        "methods": [{"key": m.key, "tool": m.tool, "criterion": m.label, "recovery": m.recovery.replace("**", ""),
                     "section": m.section, "test_accuracy_per_seed": {str(f): a for f, a in m.accs.items()},
                     "hidden_widths": {str(f): sorted(w) for f, w in m.widths.items()},
                     "params": {str(f): sorted(p) for f, p in m.params.items()},
                     "mean_seconds_per_run": statistics.fmean(m.seconds) if m.seconds else None,
                     "errors": m.errors} for m in all_methods],
        "size_latency": size_raw, "latency_runs": latency_runs, "wall_seconds": elapsed}, indent=1))
    print(text)
    progress(f"wrote {out}, {png.name} and {out.with_suffix('.json').name} ({elapsed:.0f} s)")
    return 0  # failing methods are listed under 'Failures' in the Markdown


if __name__ == "__main__":
    raise SystemExit(main())
