"""Digits MLP benchmark: every neuroprune criterion vs. Torch-Pruning vs. torch.nn.utils.prune.

One run, same seeds, same trained dense models, same budgets for every method:

* dense: ``mlp`` (64-128-64-10) trained 30 epochs (Adam, lr 1e-3, batch 64) per seed;
* (a) 75 % of the hidden neurons removed in one shot, then 5 epochs of fine-tuning;
* (b) 50 % removed, no recovery at all;
* (c) 50 % removed, retrain-free least-squares reconstruction (neuroprune only);
* (k) 75 % removed, then 5 epochs of fine-tuning with knowledge distillation from the dense model;
* (r) neuroprune's recipe: 75 % removed, reconstruction, then the 5 epochs of (k) (neuroprune only);
* Torch-Pruning ``MetaPruner`` with magnitude (L2, L1), Taylor and random importance, for (a), (b), (k);
* ``torch.nn.utils.prune.ln_structured`` (masks) for (a), to show that masks do not shrink a model;
* a 32/16 MLP trained from scratch as a capacity reference for (a).

The data split is fixed (``load_digits(seed=0)``); the seed varies the initialisation and the
training shuffles. Reported accuracies are on the test split, mean ± sample std over seeds.

    .venv/bin/python benchmarks/digits_mlp.py            # 5 seeds, about 20 s on 2 cores
    .venv/bin/python benchmarks/digits_mlp.py --quick    # 2 seeds, about 10 s
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

import neuroprune as npr
from neuroprune.data import load_digits
from neuroprune.torch.recover.finetune import finetune
from neuroprune.tasks.classification import ClassificationTask
from neuroprune.models.zoo import build_model

DENSE_EPOCHS = 30
FINETUNE_EPOCHS = 5
LEARNING_RATE = 1e-3
KD_LEARNING_RATE, KD_WEIGHT = 3e-3, 0.7  # the recipe's fine-tuning: Adam lr, weight of the KL term (T = 4)
HIGH, LOW = 0.75, 0.50
SETTINGS = {
    "a": f"{HIGH:.0%} + {FINETUNE_EPOCHS} ep fine-tune",
    "b": f"{LOW:.0%}, no recovery",
    "c": f"{LOW:.0%}, reconstruct (retrain-free)",
    "k": f"{HIGH:.0%} + {FINETUNE_EPOCHS} ep KD fine-tune (lr {KD_LEARNING_RATE:g}, distill {KD_WEIGHT})",
    "r": f"{HIGH:.0%} + recipe: reconstruct + {FINETUNE_EPOCHS} ep KD fine-tune (lr {KD_LEARNING_RATE:g}, "
         f"distill {KD_WEIGHT})",
}
FINETUNED = ("a", "k", "r")  # settings with the 5-epoch fine-tuning budget
TP_SETTINGS = ("a", "b", "k")
HIDDEN = ("fc1", "fc2")
CONTEXT_SETTINGS = {
    "dense": f"dense, {DENSE_EPOCHS} ep",
    "scratch": f"32/16 trained from scratch, {DENSE_EPOCHS} ep (capacity reference, no pruning)",
}

# Earlier Torch-Pruning measurements on this machine, printed for context only.
TP_REFERENCE = {
    "dense": "0.974",
    "a": {"magnitude": "0.943", "taylor": "0.896 ± 0.07", "random": "0.923"},
    "b": {"magnitude": "0.849 ± 0.04", "taylor": "0.708 ± 0.15"},
}


@dataclass
class Row:
    method: str
    criterion: str
    setting: str  # key of SETTINGS, or "dense"
    accs: list[float] = field(default_factory=list)
    widths: set[str] = field(default_factory=set)
    params: set[int] = field(default_factory=set)
    note: str = ""

    def add(self, acc: float, widths: str, params: int) -> None:
        self.accs.append(acc)
        self.widths.add(widths)
        self.params.add(params)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accs)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accs) if len(self.accs) > 1 else 0.0


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def state_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def hidden_widths(model: nn.Module) -> str:
    return "/".join(str(getattr(model, name).out_features) for name in HIDDEN)


# --------------------------------------------------------------------------- neuroprune


def neuroprune_variants() -> list[tuple[str, str, dict]]:
    """(label, criterion name, criterion_options) for every registered criterion; magnitude twice."""
    variants = []
    for name in npr.criterion_names():
        if name == "magnitude":
            variants.append(("magnitude L1", name, {"p": 1}))
            variants.append(("magnitude L2", name, {"p": 2}))
        else:
            variants.append((name, name, {}))
    return variants


def run_neuroprune(dense: nn.Module, task, criterion: str, options: dict, setting: str, seed: int):
    kd = setting in ("k", "r")
    config = npr.PruneConfig(
        criterion=criterion, criterion_options=options, ratio=HIGH if setting in FINETUNED else LOW, steps=1,
        tolerance=1.0, finetune_epochs=FINETUNE_EPOCHS if setting in FINETUNED else 0,
        learning_rate=KD_LEARNING_RATE if kd else LEARNING_RATE, distill_weight=KD_WEIGHT if kd else 0.0,
        reconstruct=setting in ("c", "r"), progress=False, latency_runs=5, seed=seed,
    )
    result = npr.prune(dense, task, config)
    widths = {layer["name"]: layer["width_after"] for layer in result.report["layers"]}
    width_text = "/".join(str(widths[name]) for name in HIDDEN)
    return result.report["after"]["accuracy"], width_text, result.report["after"]["params"]


# --------------------------------------------------------------------------- Torch-Pruning


def tp_variants(tp) -> list[tuple[str, object]]:
    """(label, importance factory); factories so every run gets a fresh importance object."""
    return [
        ("magnitude L1", lambda: tp.importance.MagnitudeImportance(p=1)),
        ("magnitude L2", lambda: tp.importance.MagnitudeImportance(p=2)),
        ("taylor", lambda: tp.importance.TaylorImportance()),
        ("random", lambda: tp.importance.RandomImportance()),
    ]


def run_torch_pruning(tp, dense: nn.Module, task, label: str, make_importance, setting: str, seed: int):
    ratio = HIGH if setting in FINETUNED else LOW
    model = copy.deepcopy(dense)
    model.eval()
    importance = make_importance()
    if label == "taylor":
        # As in Torch-Pruning's README: gradients of the loss on calibration data, then step().
        model.zero_grad(set_to_none=True)
        for batch in task.calibration_batches():
            task.loss(model, batch).backward()
    torch.manual_seed(seed)  # RandomImportance draws from the global generator
    pruner = tp.pruner.MetaPruner(model, task.example_input(), importance, pruning_ratio=ratio,
                                  ignored_layers=[model.fc3])
    pruner.step()
    model.zero_grad(set_to_none=True)
    if setting == "a":
        finetune(model, task, epochs=FINETUNE_EPOCHS, learning_rate=LEARNING_RATE, progress=False)
    if setting == "k":
        finetune(model, task, epochs=FINETUNE_EPOCHS, learning_rate=KD_LEARNING_RATE, progress=False,
                 teacher=dense.eval(), distill_weight=KD_WEIGHT)
    return task.evaluate(model, "test"), hidden_widths(model), count_params(model)


# --------------------------------------------------------------------------- torch.nn.utils.prune


def run_ln_structured(dense: nn.Module, task):
    model = copy.deepcopy(dense)
    params_before, bytes_before = count_params(model), state_bytes(model)
    for name in HIDDEN:
        torch_prune.ln_structured(getattr(model, name), "weight", amount=HIGH, n=2, dim=0)
    finetune(model, task, epochs=FINETUNE_EPOCHS, learning_rate=LEARNING_RATE, progress=False)
    acc = task.evaluate(model, "test")
    params_masked, bytes_masked = count_params(model), state_bytes(model)
    zero_rows = "/".join(str(int((getattr(model, n).weight_mask.sum(dim=1) == 0).sum())) for n in HIDDEN)
    for name in HIDDEN:
        torch_prune.remove(getattr(model, name), "weight")
    params_removed, bytes_removed = count_params(model), state_bytes(model)
    info = {
        "params_before": params_before, "params_masked": params_masked, "params_after_remove": params_removed,
        "bytes_before": bytes_before, "bytes_masked": bytes_masked, "bytes_after_remove": bytes_removed,
        "zero_rows": zero_rows,
    }
    return acc, hidden_widths(model), params_removed, info


# --------------------------------------------------------------------------- output


def fmt(row: Row) -> str:
    return f"{row.mean:.3f} ± {row.std:.3f}"


def single(values: set) -> str:
    return ", ".join(str(v) for v in sorted(values, key=str))


def render(rows: list[Row], header: list[str], footer: list[str]) -> str:
    best = {}
    for key in SETTINGS:
        candidates = [r for r in rows if r.method == "neuroprune" and r.setting == key]
        if candidates:
            best[key] = max(candidates, key=lambda r: r.mean)
    lines = header + [
        "",
        "| method | criterion | setting | test accuracy (mean ± std) | hidden widths | params |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        setting = CONTEXT_SETTINGS.get(row.setting) or SETTINGS[row.setting]
        acc = fmt(row)
        criterion = row.criterion
        if best.get(row.setting) is row:
            acc, criterion = f"**{acc}**", f"**{criterion}** (best)"
        widths = single(row.widths) + (f" {row.note}" if row.note else "")
        lines.append(f"| {row.method} | {criterion} | {setting} | {acc} | {widths} | {single(row.params)} |")
    return "\n".join(lines + [""] + footer) + "\n"


def targets(rows: list[Row], dense: Row, ln_info: dict | None) -> list[str]:
    def pick(method, setting):
        return [r for r in rows if r.method == method and r.setting == setting]

    out = ["## Targets", ""]
    best_a = max((r for s in FINETUNED for r in pick("neuroprune", s)), key=lambda r: r.mean)
    gap = dense.mean - best_a.mean
    verdict = "MET" if gap <= 0.015 else "NOT MET"
    scratch = pick("small dense", "scratch")
    scratch_text = (f" For scale: the same 32/16 network trained from scratch for {DENSE_EPOCHS} epochs reaches "
                    f"{fmt(scratch[0])} ({(dense.mean - scratch[0].mean) * 100:+.2f} points below dense).") if scratch else ""
    out.append(f"1. 75 % + {FINETUNE_EPOCHS} epochs, best neuroprune criterion within 1.5 points of dense: "
               f"**{verdict}** — {best_a.criterion} ({SETTINGS[best_a.setting]}) {fmt(best_a)} vs dense {fmt(dense)} "
               f"(gap {gap * 100:+.2f} points).{scratch_text}")
    c_rows = sorted(pick("neuroprune", "c"), key=lambda r: -r.mean)
    best_c = c_rows[0]
    passing = [r.criterion for r in c_rows if r.mean >= 0.95]
    verdict = "MET" if best_c.mean >= 0.95 else "NOT MET"
    out.append(f"2. retrain-free 50 % with reconstruction >= 0.95: **{verdict}** — best {best_c.criterion} "
               f"{fmt(best_c)}; criteria at >= 0.95: {', '.join(passing) or 'none'}.")
    out.append("3. Torch-Pruning 1.6.1 for context:")
    out.append(f"   - earlier on this machine: dense {TP_REFERENCE['dense']}; 75 %+5 ep: "
               + ", ".join(f"{k} {v}" for k, v in TP_REFERENCE["a"].items())
               + "; 50 % no recovery: " + ", ".join(f"{k} {v}" for k, v in TP_REFERENCE["b"].items()) + ".")
    for key in TP_SETTINGS:
        tp_rows = pick("torch-pruning", key)
        if not tp_rows:
            continue
        npr_rows = {r.criterion: r for r in pick("neuroprune", key)}
        parts = []
        for r in tp_rows:
            twin = npr_rows.get(r.criterion)
            twin_text = f" (neuroprune {fmt(twin)})" if twin else ""
            parts.append(f"{r.criterion} {fmt(r)}{twin_text}")
        out.append(f"   - this run, {SETTINGS[key]}: dense {fmt(dense)}; " + "; ".join(parts) + ".")
    if ln_info:
        shrank = ln_info["params_after_remove"] < ln_info["params_before"]
        out.append(
            f"4. torch.nn.utils.prune.ln_structured (75 %, masks): parameters {ln_info['params_before']} before, "
            f"{ln_info['params_masked']} while masked (weight_orig + weight_mask buffer; state_dict "
            f"{ln_info['bytes_before']} -> {ln_info['bytes_masked']} bytes), {ln_info['params_after_remove']} after "
            f"prune.remove ({ln_info['bytes_after_remove']} bytes); zeroed rows {ln_info['zero_rows']}, biases "
            f"of those rows stay trainable. Model got smaller: **{'yes' if shrank else 'no'}**."
        )
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds 0..N-1 (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 seeds")
    parser.add_argument("--out", default="benchmarks/results/digits_mlp.md",
                        help="Markdown output file; per-seed numbers go next to it as .json ('' = none)")
    parser.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning (e.g. when not installed)")
    args = parser.parse_args(argv)
    seeds = list(range(2 if args.quick else args.seeds))
    if not seeds:
        parser.error("--seeds must be >= 1")

    tp = None
    if not args.no_tp:
        try:
            import torch_pruning as tp  # noqa: PLC0415
        except ImportError:
            print("torch_pruning not installed: Torch-Pruning rows skipped", file=sys.stderr)
    tp_version = "not run"
    if tp is not None:
        try:
            from importlib.metadata import version  # noqa: PLC0415
            tp_version = version("torch-pruning")
        except Exception:  # pragma: no cover - metadata missing
            tp_version = getattr(tp, "__version__", "?")

    data = load_digits(seed=0)
    variants = neuroprune_variants()
    dense_row = Row("dense", "-", "dense")
    scratch_row = Row("small dense", "-", "scratch")
    npr_rows = {(label, s): Row("neuroprune", label, s) for s in SETTINGS for label, _, _ in variants}
    tp_rows = {(label, s): Row("torch-pruning", label, s) for s in TP_SETTINGS for label, _ in (tp_variants(tp) if tp else [])}
    ln_row = Row("torch.nn.utils.prune", "ln_structured L2 (mask)", "a", note="(masks; 96/48 rows zeroed)")
    ln_info = None
    start = time.perf_counter()

    for seed in seeds:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        task = ClassificationTask(data, seed=seed)
        dense = build_model("mlp")
        finetune(dense, task, epochs=DENSE_EPOCHS, learning_rate=LEARNING_RATE, progress=False)
        dense_state = copy.deepcopy(dense.state_dict())
        dense_row.add(task.evaluate(dense, "test"), hidden_widths(dense), count_params(dense))
        torch.manual_seed(seed)
        small = build_model("mlp", hidden=(32, 16))
        finetune(small, task, epochs=DENSE_EPOCHS, learning_rate=LEARNING_RATE, progress=False)
        scratch_row.add(task.evaluate(small, "test"), hidden_widths(small), count_params(small))

        for label, criterion, options in variants:
            for setting in SETTINGS:
                acc, widths, params = run_neuroprune(dense, task, criterion, options, setting, seed)
                npr_rows[(label, setting)].add(acc, widths, params)
        if tp is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for label, make in tp_variants(tp):
                    for setting in TP_SETTINGS:
                        acc, widths, params = run_torch_pruning(tp, dense, task, label, make, setting, seed)
                        tp_rows[(label, setting)].add(acc, widths, params)
        acc, widths, params, ln_info = run_ln_structured(dense, task)
        ln_row.add(acc, widths, params)
        if any(not torch.equal(v, dense.state_dict()[k]) for k, v in dense_state.items()):
            raise RuntimeError("the dense model was modified by a pruning run")
        print(f"seed {seed}: dense {dense_row.accs[-1]:.3f}, {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    elapsed = time.perf_counter() - start
    rows = [dense_row, scratch_row]
    for setting in SETTINGS:
        rows += [npr_rows[(label, setting)] for label, _, _ in variants]
        rows += [r for (label, s), r in tp_rows.items() if s == setting]
        if setting == "a":
            rows.append(ln_row)

    expected = {"a": "32/16", "b": "64/32", "c": "64/32", "k": "32/16", "r": "32/16"}
    width_checks = []
    for row in rows:
        if row.method in ("neuroprune", "torch-pruning") and row.widths != {expected[row.setting]}:
            width_checks.append(f"{row.method} {row.criterion} {row.setting}: widths {single(row.widths)}")
    tp_widths = sorted({(SETTINGS[r.setting], single(r.widths)) for r in tp_rows.values()})
    npr_widths = sorted({(SETTINGS[r.setting], single(r.widths)) for r in npr_rows.values()})

    command = ".venv/bin/python benchmarks/digits_mlp.py " + (" ".join(sys.argv[1:]) if argv is None else " ".join(argv))
    header = [
        "# Digits MLP: neuroprune criteria vs Torch-Pruning vs torch.nn.utils.prune",
        "",
        f"- Model `mlp` 64-128-64-10 (ReLU) on scikit-learn digits, fixed split `load_digits(seed=0)` "
        f"({len(data.x_train)} train / {len(data.x_val)} val / {len(data.x_test)} test); "
        f"seeds {seeds} vary initialisation and shuffles.",
        f"- Dense: {DENSE_EPOCHS} epochs Adam lr {LEARNING_RATE:g} batch 64 (`neuroprune.torch.recover.finetune`). "
        f"Every method starts from the same trained dense model per seed; fine-tuning is always "
        f"{FINETUNE_EPOCHS} epochs of the same `finetune` (KD settings: lr {KD_LEARNING_RATE:g}, cross-entropy "
        f"blended with the KL divergence to the dense model's predictions, weight {KD_WEIGHT}, temperature 4).",
        "- One-shot pruning of the hidden layers fc1 (128) and fc2 (64); fc3 (classifier) kept. neuroprune: "
        "`PruneConfig(ratio, steps=1, tolerance=1.0)` (no rollback); Torch-Pruning: `MetaPruner(pruning_ratio, "
        "ignored_layers=[fc3])`, Taylor gradients from one backward per calibration batch (same "
        "`task.calibration_batches()` as neuroprune).",
        "- Test accuracy, mean ± sample std over seeds. **bold** = best neuroprune criterion per setting.",
        f"- torch {torch.__version__}, torch-pruning {tp_version}, Python {platform.python_version()}, "
        f"threads {torch.get_num_threads()} (of {os.cpu_count()} CPUs), wall time {elapsed:.0f} s.",
        f"- Reproduce: `{command.strip()}`",
    ]
    footer = ["## Widths", ""]
    footer.append("- neuroprune: " + "; ".join(f"{s}: {w}" for s, w in npr_widths))
    if tp_rows:
        footer.append("- Torch-Pruning: " + "; ".join(f"{s}: {w}" for s, w in tp_widths))
    footer.append("- check against 32/16 (75 %) and 64/32 (50 %): "
                  + ("OK, all equal" if not width_checks else "MISMATCH: " + "; ".join(width_checks)))
    footer.append("")
    footer += targets(rows, dense_row, ln_info)
    text = render(rows, header, footer)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
        raw = os.path.splitext(args.out)[0] + ".json"
        with open(raw, "w", encoding="utf-8") as handle:
            json.dump({"seeds": seeds, "threads": torch.get_num_threads(), "rows": [
                {"method": r.method, "criterion": r.criterion,
                 "setting": CONTEXT_SETTINGS.get(r.setting) or SETTINGS[r.setting],
                 "test_accuracy_per_seed": r.accs, "hidden_widths": sorted(r.widths), "params": sorted(r.params)}
                for r in rows]}, handle, indent=1)
        print(f"written to {args.out} and {raw} (per-seed accuracies)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
