"""Public architectures: neuroprune vs. Torch-Pruning 1.6.1 at a 40 % ratio, in one run.

For every architecture of ``tests/public_arch.py`` (torchvision and timm models with random
weights at small input sizes, plus torch's own transformer blocks), both tools remove 40 % of the
units of every group / channels of every layer by weight magnitude (L1 for Torch-Pruning's
``MagnitudePruner``, neuroprune's ``magnitude`` criterion with ``ignore_untraceable=True``).
Columns:

* status: ``ok``, ``ok, N frozen`` (modules frozen by ``ignore_untraceable``), or the error;
* params kept: parameters after / before;
* forward OK: the pruned model runs and every output keeps its shape; for neuroprune also
  masked == removed (max difference < 1e-4 of the output's scale);
* reload OK: neuroprune ``save`` -> ``load`` onto a freshly built model gives identical outputs;
  Torch-Pruning ``tp.state_dict`` -> ``torch.save`` / ``torch.load`` -> ``tp.load_state_dict``
  (its own, pickled format) likewise.

Needs torchvision, timm and torch-pruning (``make bench-architectures`` builds that environment;
see the Makefile). Writes ``benchmarks/results/architectures.md`` and ``.json``.

    .venv-vision/bin/python benchmarks/architectures.py            # about 10 minutes on 2 busy cores
    .venv-vision/bin/python benchmarks/architectures.py --only resnet18,torch.Transformer
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the shared architecture list and checks
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from public_arch import ARCHITECTURES, prune_with_neuroprune, prune_with_torch_pruning  # noqa: E402
from torchvision_compat import import_torchvision  # noqa: E402

RATIO = 0.4
RESULTS = ROOT / "benchmarks" / "results"


def _short_error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return text[:140] + ("..." if len(text) > 140 else "")


def run_neuroprune(arch) -> dict:
    try:
        outcome = prune_with_neuroprune(arch, ratio=RATIO, ignore_untraceable=True)
    except Exception as error:  # recorded in the table, not raised: one run covers every model
        from neuroprune import NeuropruneError

        kind = "refused" if isinstance(error, NeuropruneError) else "crashed"
        return {"status": f"{kind}: {_short_error(error)}", "params_kept": None, "forward_ok": False,
                "reload_ok": False}
    frozen = len(outcome.frozen_modules)
    return {"status": "ok" if not frozen else f"ok, {frozen} frozen", "params_kept": outcome.kept,
            "forward_ok": outcome.shapes_kept and outcome.masked_max_error < 1e-4, "reload_ok": outcome.reload_exact,
            "groups": outcome.groups, "masked_max_error": outcome.masked_max_error,
            "frozen_modules": outcome.frozen_modules}


def _torch_pruning_here(name: str) -> dict:
    arch = next(a for a in ARCHITECTURES if a.name == name)
    try:
        return prune_with_torch_pruning(arch, ratio=RATIO)
    except Exception as error:
        return {"status": "crashed: " + _short_error(error), "params_kept": None, "forward_ok": False,
                "reload_ok": False}


def _limit_memory(gib: float) -> None:
    import resource

    limit = int(gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_torch_pruning(arch, *, memory_gib: float, timeout: float) -> dict:
    """In a child process with a memory cap and a time limit: on swin_t, Torch-Pruning's graph
    grew past 20 GB on this machine."""
    failed = {"params_kept": None, "forward_ok": False, "reload_ok": False}
    try:
        child = subprocess.run([sys.executable, __file__, "--torch-pruning-one", arch.name], capture_output=True,
                               text=True, timeout=timeout, preexec_fn=lambda: _limit_memory(memory_gib))
    except subprocess.TimeoutExpired:
        return {"status": f"crashed: no result within {timeout:.0f} s", **failed}
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        tail = (child.stderr.strip().splitlines() or ["?"])[-1][:100]
        return {"status": f"crashed (exit {child.returncode}, {memory_gib:.0f} GiB cap): {tail}", **failed}
    return json.loads(lines[-1])


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def _kept(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def write_markdown(rows: list[dict], seconds: float, command: str) -> str:
    from importlib.metadata import version

    tv = import_torchvision()
    lines = [
        "# Public architectures: neuroprune vs. Torch-Pruning",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC in one run of `{command}` ({seconds:.0f} s) on "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, torchvision {tv.__version__}, "
        f"timm {version('timm')}, torch-pruning {version('torch-pruning')}. Random weights "
        "(`weights=None` / `pretrained=False`), small inputs, "
        f"{int(RATIO * 100)} % of every group's units (neuroprune, `magnitude`, `ignore_untraceable=True`) or of "
        "every layer's channels (Torch-Pruning `MagnitudePruner`, L1, output layers ignored) removed.",
        "",
        "forward OK: runs and keeps every output's shape (neuroprune also masked == removed); reload OK: "
        "identical outputs after saving and loading onto a freshly built model (neuroprune: safetensors + "
        "plan; Torch-Pruning: its pickled `tp.state_dict`). `ok, N frozen`: N modules could not be followed "
        "and were frozen (listed below).",
        "",
        "| model | source | neuroprune | params kept | forward OK | reload OK | Torch-Pruning | params kept "
        "| forward OK | reload OK | note |",
        "| --- | --- | --- | ---: | --- | --- | --- | ---: | --- | --- | --- |",
    ]
    for row in rows:
        n, t = row["neuroprune"], row["torch_pruning"]
        lines.append(
            f"| {row['name']} | {row['source']} | {n['status']} | {_kept(n['params_kept'])} | {_yes(n['forward_ok'])} "
            f"| {_yes(n['reload_ok'])} | {t['status']} | {_kept(t['params_kept'])} | {_yes(t['forward_ok'])} "
            f"| {_yes(t['reload_ok'])} | {row['note']} |")
    counts = {
        "neuroprune correct (forward and reload OK)": sum(r["neuroprune"]["forward_ok"] and r["neuroprune"]["reload_ok"]
                                                          for r in rows),
        "Torch-Pruning correct (forward and reload OK)": sum(r["torch_pruning"]["forward_ok"]
                                                             and r["torch_pruning"]["reload_ok"] for r in rows),
    }
    lines += ["", *(f"- {k}: {v} of {len(rows)}" for k, v in counts.items()), "", "## Frozen modules", ""]
    for row in rows:
        frozen = row["neuroprune"].get("frozen_modules") or {}
        if frozen:
            kinds = sorted({why.split(": ", 1)[-1] if "(" in why else why for why in frozen.values()})
            lines.append(f"- **{row['name']}** ({len(frozen)}): " + "; ".join(kinds[:3]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated architecture names")
    parser.add_argument("--out", default=str(RESULTS / "architectures.md"))
    parser.add_argument("--tp-memory-gib", type=float, default=8.0, help="address-space cap of each Torch-Pruning run")
    parser.add_argument("--tp-timeout", type=float, default=300.0, help="seconds per Torch-Pruning run")
    parser.add_argument("--torch-pruning-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.torch_pruning_one:
        import_torchvision()
        print(json.dumps(_torch_pruning_here(args.torch_pruning_one), default=str))
        return 0
    import_torchvision()
    chosen = set(args.only.split(",")) if args.only else None
    start = time.perf_counter()
    rows = []
    for arch in ARCHITECTURES:
        if chosen and arch.name not in chosen:
            continue
        began = time.perf_counter()
        row = {"name": arch.name, "source": arch.source, "note": "",
               "neuroprune": run_neuroprune(arch),
               "torch_pruning": run_torch_pruning(arch, memory_gib=args.tp_memory_gib, timeout=args.tp_timeout)}
        row["seconds"] = time.perf_counter() - began
        rows.append(row)
        print(f"{arch.name:32s} neuroprune {row['neuroprune']['status']:14s} "
              f"{_kept(row['neuroprune']['params_kept']):>8s}  torch-pruning {row['torch_pruning']['status'][:40]:40s} "
              f"{_kept(row['torch_pruning']['params_kept']):>8s}  {row['seconds']:.1f}s", flush=True)
    command = "python benchmarks/architectures.py" + (f" --only {args.only}" if args.only else "")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(write_markdown(rows, time.perf_counter() - start, command))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
