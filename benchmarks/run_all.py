"""Run every benchmark and assemble BENCHMARKS.md (one command; ``make bench`` runs it).

Each benchmark script runs as its own subprocess, one after the other (so that they do not compete
for the CPUs), from the repository root, and writes its Markdown (and plots) into
``benchmarks/results/``. A failing benchmark does not stop the others: its exit code and the last
lines of its stderr go into BENCHMARKS.md. Then the top-level ``BENCHMARKS.md`` is assembled from
the result files of *all* benchmarks: an introduction (machine, versions, date, how to
reproduce), a table of contents, every benchmark's Markdown (headings shifted one level down,
relative links and plots re-pointed to ``benchmarks/results/``), and a Targets section that links
to every benchmark's own verdicts.

    .venv/bin/python benchmarks/run_all.py                        # everything (minilm alone ~20 min)
    .venv/bin/python benchmarks/run_all.py --quick                # smoke runs of everything
    .venv/bin/python benchmarks/run_all.py --only digits_sweep,export_latency
    .venv/bin/python benchmarks/run_all.py --reuse                # run nothing, (re)assemble BENCHMARKS.md
                                                                  # from the existing result files
    .venv/bin/python benchmarks/run_all.py --reuse --only minilm  # run minilm only if it has no result yet

``--only`` chooses which benchmarks run; the others keep their existing result files, which are
still put into BENCHMARKS.md (marked with the time they were written). Logs of every run are in
``benchmarks/results/logs/``; the status of the last run of every benchmark in
``benchmarks/results/run_all.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
LOGS = RESULTS / "logs"
STATE = RESULTS / "run_all.json"
DOCUMENT = ROOT / "BENCHMARKS.md"
STDERR_TAIL = 25


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str  # used when the result file has no H1
    what: str
    runtime: str
    env: tuple[tuple[str, str], ...] = ()
    python: str = ".venv/bin/python"  # relative to the checkout; another environment where a benchmark needs one
    runs: str = ""  # the script, when it is not NAME.py (one script, several benchmarks)
    args: tuple[str, ...] = ()

    @property
    def script(self) -> Path:
        return BENCH_DIR / f"{self.runs or self.name}.py"

    @property
    def result(self) -> Path:
        return RESULTS / f"{self.name}.md"

    def command(self, quick: bool) -> list[str]:
        return [f"benchmarks/{self.script.name}", *self.args, *(["--quick"] if quick else [])]

    def shown_command(self, quick: bool) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env)
        return (env + " " if env else "") + " ".join([self.python, *self.command(quick)])


BENCHMARKS = (
    Benchmark("digits_mlp", "Digits MLP", "every neuroprune criterion vs. Torch-Pruning vs. ln_structured at 50 % "
              "and 75 % (5 seeds)", "~3 min (--quick ~1 min)"),
    Benchmark("digits_sweep", "Digits MLP sweep", "accuracy vs. fraction removed (0.25-0.9), every criterion with and "
              "without reconstruction, same fine-tuning budget for every tool; size and latency of masks vs. removal",
              "~1 min (--quick ~30 s)"),
    Benchmark("cnn_speed", "CNN speed", "ResNet-50/18/56, MobileNetV2: pruning time and peak memory per stage, MACs, "
              "parameters, latency at batch 1 and 32, speed-up vs. MAC reduction, against Torch-Pruning",
              "~5-7 min (--quick ~2 min)"),
    Benchmark("budget_search", "Budget search", "searched per-layer allocation vs. uniform ratios at equal FLOPs",
              "~7 min (--quick: 1 seed)"),
    Benchmark("export_latency", "Export latency", "pruned zoo models in PyTorch and onnxruntime after "
              "`export_onnx`, dense vs. pruned, batch 1 and 32", "~1.5 min (--quick ~20 s)"),
    Benchmark("minilm", "MiniLM", "transformer benchmark: FFN neurons and heads of all-MiniLM-L6-v2, neuroprune vs. "
              "Torch-Pruning (quality, latency, stage times)", "~20 min (--quick not measured)",
              env=(("HF_HUB_OFFLINE", "1"),)),
    Benchmark("llm_width", "LLM width", "a small LLaMA-style model trained here: perplexity with 20/35/50 % of FFN "
              "neurons or 25 % of KV groups removed, retrain-free and distilled, vs. Torch-Pruning; tokens/s",
              "~60 min, 46 of them training the model once (--quick ~8 min)", env=(("HF_HUB_OFFLINE", "1"),)),
    Benchmark("reach_target", "Reaching the asked target", "MNIST-shaped MLP 784-500-300-10, --ratio 0.8 with 5 "
              "epochs of fine-tuning: delivered reduction and test error of the default command vs. Torch-Pruning "
              "with the same fine-tuning budget (3 seeds)", "~2 min"),
    Benchmark("selection_speed", "Selection speed", "selecting units at LLaMA-7B's FFN shape (32 x 11,008), today's "
              "vectorised code vs. the per-unit loops it replaced (same units chosen)", "~30 s"),
    Benchmark("budget_speed", "Budget search speed", "ResNet-56 budget search with the analytic cost model vs. "
              "copying and re-tracing the model for every probe (same ratios found)", "~6 min"),
    Benchmark("architectures", "Public architectures", "39 torchvision / timm / torch.nn models with random weights, "
              "40 % of every group: status, parameters kept, forward and reload, neuroprune vs. Torch-Pruning "
              "(needs the vision environment: `make bench-architectures` builds it)", "~14 min",
              python=".venv-vision/bin/python"),
    Benchmark("keras_applications", "Keras applications", "keras.applications models (MobileNetV2/V3, ResNet50, "
              "DenseNet121, EfficientNetB0, ConvNeXtTiny, VGG16), random weights trained one epoch on digits, half of "
              "every group: groups, what is kept whole, masked vs pruned, parameters, FLOPs, accuracy, reload",
              "~6 min", env=(("KERAS_BACKEND", "torch"),)),
    Benchmark("keras_vs_torch", "Keras vs. torch", "the write-up MLP and a small CNN pruned by 75 % in Keras 3 and the "
              "same networks in PyTorch (5 seeds): accuracy after the same fine-tuning, parameters, size, latency; "
              "with plain fine-tuning vs. TF-MOT's prune_low_magnitude (needs /work/venv-tf)",
              "~9 min (--quick: 2 seeds)", env=(("KERAS_BACKEND", "torch"),)),
    Benchmark("keras_vs_tfmot", "Keras vs. TF-MOT", "the write-up MLP at 75 % of its hidden neurons, with "
              "reconstruction and distillation in the same 5 fine-tuning epochs, vs. TensorFlow Model Optimization's "
              "prune_low_magnitude at 75 % and at the same kernel sparsity (needs /work/venv-tf, see "
              "benchmarks/README.md)", "~4 min",
              env=(("KERAS_BACKEND", "torch"),), runs="keras_vs_torch",
              args=("--models", "mlp", "--criteria", "magnitude", "--reconstruct", "--distill", "0.5", "--out",
                    "keras_vs_tfmot")),
    Benchmark("keras_cnn_vs_tfmot", "Keras CNN vs. TF-MOT", "the small Keras CNN at 75 % of its channels and "
              "neurons, with distillation (no reconstruction) in the same 5 fine-tuning epochs, vs. TF-MOT's "
              "prune_low_magnitude at 75 % and at the same kernel sparsity (needs /work/venv-tf)", "~4 min",
              env=(("KERAS_BACKEND", "torch"),), runs="keras_vs_torch",
              args=("--models", "cnn", "--criteria", "magnitude", "--distill", "0.5", "--out", "keras_cnn_vs_tfmot")),
    Benchmark("distributed", "Many processes", "statistics pass and full prune on 1 vs. 2 processes under torchrun "
              "(gloo, CPU), same plan", "~3 min"),
    Benchmark("peak_memory", "Peak memory", "peak RSS of a prune of a LLaMA-style decoder, one process per run "
              "(--sizes large: the 8 GiB model, opt-in)", "~15 min"),
)


# --------------------------------------------------------------------------- running


def _pump(stream, sink, echo_prefix: str | None, tail: deque | None) -> None:
    for line in iter(stream.readline, ""):
        sink.write(line)
        sink.flush()
        if tail is not None:
            tail.append(line.rstrip("\n"))
        if echo_prefix is not None:
            sys.stderr.write(f"{echo_prefix}{line}")
            sys.stderr.flush()
    stream.close()


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the benchmark and whatever it started (it runs in a process group of its own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        proc.kill()


def run_one(bench: Benchmark, quick: bool, timeout: float | None) -> dict:
    """Run one benchmark script; its stdout and stderr go to logs/, stderr is echoed."""
    LOGS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **dict(bench.env))
    env.setdefault("PYTHONUNBUFFERED", "1")
    python = sys.executable if bench.python == ".venv/bin/python" else str(ROOT / bench.python)
    cmd = [python, *bench.command(quick)]
    started = dt.datetime.now(dt.timezone.utc)
    print(f"[run_all {time.strftime('%H:%M:%S')}] {bench.name}: {bench.shown_command(quick)}", file=sys.stderr,
          flush=True)
    tail: deque[str] = deque(maxlen=STDERR_TAIL)
    start = time.perf_counter()
    with open(LOGS / f"{bench.name}.stdout.log", "w") as out_log, open(LOGS / f"{bench.name}.stderr.log", "w") as err_log:
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    bufsize=1, start_new_session=True)  # own process group: killed as a whole
        except OSError as error:
            return {"status": "failed", "returncode": None, "stderr_tail": [f"could not start: {error}"],
                    "seconds": 0.0, "started": started.isoformat(timespec="seconds"), "quick": quick,
                    "command": bench.shown_command(quick)}
        threads = [threading.Thread(target=_pump, args=(proc.stdout, out_log, None, None), daemon=True),
                   threading.Thread(target=_pump, args=(proc.stderr, err_log, f"  [{bench.name}] ", tail), daemon=True)]
        for t in threads:
            t.start()
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            returncode = proc.wait()
            tail.append(f"run_all: killed after the --timeout of {timeout:.0f} s")
        except BaseException:  # Ctrl-C or SIGTERM: do not leave the benchmark (or its children) running
            _kill_group(proc)
            proc.wait()
            raise
        for t in threads:
            t.join()
    seconds = time.perf_counter() - start
    fresh = bench.result.exists() and bench.result.stat().st_mtime >= started.timestamp() - 1
    status = "ok" if returncode == 0 and fresh else "failed"
    if returncode == 0 and not fresh:
        tail.append(f"run_all: exit code 0 but {bench.result.relative_to(ROOT)} was not written")
    print(f"[run_all {time.strftime('%H:%M:%S')}] {bench.name}: {status} (exit {returncode}, {seconds:.0f} s)",
          file=sys.stderr, flush=True)
    return {"status": status, "returncode": returncode, "stderr_tail": list(tail) if status != "ok" else [],
            "seconds": seconds, "started": started.isoformat(timespec="seconds"), "quick": quick,
            "command": bench.shown_command(quick)}


# --------------------------------------------------------------------------- assembling


_LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)(\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _repoint(target: str, base: Path) -> str:
    """A link relative to benchmarks/results/ -> relative to ``base`` (the folder of BENCHMARKS.md)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith(("#", "/")):
        return target
    return Path(os.path.relpath(RESULTS / target, base)).as_posix()


def adapt(markdown: str, anchor: str, base: Path = ROOT) -> tuple[str | None, str, bool]:
    """(H1 title or None, body with headings one level down and links re-pointed, has a Targets part)."""
    title, body, in_fence, has_targets = None, [], False, False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            body.append(line)
            continue
        if in_fence:
            body.append(line)
            continue
        heading = re.match(r"^(#{1,5})\s+(.*)$", line)
        if heading and heading.group(1) == "#" and title is None:
            title = heading.group(2).strip()
            continue
        if heading or line.strip().rstrip(":").lower() == "targets":
            text = heading.group(2) if heading else line.strip().rstrip(":")
            if text.strip().lower() == "targets" and not has_targets:
                body.append(f'<a id="{anchor}-targets"></a>')
                body.append("")
                has_targets = True
            if heading:
                line = "#" + line
        body.append(_LINK.sub(lambda m: f"{m.group(1)}({_repoint(m.group(2), base)}{m.group(3) or ''})", line))
    return title, "\n".join(body).strip("\n"), has_targets


def _when(path: Path) -> str:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _stamp(iso: str) -> str:
    try:
        return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(os.cpu_count())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def assemble(state: dict, ran_now: set[str], base: Path = ROOT) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    present = [b for b in BENCHMARKS if b.script.exists() or b.result.exists() or b.name in state]
    sections, toc, overview, targets = [], [], [], []
    for index, bench in enumerate(present, 1):
        anchor = f"bench-{bench.name}"
        record = state.get(bench.name)
        title, body, has_targets = (None, "", False)
        if bench.result.exists():
            title, body, has_targets = adapt(bench.result.read_text(encoding="utf-8"), anchor, base)
        heading = f"{index}. {title or bench.title}"
        toc.append(f"{index}. [{title or bench.title}](#{anchor})")
        lines = [f'<a id="{anchor}"></a>', "", f"## {heading}", ""]
        status_bits = []
        failed = record is not None and record.get("status") == "failed"
        if failed:
            status = f"**FAILED** (exit {record.get('returncode')})"
        elif bench.result.exists():
            status = "ok" + ("" if bench.name in ran_now else " (result of an earlier run)")
        elif not bench.script.exists():
            status = "script missing"
        else:
            status = "not run yet"
        if record and record.get("quick"):
            status_bits.append("`--quick` run")
        command = (record or {}).get("command") or bench.shown_command(False)
        lines.append(f"Script `benchmarks/{bench.script.name}` — {bench.what}. Command: `{command}`"
                     + (f"; last run {_stamp(record['started'])}, "
                        f"{_duration(record.get('seconds'))}" if record and record.get("started") else "")
                     + (f"; result file `benchmarks/results/{bench.result.name}` written {_when(bench.result)}"
                        if bench.result.exists() else "")
                     + f". Status: {status}{' (' + ', '.join(status_bits) + ')' if status_bits else ''}.")
        lines.append("")
        if failed:
            lines += [f"The last run of `{bench.name}` failed with exit code {record.get('returncode')}; last lines of "
                      f"its stderr (full log: `benchmarks/results/logs/{bench.name}.stderr.log`):", "", "```text",
                      *(record.get("stderr_tail") or ["(no stderr)"]), "```", ""]
            if bench.result.exists():
                lines += [f"The result below is from an earlier successful run (written {_when(bench.result)}).", ""]
        if body:
            lines += [body, ""]
        elif not failed:
            lines += [f"No result yet: run `{bench.shown_command(False)}`.", ""]
        sections.append("\n".join(lines))
        overview.append(f"| [{title or bench.title}](#{anchor}) | `benchmarks/{bench.script.name}` | {status}"
                        f"{' (quick)' if record and record.get('quick') else ''} | "
                        f"{_when(bench.result) if bench.result.exists() else '-'} | {bench.runtime} |")
        link = f"[{title or bench.title}](#{anchor})"
        if has_targets:
            targets.append(f"- {link}: [its Targets part](#{anchor}-targets)")
        elif body:
            targets.append(f"- {link}: no Targets part; see its tables and notes")
        else:
            targets.append(f"- {link}: no result ({status})")

    load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    intro = [
        "# neuroprune benchmarks",
        "",
        "Generated by `benchmarks/run_all.py` (do not edit by hand; rerun it). Every table below was measured by "
        "the script named in its section, on the machine described here; each section gives the command that "
        "reproduces it and how it was measured (threads, seeds, runs, medians).",
        "",
        f"- Machine: {_cpu_model()}, `nproc` = {_nproc()}, Linux {platform.release()}; shared with other jobs, so "
        "absolute times are noisy: timings are medians, and scripts that compare tools time them interleaved "
        "(round-robin in one loop) so that machine load hits all of them alike. Load average when this file was "
        f"assembled (1/5/15 min): {load}.",
        f"- Versions: Python {platform.python_version()}, torch {_version('torch')}, neuroprune "
        f"{_version('neuroprune')}, torch-pruning {_version('torch-pruning')}, onnxruntime "
        f"{_version('onnxruntime')}, onnx {_version('onnx')}, transformers {_version('transformers')}.",
        f"- Assembled {now.strftime('%Y-%m-%d %H:%M UTC')}; benchmarks run in this invocation: "
        f"{', '.join(sorted(ran_now)) or 'none (all results reused)'}.",
        "- Reproduce everything: `make bench` (= `.venv/bin/python benchmarks/run_all.py`); smoke run: "
        "`.venv/bin/python benchmarks/run_all.py --quick`; some: `--only digits_sweep,export_latency`; "
        "reassemble this file from existing results without running anything: `--reuse`. Result files, plots and "
        "logs are in `benchmarks/results/`.",
        "",
        "## Contents",
        "",
        "| benchmark | script | status | result written | run time |",
        "|---|---|---|---|---|",
        *overview,
        "",
        *toc,
        f"{len(present) + 1}. [Targets](#targets)",
        "",
    ]
    outro = ["<a id=\"targets\"></a>", "", "## Targets", "",
             "Where each benchmark states its targets and whether they are met (nothing is extracted "
             "automatically; follow the links):", "", *targets, ""]
    return "\n".join(intro) + "\n" + "\n".join(sections) + "\n" + "\n".join(outro)


# --------------------------------------------------------------------------- main


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)  # so that a killed run_all stops its running benchmark too
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="benchmarks: " + ", ".join(b.name for b in BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark (smoke runs)")
    parser.add_argument("--only", default=None, help="comma-separated benchmarks to run (default: all present)")
    parser.add_argument("--reuse", action="store_true",
                        help="do not rerun a benchmark whose result file exists; alone, it runs nothing and only "
                             "assembles BENCHMARKS.md; with --only, the named benchmarks that have no result yet run")
    parser.add_argument("--timeout", type=float, default=None, help="seconds after which a benchmark is killed")
    parser.add_argument("--out", default=str(DOCUMENT), help="the assembled document (default BENCHMARKS.md)")
    args = parser.parse_args(argv)

    known = {b.name: b for b in BENCHMARKS}
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}")
        selected = [known[n] for n in names]
    else:
        selected = list(BENCHMARKS)

    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        state = json.loads(STATE.read_text()) if STATE.exists() else {}
    except (OSError, json.JSONDecodeError):
        state = {}
    ran_now: set[str] = set()
    failures = 0
    for bench in selected:
        if not bench.script.exists():
            if args.only:
                print(f"[run_all] {bench.name}: benchmarks/{bench.script.name} does not exist", file=sys.stderr)
                state[bench.name] = {"status": "failed", "returncode": None, "quick": args.quick,
                                     "stderr_tail": [f"benchmarks/{bench.script.name} does not exist"],
                                     "command": bench.shown_command(args.quick)}
                failures += 1
            continue  # e.g. minilm.py not written yet: skipped quietly in a full run
        if args.reuse and bench.result.exists():
            print(f"[run_all] {bench.name}: reusing benchmarks/results/{bench.result.name} "
                  f"({_when(bench.result)})", file=sys.stderr)
            continue
        if args.reuse and not args.only:
            print(f"[run_all] {bench.name}: no result file; not run (--reuse without --only runs nothing)",
                  file=sys.stderr)
            continue
        record = run_one(bench, args.quick, args.timeout)
        state[bench.name] = record
        ran_now.add(bench.name)
        failures += record["status"] != "ok"
        STATE.write_text(json.dumps(state, indent=1))  # after every benchmark, in case of Ctrl-C
    STATE.write_text(json.dumps(state, indent=1))

    out = Path(args.out)
    out.write_text(assemble(state, ran_now, out.resolve().parent), encoding="utf-8")
    print(f"[run_all] wrote {out} ({failures} failed)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
