"""LLM width pruning: perplexity of a small LLaMA-style model with FFN neurons / KV groups removed.

There is no pretrained decoder to download here, so the benchmark makes one, deterministically:

* **text**: English sentences from the docstrings of Python's standard library on this machine
  (``neuroprune.tasks.text.stdlib_sentences()``: parsed with ``ast``, deduplicated, shuffled with
  seed 0), one document per sentence. ``LMTask`` splits the documents (seed 0) into 10 % test,
  10 % validation and 80 % training documents and packs each split into blocks of 64 tokens;
* **tokenizer**: byte-level BPE with 2048 tokens fitted on the training documents only
  (``neuroprune.models.lm_zoo.train_tokenizer``);
* **model**: ``LlamaForCausalLM`` with hidden size 256, 4 layers, 8 query heads in 4 key/value
  groups (head size 32), FFN 640 (SwiGLU), tied embeddings, 2048 positions max; random init with
  seed 0 (``neuroprune.models.lm_zoo.tiny_llama``), 3.3M parameters;
* **training**: ``--train-steps`` (default 2000) AdamW steps (lr 3e-3, 15 warm-up steps, cosine
  decay to 10 %, weight decay 0.01, batch 16 blocks of 64 tokens, shuffled with seed 0), one
  thread pool of 2 threads. The model and tokenizer are cached in ``--cache`` (default
  ``~/.cache/neuroprune/llm_width``; 12 MB in float32, too big for the repository) together with
  ``recipe.json``; delete the folder to rebuild it.

Then, on that model, same data, same budget for everyone:

* **settings**: 20 %, 35 %, 50 % of the FFN neurons of every layer removed (uniform widths: the
  result keeps a standard config), and 25 % of the key/value groups of every layer (1 of 4, with
  its 2 query heads);
* **neuroprune, no recovery**: ``wanda``, ``flap`` and ``taylor`` (LM loss) on 64 calibration blocks;
* **neuroprune, retrain-free**: ``flap`` + least-squares reconstruction of every ``down_proj`` /
  ``o_proj`` against the unpruned model's residual stream (``reconstruct=True``);
* **Torch-Pruning 1.6** (``torch_pruning``; its ``examples/LLMs`` approach, same uniform
  widths): ``DependencyGraph`` over each block's MLP (a full-model trace of this transformers
  version did not finish in 4 minutes), group L2 magnitude (``GroupMagnitudeImportance``) or
  group Taylor (``GroupTaylorImportance``, LM-loss gradients summed over the same 64 blocks);
  TP has no retrain-free recovery. For KV groups TP needs a full-model trace (``num_heads`` /
  ``out_channel_groups``), so that row has no TP entry;
* **+ distillation**: the best retrain-free neuroprune model and the best TP model, each
  distilled for ``--distill-seconds`` (default 60) against the unpruned model's next-token
  distribution (KL, AdamW lr 1e-3, batch 16), ``neuroprune.torch.recover.distill.distill``;
* **speed**: greedy ``generate`` of 32 new tokens at batch 1 and 8, the fastest of ``--speed-rounds``
  (5) rounds in which every model runs once (round-robin, so machine load hits all alike).

Perplexity is measured on 96 test blocks (6,144 tokens) of the held-out test documents.
Writes ``benchmarks/results/llm_width.md`` and ``.json``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/llm_width.py            # ~60 min on a busy 2-core machine (46 of them training)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/llm_width.py --quick    # 30 steps, 10 s distillation: smoke run
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import copy
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

import neuroprune.core.loop as schedule_module
from neuroprune import PruneConfig, prune
from neuroprune.tasks.generate import generation_check
from neuroprune.tasks.language_model import LMTask, split_documents
from neuroprune.models.lm_zoo import tiny_llama, train_tokenizer
from neuroprune.torch.recover.distill import distill
from neuroprune.torch.metrics import count_parameters
from neuroprune.tasks.text import stdlib_sentences

sys.path.insert(0, str(Path(__file__).resolve().parent))
from omp_policy import reexec_with_omp_policy  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
THREADS = 2
SEQ_LEN = 64
RECIPE = dict(vocab_size=2048, hidden=256, layers=4, heads=8, kv_heads=4, intermediate=640, max_positions=2048,
              seq_len=SEQ_LEN, batch_size=16, learning_rate=3e-3, warmup_steps=15, weight_decay=0.01, seed=0)
SETTINGS = [("FFN 20 %", 0.2, "ffn"), ("FFN 35 %", 0.35, "ffn"), ("FFN 50 %", 0.5, "ffn"), ("KV groups 25 %", 0.25, "kv")]
PROMPT = "Return the number of"


def documents() -> list[str]:
    return stdlib_sentences()


def build_task(docs: list[str], tokenizer, distill_seconds: float | None) -> LMTask:
    return LMTask(docs, tokenizer, seq_len=SEQ_LEN, batch_size=16, calibration_samples=64, val_blocks=32,
                  test_blocks=96, seed=0, distill_seconds=distill_seconds)


def train_model(docs: list[str], steps: int, cache: Path) -> tuple[nn.Module, object, dict]:
    """Build (or load from ``cache``) the tokenizer and the trained model of the recipe."""
    import transformers

    recipe = dict(RECIPE, train_steps=steps)
    if (cache / "recipe.json").is_file() and json.loads((cache / "recipe.json").read_text())["recipe"] == recipe:
        info = json.loads((cache / "recipe.json").read_text())
        model = transformers.AutoModelForCausalLM.from_pretrained(cache).eval()
        return model, transformers.AutoTokenizer.from_pretrained(cache), info
    train_docs = split_documents(list(dict.fromkeys(docs)), 0.1, 0.1, 0)["train"]
    tokenizer = train_tokenizer(train_docs, vocab_size=RECIPE["vocab_size"])
    model = tiny_llama(tokenizer.vocab_size, hidden=RECIPE["hidden"], layers=RECIPE["layers"], heads=RECIPE["heads"],
                       kv_heads=RECIPE["kv_heads"], intermediate=RECIPE["intermediate"],
                       max_positions=RECIPE["max_positions"], seed=RECIPE["seed"])
    task = build_task(docs, tokenizer, None)
    torch.manual_seed(RECIPE["seed"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=RECIPE["learning_rate"], weight_decay=RECIPE["weight_decay"])
    model.train()
    start, step, losses = time.perf_counter(), 0, []
    epoch = 0
    while step < steps:
        for batch in task.train_batches(epoch):
            if step >= steps:
                break
            scale = min(1.0, (step + 1) / RECIPE["warmup_steps"]) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
            for group in optimizer.param_groups:
                group["lr"] = RECIPE["learning_rate"] * scale
            loss = task.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step % 10 == 0:
                print(f"  step {step}/{steps}: loss {sum(losses[-10:]) / 10:.3f} ({time.perf_counter() - start:.0f} s)",
                      flush=True)
        epoch += 1
    model.eval()
    info = {"recipe": recipe, "train_seconds": time.perf_counter() - start, "final_loss": sum(losses[-10:]) / 10,
            "epochs": step / max(len(task.train_batches(0)), 1)}
    cache.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(cache)
    tokenizer.save_pretrained(cache)
    (cache / "recipe.json").write_text(json.dumps(info, indent=1))
    return model, tokenizer, info


def _cheap_measure(model, task, config, batch_sizes=(1, 64)):
    """The loop's before/after measurement without latency (timed separately with ``generate``)."""
    return {"params": count_parameters(model), "flops": 0, "size_bytes": 0, "accuracy": task.evaluate(model, "test"),
            "latency_ms": {}}


def prune_neuroprune(model, task, ratio: float, kind: str, criterion: str, reconstruct: bool) -> nn.Module:
    ignore = ("*.mlp",) if kind == "kv" else ("*:heads",)
    config = PruneConfig(criterion=criterion, ratio=ratio, ignore=ignore, tolerance=1e9, reconstruct=reconstruct,
                         progress=False, latency_runs=1)
    return prune(model, task, config).model


def prune_torch_pruning(model, task, ratio: float, importance: str) -> nn.Module:
    """Torch-Pruning: each block's MLP traced by its DependencyGraph, the same number of neurons
    removed per block by group magnitude (L2) or group Taylor importance."""
    import torch_pruning as tp

    model = copy.deepcopy(model)
    if importance == "taylor":
        model.zero_grad()
        for batch in task.calibration_batches():
            task.loss(model, batch).backward()
        imp = tp.importance.GroupTaylorImportance()
    else:
        imp = tp.importance.GroupMagnitudeImportance(p=2)
    hidden = model.config.hidden_size
    for layer in model.model.layers:
        mlp = layer.mlp
        width = mlp.gate_proj.out_features
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = tp.DependencyGraph().build_dependency(mlp, example_inputs=torch.randn(1, 4, hidden))
        group = graph.get_pruning_group(mlp.gate_proj, tp.prune_linear_out_channels, idxs=list(range(width)))
        scores = imp(group)
        remove = scores.argsort()[:round(width * ratio)].tolist()
        graph.get_pruning_group(mlp.gate_proj, tp.prune_linear_out_channels, idxs=remove).prune()
    model.zero_grad(set_to_none=True)
    model.config.intermediate_size = model.model.layers[0].mlp.gate_proj.out_features
    return model.eval()


def tokens_per_second(models: dict[str, nn.Module], tokenizer, rounds: int, new_tokens: int = 32) -> dict:
    """New tokens per second of greedy ``generate`` at batch 1 and 8, the fastest of ``rounds``
    rounds; each round times every model once, so machine load hits them alike."""
    ids = torch.tensor([tokenizer(PROMPT, add_special_tokens=False)["input_ids"]])
    best = {name: {} for name in models}
    with torch.inference_mode():
        for round_ in range(rounds + 1):  # round 0 warms up
            for name, m in models.items():
                for batch in (1, 8):
                    x = ids.expand(batch, -1).contiguous()
                    start = time.perf_counter()
                    m.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                               max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
                    rate = batch * new_tokens / (time.perf_counter() - start)
                    key = f"batch_{batch}"
                    if round_ > 0:
                        best[name][key] = max(best[name].get(key, 0.0), rate)
    return best


def run_distill(model, task, seconds: float) -> tuple[nn.Module, dict]:
    model = copy.deepcopy(model)
    result = distill(model, task, epochs=1000, max_seconds=seconds, learning_rate=1e-3, progress=False)
    return model, {"steps": result.steps, "seconds": result.seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--distill-seconds", type=float, default=60.0)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "neuroprune" / "llm_width"))
    parser.add_argument("--speed-rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="30 training steps, 10 s distillation (a smoke run)")
    parser.add_argument("--out", default=str(RESULTS / "llm_width.md"))
    args = parser.parse_args(argv)
    reexec_with_omp_policy("passive")
    torch.set_num_threads(THREADS)
    if args.quick:
        args.train_steps, args.distill_seconds, args.speed_rounds = 30, 10.0, 1
        args.cache = args.cache + "-quick"
    schedule_module._measure = _cheap_measure
    wall = time.perf_counter()

    start = time.perf_counter()
    docs = documents()
    print(f"{len(docs)} stdlib docstring sentences ({time.perf_counter() - start:.0f} s)", flush=True)
    model, tokenizer, info = train_model(docs, args.train_steps, Path(args.cache))
    task = build_task(docs, tokenizer, args.distill_seconds).bind(model)
    sizes = task.split_sizes()
    dense_ppl = task.evaluate(model, "test")
    print(f"model: {count_parameters(model):,} parameters, trained {info['recipe']['train_steps']} steps in "
          f"{info['train_seconds']:.0f} s (final loss {info['final_loss']:.3f}); splits (blocks of {SEQ_LEN}): {sizes}; "
          f"dense test perplexity {dense_ppl:.2f}", flush=True)

    rows: dict[str, dict[str, float | None]] = {}
    models: dict[tuple[str, str], nn.Module] = {}
    timings: dict[str, float] = {}

    def record(method: str, setting: str, pruned: nn.Module, seconds: float) -> float:
        ppl = task.evaluate(pruned, "test")
        rows.setdefault(method, {})[setting] = ppl
        models[(method, setting)] = pruned
        timings[f"{method} / {setting}"] = seconds
        print(f"  {setting:15s} {method:42s} perplexity {ppl:9.2f} ({ppl / dense_ppl - 1:+.1%}) {seconds:5.0f} s",
              flush=True)
        return ppl

    for setting, ratio, kind in SETTINGS:
        retrain_free = {}
        for criterion in ("wanda", "flap", "taylor"):
            start = time.perf_counter()
            pruned = prune_neuroprune(model, task, ratio, kind, criterion, reconstruct=False)
            record(f"neuroprune {criterion}", setting, pruned, time.perf_counter() - start)
        for criterion in ("flap", "wanda"):
            start = time.perf_counter()
            pruned = prune_neuroprune(model, task, ratio, kind, criterion, reconstruct=True)
            method = f"neuroprune {criterion} + reconstruction"
            retrain_free[method] = record(method, setting, pruned, time.perf_counter() - start)
        tp_results = {}
        if kind == "ffn":
            for importance in ("magnitude", "taylor"):
                start = time.perf_counter()
                pruned = prune_torch_pruning(model, task, ratio, importance)
                tp_results[f"Torch-Pruning {importance}"] = record(f"Torch-Pruning {importance}", setting, pruned,
                                                                   time.perf_counter() - start)
        # distil the best retrain-free model of each tool (chosen on validation, not test)
        candidates = {"neuroprune": list(retrain_free), "Torch-Pruning": list(tp_results)}
        for tool, methods in candidates.items():
            if not methods:
                continue
            best = min(methods, key=lambda m: task.evaluate(models[(m, setting)], "val"))
            distilled, stats = run_distill(models[(best, setting)], task, args.distill_seconds)
            record(f"{tool} best + distillation", setting, distilled, stats["seconds"])
            rows[f"{tool} best + distillation"].setdefault("_from", {})[setting] = best

    # speed and the generation check: dense vs. the distilled neuroprune models, timed round-robin
    candidates = {"dense": model, **{s: models[("neuroprune best + distillation", s)] for s, _, _ in SETTINGS}}
    speed = {name: generation_check(m, tokenizer, PROMPT, max_new_tokens=32, batch_sizes=(1,), runs=1)
             for name, m in candidates.items()}
    for name, tps in tokens_per_second(candidates, tokenizer, args.speed_rounds).items():
        speed[name]["tokens_per_second"] = tps
    params = {"dense": count_parameters(model),
              **{s: count_parameters(models[("neuroprune best + distillation", s)]) for s, _, _ in SETTINGS}}
    total = time.perf_counter() - wall
    write_results(Path(args.out), rows, dense_ppl, speed, params, info, sizes, args, total, timings)
    return 0


def _targets(rows, dense_ppl) -> list[str]:
    lines = []
    best_free = min(v["FFN 20 %"] for k, v in rows.items() if "reconstruction" in k)
    lines.append(f"- retrain-free at 20 % FFN removed within 15 % of dense: {best_free / dense_ppl - 1:+.1%} -> "
                 f"{'met' if best_free <= 1.15 * dense_ppl else 'missed'}")
    distilled = rows["neuroprune best + distillation"]["FFN 35 %"]
    lines.append(f"- after distillation at 35 % within 10 % of dense: {distilled / dense_ppl - 1:+.1%} -> "
                 f"{'met' if distilled <= 1.10 * dense_ppl else 'missed'}")
    for setting, _, kind in SETTINGS:
        if kind != "ffn":
            continue
        ours_free = min(v[setting] for k, v in rows.items() if k.startswith("neuroprune") and "distillation" not in k)
        tp_free = min(v[setting] for k, v in rows.items() if k.startswith("Torch-Pruning") and "distillation" not in k)
        ours_d = rows["neuroprune best + distillation"][setting]
        tp_d = rows["Torch-Pruning best + distillation"][setting]
        lines.append(f"- ahead of Torch-Pruning at {setting}: without training {ours_free:.2f} vs {tp_free:.2f} "
                     f"({'met' if ours_free < tp_free else 'missed'}), after distillation {ours_d:.2f} vs {tp_d:.2f} "
                     f"({'met' if ours_d < tp_d else 'missed'})")
    return lines


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def write_results(path: Path, rows, dense_ppl, speed, params, info, sizes, args, total, timings) -> None:
    settings = [s for s, _, _ in SETTINGS]
    header = "| method | " + " | ".join(settings) + " |\n|---|" + "---:|" * len(settings)
    lines = [header, f"| dense | " + " | ".join(f"{dense_ppl:.2f}" for _ in settings) + " |"]
    for method, values in rows.items():
        cells = []
        for s in settings:
            v = values.get(s)
            cells.append("—" if v is None else f"{v:.2f} ({v / dense_ppl - 1:+.1%})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    source = rows.get("neuroprune best + distillation", {}).get("_from", {})
    tp_source = rows.get("Torch-Pruning best + distillation", {}).get("_from", {})
    speed_lines = ["| model | parameters | tokens/s batch 1 | tokens/s batch 8 |", "|---|---:|---:|---:|"]
    for name, check in speed.items():
        tps = check["tokens_per_second"]
        speed_lines.append(f"| {name if name == 'dense' else name + ' (neuroprune, distilled)'} | {params[name]:,} | "
                           f"{tps['batch_1']:.0f} | {tps['batch_8']:.0f} |")
    gen_lines = [f"- prompt: `{PROMPT}`"] + [f"- {name}: `{check['text'][:80]}`" for name, check in speed.items()]
    recipe = info["recipe"]
    text = f"""# LLM width pruning (benchmarks/llm_width.py)

Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()} ({os.cpu_count()} cores, shared
with other jobs; {THREADS} threads), torch {torch.__version__}, transformers {_version('transformers')},
torch_pruning {_version('torch_pruning')}; total wall time {total / 60:.1f} min. Command:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/llm_width.py --train-steps {args.train_steps} --distill-seconds {args.distill_seconds:g}

**Model** (rebuilt deterministically, cached in `~/.cache/neuroprune/llm_width`): LLaMA-style, hidden
{recipe['hidden']}, {recipe['layers']} layers, {recipe['heads']} heads in {recipe['kv_heads']} KV groups, FFN
{recipe['intermediate']}, vocabulary {recipe['vocab_size']} (byte-level BPE fitted on the training documents),
{params['dense']:,} parameters; trained {recipe['train_steps']} AdamW steps of {recipe['batch_size']} x
{recipe['seq_len']} tokens ({info['epochs']:.2f} epochs, {info['train_seconds']:.0f} s, final training loss
{info['final_loss']:.3f}) on Python standard-library docstring sentences. See the module docstring for the
whole recipe. Splits (blocks of {SEQ_LEN} tokens): {sizes}.

**Perplexity** on the held-out test blocks (lower is better; in brackets the change against dense). FFN settings
remove that share of every layer's FFN neurons (heads kept), the KV setting one of the 4 key/value groups of every
layer (FFN kept); all widths uniform, so every result loads with plain `from_pretrained`. Distillation:
{args.distill_seconds:g} s of logit distillation (KL to the dense model) per model; neuroprune distils
{', '.join(f'{k}: {v}' for k, v in source.items())}; Torch-Pruning
{', '.join(f'{k}: {v}' for k, v in tp_source.items())} (each the better on validation).

{chr(10).join(lines)}

**Targets**

{chr(10).join(_targets(rows, dense_ppl))}

**Decoding speed** (greedy `generate`, 32 new tokens, fastest of {args.speed_rounds} round-robin rounds; on a shared machine these swing):

{chr(10).join(speed_lines)}

**Generation check** (greedy, first 80 characters of the continuation):

{chr(10).join(gen_lines)}

Wall time per method and setting (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    clean = {m: {k: v for k, v in vals.items()} for m, vals in rows.items()}
    path.with_suffix(".json").write_text(json.dumps(
        {"dense": dense_ppl, "rows": clean, "speed": speed, "params": params, "model": info,
         "distill_seconds": args.distill_seconds, "timings": timings}, indent=1))
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
