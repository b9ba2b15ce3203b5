"""Render a pruning report as plain text, and store it as JSON.

A report is a dict with the keys ``metric`` (name of the quality measure, default
``"accuracy"``), ``before`` and ``after`` (each as from ``ModelMetrics.to_dict()``),
``steps``, ``layers`` and ``config``. The text uses ASCII only and no colour codes.

Example:
    >>> side = {"params": 1000, "flops": 2_000_000, "size_bytes": 4096,
    ...         "accuracy": None, "latency_ms": {"batch_1": 0.5}}
    >>> text = format_report({"before": side, "after": side})
    >>> "parameters" in text and "1,000" in text
    True
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from neuroprune.core.atomic import write_atomic
from neuroprune.core.errors import ReportError
from neuroprune.core.target import describe_target
from neuroprune.report.formatting import config_value, format_count, format_fraction, format_metric, ratio, side, summary_rows

_BAR_WIDTH = 20


def format_report(report: dict[str, Any]) -> str:
    """Render the report as aligned plain-text tables.

    Sections: before/after/change summary, pruning steps, per-layer widths and config.
    A metric whose values lie in [0, 1] is shown in percent with its change in
    percentage points ("-0.6 pt"); other metrics are shown as they are.

    Raises:
        ValueError: If ``before`` or ``after`` is missing or lacks one of the keys
            ``params``, ``flops``, ``size_bytes``, ``accuracy``, ``latency_ms``.

    Example:
        >>> side = {"params": 400, "flops": 0, "size_bytes": 1600, "accuracy": 0.9,
        ...         "latency_ms": {"batch_1": 2.0}}
        >>> small = dict(side, params=100, accuracy=0.894, latency_ms={"batch_1": 1.0})
        >>> text = format_report({"before": side, "after": small, "layers": [
        ...     {"name": "fc1", "width_before": 128, "width_after": 32}]})
        >>> "4.00x smaller" in text and "-0.6 pt" in text and "2.0x faster" in text
        True
    """
    before = side(report, "before")
    after = side(report, "after")
    metric = report.get("metric") or "accuracy"
    sections = [
        "neuroprune report\n=================",
        _summary_section(before, after, metric, (report.get("config") or {}).get("latency_runs")),
    ]
    if report.get("target"):
        sections.append(_target_section(report["target"], report.get("finetune")))
    sections += [
        _steps_section(report.get("steps") or [], metric),
        _layers_section(report.get("layers") or []),
    ]
    if report.get("generation"):
        sections.append(_generation_section(report["generation"]))
    if report.get("fixed_layers"):
        sections.append(_reasons_section("Fixed layers (nothing removable)", report["fixed_layers"]))
    if report.get("frozen_modules"):
        sections.append(_reasons_section("Frozen modules (--ignore-untraceable)", report["frozen_modules"]))
    if report.get("config"):
        sections.append(_config_section(report["config"]))
    return "\n\n".join(sections) + "\n"


def write_report_json(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the report as indented JSON, atomically.

    The text goes to a temporary file in the target's folder, which then replaces the
    target with ``os.replace``; if anything fails, the temporary file is removed and the
    target is left as it was.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> target = Path(tempfile.mkdtemp()) / "report.json"
        >>> write_report_json({"metric": "accuracy"}, target)
        >>> read_report_json(target)
        {'metric': 'accuracy'}
    """
    write_atomic(path, json.dumps(report, indent=2) + "\n")


def read_report_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a report written by :func:`write_report_json`.

    Raises:
        ValueError: If the file does not hold a JSON object.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> target = Path(tempfile.mkdtemp()) / "report.json"
        >>> write_report_json({"steps": []}, target)
        >>> read_report_json(target)["steps"]
        []
    """
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    if not isinstance(report, dict):
        raise ReportError(f"{str(path)!r} holds a JSON {type(report).__name__}, not an object")
    return report


def _summary_section(before: dict[str, Any], after: dict[str, Any], metric: str, runs: int | None = None) -> str:
    """Render the before/after/change table; latency from fewer than
    :data:`~neuroprune.report.formatting.MIN_RELIABLE_RUNS` runs is marked unreliable."""
    rows = summary_rows(before, after, metric, runs)
    return "Summary\n" + _render_table(["", "before", "after", "change"], rows, "lrrl")


def _target_section(target: dict[str, Any], finetune: dict[str, Any] | None) -> str:
    """Asked vs delivered, why a missed target was missed, and the fine-tuning budget spent."""
    lines = ["Target", describe_target(target)]
    lines += [f"  why: {reason}" for reason in target.get("why") or []]
    if finetune and finetune.get("epochs_total"):
        lines.append(f"fine-tuning: {finetune['epochs_total']} epoch(s) in all ({finetune['epochs_per_attempt']} per "
                     f"attempt, judged {finetune.get('judge', 'after')} recovery; {finetune['epochs_rolled_back']} on "
                     "rolled-back attempts)")
    return "\n".join(lines)


def _steps_section(steps: Sequence[dict[str, Any]], metric: str) -> str:
    """Render one row per pruning attempt, marked accepted or rolled back."""
    if not steps:
        return "Steps\n(no steps recorded)"
    rows = [
        [
            str(step.get("step", "")),
            str(step.get("attempt", "")),
            format_fraction(step.get("target_ratio")),
            format_count(step.get("removed")),
            format_metric(step.get("accuracy")),
            "accepted" if step.get("accepted") else "rolled back",
            str(step.get("reason", "")),
        ]
        for step in steps
    ]
    headers = ["step", "attempt", "target", "removed", metric, "result", "reason"]
    return "Steps\n" + _render_table(headers, rows, "rrrrrll")


def _layers_section(layers: Sequence[dict[str, Any]]) -> str:
    """Render each layer's width before and after, with a bar of the kept share."""
    if not layers:
        return "Layer widths\n(no layers recorded)"
    rows = []
    for layer in layers:
        width_before, width_after = layer["width_before"], layer["width_after"]
        rows.append([
            str(layer["name"]),
            f"{width_before} -> {width_after}",
            _bar(width_before, width_after),
            format_fraction(width_after / width_before if width_before else None),
            "; ".join(layer.get("kept_because") or []),
        ])
    table = _render_table(["layer", "width", "", "kept", "kept because"], rows, "lrlrl")
    return "Layer widths\n" + table


def _generation_section(generation: dict[str, Any]) -> str:
    """Render the generation check: the greedy continuation and decoding speed before and after."""
    before, after = generation.get("before") or {}, generation.get("after") or {}
    lines = [f"prompt: {generation.get('prompt', '')!r}",
             f"before: {before.get('text', '')!r}", f"after:  {after.get('text', '')!r}"]
    speed_before, speed_after = before.get("tokens_per_second") or {}, after.get("tokens_per_second") or {}
    rows = [[f"tokens/s {key.replace('_', ' ')}", f"{speed_before[key]:,.1f}", f"{speed_after[key]:,.1f}",
             ratio(speed_after[key], speed_before[key], "faster", "slower", 2)]
            for key in speed_before if key in speed_after]
    table = _render_table(["", "before", "after", "change"], rows, "lrrl") if rows else ""
    return "Generation (greedy)\n" + "\n".join(lines) + ("\n" + table if table else "")


def _reasons_section(title: str, reasons: dict[str, Any]) -> str:
    """One line per name with its reasons (a list or one string)."""
    rows = [[str(name), "; ".join(why) if isinstance(why, (list, tuple)) else str(why)]
            for name, why in reasons.items()]
    return title + "\n" + _render_table(["module", "why"], rows, "ll")


def _config_section(config: dict[str, Any]) -> str:
    """Render the configuration as ``key = value`` lines (nested values as JSON)."""
    width = max(len(str(key)) for key in config)
    lines = [f"{str(key):<{width}} = {config_value(value)}" for key, value in config.items()]
    return "Config\n" + "\n".join(lines)


def _render_table(headers: list[str], rows: list[list[str]], align: str) -> str:
    """Align cells in columns: ``align`` holds "l" or "r" per column."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        padded = [
            cell.ljust(width) if how == "l" else cell.rjust(width)
            for cell, width, how in zip(cells, widths, align)
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _bar(width_before: int, width_after: int) -> str:
    """Draw the kept share as ``#`` on a ``-`` background, e.g. "#####---------------"."""
    share = width_after / width_before if width_before else 0.0
    filled = min(_BAR_WIDTH, max(0, round(share * _BAR_WIDTH)))
    return "#" * filled + "-" * (_BAR_WIDTH - filled)
