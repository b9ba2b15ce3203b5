"""Selection speed at LLaMA-7B's FFN shape: today's vectorised code vs the former Python loops.

32 groups of 11,008 units (gate/up rows and down columns of every FFN), random scores, a 30 %
ratio. Times one attempt's selection: ``counts_for_ratio`` (local and global scope),
``select_units`` and ``DependencyGraph.keep_indices``. "before" is the pre-vectorisation code,
copied below verbatim as the reference; both must choose the same units.

Run:  .venv/bin/python benchmarks/selection_speed.py [--groups 32] [--units 11008] [--repeats 3]
      [--out benchmarks/results/selection_speed.md]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from neuroprune.core.groups import DependencyGraph, Group, GroupMember
from neuroprune.core.selection import counts_for_ratio, normalise, select_units

# ---- reference: the selection code before vectorisation (unchanged copy) --------------------


def old_lowest_units(group: Group, scores: np.ndarray, count: int) -> np.ndarray:
    candidates = np.nonzero(group.prunable)[0]
    order = candidates[np.argsort(np.asarray(scores)[candidates], kind="stable")]
    per_member = [np.bincount(m.unit_of[m.unit_of >= 0], minlength=group.size) for m in group.members]
    remaining = [int((m.unit_of >= 0).sum()) for m in group.members]
    chosen = []
    for unit in order:
        if len(chosen) == count:
            break
        if all(left - counts[unit] >= 1 for left, counts in zip(remaining, per_member)):
            chosen.append(unit)
            remaining = [left - counts[unit] for left, counts in zip(remaining, per_member)]
    return np.sort(np.array(chosen, dtype=np.int64))


def _old_kept_after_rounding(size: int, keep: int, min_width: int, round_to: int) -> int:
    keep = max(keep, min_width, 1)
    if round_to > 1:
        keep = min(size, int(math.ceil(keep / round_to) * round_to))
    return min(keep, size)


def old_counts_for_ratio(graph, scores, original, ratio, *, scope="local", min_width=1, round_to=1,
                         ratios=None, min_widths=None, skip=()):
    ratios, min_widths = ratios or {}, min_widths or {}
    counts = {g.name: 0 for g in graph.groups}
    pooled = []
    for group in graph.groups:
        if group.name in skip:
            continue
        if scope == "global" and group.name not in ratios:
            pooled.append(group)
            continue
        width0 = original.get(group.name, group.size)
        share = ratios.get(group.name, ratio)
        floor = min_widths.get(group.name, min_width)
        target = _old_kept_after_rounding(group.size, width0 - math.floor(share * width0 + 1e-9), floor, round_to)
        fixed = group.size - group.prunable_count
        counts[group.name] = max(0, group.size - max(target, fixed))
    if not pooled:
        return counts
    total0 = sum(original.get(g.name, g.size) for g in pooled)
    removed_so_far = sum(original.get(g.name, g.size) - g.size for g in pooled)
    need = max(0, math.floor(ratio * total0 + 1e-9) - removed_so_far)
    candidates = []
    for group in pooled:
        normalised = np.asarray(normalise(scores[group.name]))
        for unit in np.nonzero(group.prunable)[0]:
            candidates.append((float(normalised[unit]), group.name, int(unit)))
    candidates.sort()
    remaining = {g.name: g.size for g in pooled}
    for _, name, _ in candidates:
        if need == 0:
            break
        if remaining[name] > max(min_widths.get(name, min_width), 1):
            remaining[name] -= 1
            counts[name] += 1
            need -= 1
    for group in pooled:
        floor = min_widths.get(group.name, min_width)
        keep = _old_kept_after_rounding(group.size, group.size - counts[group.name], floor, round_to)
        counts[group.name] = group.size - keep
    return counts


def old_select_units(graph, scores, counts):
    return {g.name: old_lowest_units(g, scores[g.name], counts.get(g.name, 0))
            for g in graph.groups if counts.get(g.name, 0) > 0}


def old_keep_indices(graph: DependencyGraph, removal):
    dropped = {}
    for name, units in removal.items():
        units = np.asarray(units, dtype=np.int64)
        if len(units) == 0:
            continue
        group = graph.group(name)
        for member in group.members:
            positions = group.removed_positions(member, units)
            if len(positions):
                dropped.setdefault((member.path, member.axis), set()).update(positions.tolist())
    keep = {}
    for (path, axis), positions in dropped.items():
        size = graph.axis_sizes[path][axis]
        kept = sorted(set(range(size)) - positions)
        keep.setdefault(path, {})[axis] = torch.tensor(kept, dtype=torch.long)
    return keep

# ---- benchmark --------------------------------------------------------------------------------


def llama_ffn_graph(layers: int, units: int) -> DependencyGraph:
    """One group per FFN: gate_proj and up_proj rows, down_proj columns, one position per unit."""
    groups, sizes = [], {}
    for layer in range(layers):
        prefix = f"model.layers.{layer}.mlp"
        members = [GroupMember(f"{prefix}.gate_proj", "out", np.arange(units)),
                   GroupMember(f"{prefix}.up_proj", "out", np.arange(units)),
                   GroupMember(f"{prefix}.down_proj", "in", np.arange(units))]
        groups.append(Group(f"{prefix}.gate_proj", units, members, np.ones(units, dtype=bool),
                            [(f"{prefix}.gate_proj", "out"), (f"{prefix}.up_proj", "out")]))
        sizes.update({f"{prefix}.gate_proj": {"out": units}, f"{prefix}.up_proj": {"out": units},
                      f"{prefix}.down_proj": {"in": units}})
    return DependencyGraph(groups, {}, {}, sizes)


def best_of(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def same_keep(a, b) -> bool:
    return a.keys() == b.keys() and all(a[p].keys() == b[p].keys() and all(np.array_equal(np.asarray(a[p][x]), np.asarray(b[p][x])) for x in a[p])
                                        for p in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--units", type=int, default=11008)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/selection_speed.md")
    args = parser.parse_args()
    graph = llama_ffn_graph(args.groups, args.units)
    generator = torch.Generator().manual_seed(0)
    # rounded scores so that ties occur, as they do with real statistics
    scores = {g.name: (torch.round(torch.rand(g.size, generator=generator) * 1000) / 1000).double().numpy()
              for g in graph.groups}
    rows = []
    for scope in ("local", "global"):
        kwargs = dict(scope=scope, min_width=1, round_to=8)
        t_old_c, old_counts = best_of(lambda: old_counts_for_ratio(graph, scores, {}, args.ratio, **kwargs), args.repeats)
        t_new_c, new_counts = best_of(lambda: counts_for_ratio(graph, scores, {}, args.ratio, **kwargs), args.repeats)
        t_old_s, old_removal = best_of(lambda: old_select_units(graph, scores, old_counts), args.repeats)
        t_new_s, new_removal = best_of(lambda: select_units(graph, scores, new_counts), args.repeats)
        t_old_k, old_keep = best_of(lambda: old_keep_indices(graph, old_removal), args.repeats)
        t_new_k, new_keep = best_of(lambda: graph.keep_indices(new_removal), args.repeats)
        same = (old_counts == new_counts and old_removal.keys() == new_removal.keys()
                and all(np.array_equal(old_removal[k], new_removal[k]) for k in old_removal)
                and same_keep(old_keep, new_keep))
        if not same:
            raise SystemExit(f"{scope}: the vectorised selection differs from the reference")
        removed = sum(new_counts.values())
        for step, old, new in (("counts_for_ratio", t_old_c, t_new_c), ("select_units", t_old_s, t_new_s),
                               ("keep_indices", t_old_k, t_new_k),
                               ("total", t_old_c + t_old_s + t_old_k, t_new_c + t_new_s + t_new_k)):
            rows.append((scope, step, old * 1e3, new * 1e3, old / max(new, 1e-9), removed))
    header = "| scope | step | before (ms) | after (ms) | speed-up | units removed |\n| --- | --- | --- | --- | --- | --- |"
    table = "\n".join([header] + [f"| {s} | {step} | {o:.1f} | {n:.1f} | {x:.0f}x | {r} |" for s, step, o, n, x, r in rows])
    print(table)
    text = (f"# Selection speed at LLaMA-7B's FFN shape\n\n"
            f"{args.groups} groups x {args.units} units (3 members each: gate/up rows, down columns), ratio "
            f"{args.ratio}, round_to 8, scores rounded to 1e-3 (ties), best of {args.repeats}; same units chosen "
            f"before and after (checked). torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
            f"load average {os.getloadavg()[0]:.1f} at the end (shared machine: timings vary with load).\n"
            f"Reproduce: `.venv/bin/python benchmarks/selection_speed.py`\n\n{table}\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
