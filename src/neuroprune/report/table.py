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
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_SIDE_KEYS = ("params", "flops", "size_bytes", "accuracy", "latency_ms")
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
    before = _side(report, "before")
    after = _side(report, "after")
    metric = report.get("metric") or "accuracy"
    sections = [
        "neuroprune report\n=================",
        _summary_section(before, after, metric),
        _steps_section(report.get("steps") or [], metric),
        _layers_section(report.get("layers") or []),
    ]
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
        >>> target = Path(tempfile.mkdtemp()) / "report.json"
        >>> write_report_json({"metric": "accuracy"}, target)
        >>> read_report_json(target)
        {'metric': 'accuracy'}
    """
    path = Path(path)
    text = json.dumps(report, indent=2) + "\n"
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_report_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a report written by :func:`write_report_json`.

    Raises:
        ValueError: If the file does not hold a JSON object.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "report.json"
        >>> write_report_json({"steps": []}, target)
        >>> read_report_json(target)["steps"]
        []
    """
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    if not isinstance(report, dict):
        raise ValueError(f"{str(path)!r} holds a JSON {type(report).__name__}, not an object")
    return report


def _side(report: dict[str, Any], key: str) -> dict[str, Any]:
    """Return ``report[key]`` after checking that it has every metrics key."""
    side = report.get(key)
    if not isinstance(side, dict):
        raise ValueError(f"report[{key!r}] must be a dict of metrics, got {side!r}")
    missing = [k for k in _SIDE_KEYS if k not in side]
    if missing:
        raise ValueError(f"report[{key!r}] lacks the keys {missing!r}")
    return side


def _summary_section(before: dict[str, Any], after: dict[str, Any], metric: str) -> str:
    """Render the before/after/change table."""
    rows = [
        ["parameters", _format_count(before["params"]), _format_count(after["params"]),
         _ratio(before["params"], after["params"], "smaller", "larger", 2)],
        ["FLOPs", _format_flops(before["flops"]), _format_flops(after["flops"]),
         _ratio(before["flops"], after["flops"], "fewer", "more", 2)],
        ["size", _format_bytes(before["size_bytes"]), _format_bytes(after["size_bytes"]),
         _ratio(before["size_bytes"], after["size_bytes"], "smaller", "larger", 2)],
        [metric, *_metric_cells(before["accuracy"], after["accuracy"])],
    ]
    latency_before, latency_after = before["latency_ms"], after["latency_ms"]
    for key in _latency_keys(latency_before, latency_after):
        ms_before, ms_after = latency_before.get(key), latency_after.get(key)
        rows.append([
            f"latency {key.replace('_', ' ')}",
            _format_ms(ms_before),
            _format_ms(ms_after),
            _ratio(ms_before, ms_after, "faster", "slower", 1),
        ])
    table = _render_table(["", "before", "after", "change"], rows, "lrrl")
    return "Summary\n" + table


def _steps_section(steps: Sequence[dict[str, Any]], metric: str) -> str:
    """Render one row per pruning attempt, marked accepted or rolled back."""
    if not steps:
        return "Steps\n(no steps recorded)"
    rows = [
        [
            str(step.get("step", "")),
            str(step.get("attempt", "")),
            _format_fraction(step.get("target_ratio")),
            _format_count(step.get("removed")),
            _format_metric(step.get("accuracy")),
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
            _format_fraction(width_after / width_before if width_before else None),
        ])
    table = _render_table(["layer", "width", "", "kept"], rows, "lrlr")
    return "Layer widths\n" + table


def _config_section(config: dict[str, Any]) -> str:
    """Render the configuration as ``key = value`` lines (nested values as JSON)."""
    width = max(len(str(key)) for key in config)
    lines = [f"{str(key):<{width}} = {_config_value(value)}" for key, value in config.items()]
    return "Config\n" + "\n".join(lines)


def _config_value(value: Any) -> str:
    """Render one config value compactly."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


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


def _latency_keys(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """Return latency keys of both sides, ordered by batch size where the key has one."""
    keys = list(dict.fromkeys([*before, *after]))

    def batch_size(key: str) -> float:
        suffix = key.rpartition("_")[2]
        return int(suffix) if suffix.isdigit() else float("inf")

    return sorted(keys, key=batch_size)


def _metric_cells(before: float | None, after: float | None) -> list[str]:
    """Return the before, after and change cells of the quality metric."""
    if before is None or after is None:
        change = "n/a"
    elif _is_fraction(before) and _is_fraction(after):
        change = f"{(after - before) * 100:+.1f} pt"
    else:
        change = f"{after - before:+.4g}"
    return [_format_metric(before), _format_metric(after), change]


def _is_fraction(value: float) -> bool:
    """Whether a metric value reads as a share, to be shown in percent."""
    return 0.0 <= value <= 1.0


def _format_metric(value: float | None) -> str:
    """Render a metric value: a share in percent, anything else with 4 significant digits."""
    if value is None:
        return "n/a"
    if _is_fraction(value):
        return f"{value * 100:.2f} %"
    return f"{value:.4g}"


def _format_fraction(value: float | None) -> str:
    """Render a share as a percentage, e.g. 0.25 -> "25.0 %"."""
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _format_count(n: int | None) -> str:
    """Render an integer with thousands separators, e.g. 1234567 -> "1,234,567"."""
    return "n/a" if n is None else f"{n:,}"


def _format_flops(n: int) -> str:
    """Render FLOPs in GFLOPs from 1e9, else in MFLOPs (3 significant digits below 1)."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GFLOPs"
    scaled = n / 1e6
    if scaled >= 1 or scaled == 0:
        return f"{scaled:.2f} MFLOPs"
    return f"{scaled:.3g} MFLOPs"


def _format_bytes(n: int) -> str:
    """Render a byte count in B, KiB, MiB or GiB."""
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    if n < 1024**3:
        return f"{n / 1024**2:.2f} MiB"
    return f"{n / 1024**3:.2f} GiB"


def _format_ms(value: float | None) -> str:
    """Render milliseconds, with 3 decimals below 1 ms and 2 above."""
    if value is None:
        return "n/a"
    return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms"


def _ratio(
    before: float | None, after: float | None, fewer: str, more: str, decimals: int
) -> str:
    """Describe before/after as "<r>x <fewer>" or after/before as "<r>x <more>"."""
    if before is None or after is None or before <= 0 or after <= 0:
        return "unchanged" if before == after and before is not None else "n/a"
    if after <= before:
        return f"{before / after:.{decimals}f}x {fewer}"
    return f"{after / before:.{decimals}f}x {more}"


def _bar(width_before: int, width_after: int) -> str:
    """Draw the kept share as ``#`` on a ``-`` background, e.g. "#####---------------"."""
    share = width_after / width_before if width_before else 0.0
    filled = min(_BAR_WIDTH, max(0, round(share * _BAR_WIDTH)))
    return "#" * filled + "-" * (_BAR_WIDTH - filled)
