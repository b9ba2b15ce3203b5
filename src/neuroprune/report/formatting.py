"""Number and cell formatting shared by the text table and the HTML report.

Example:
    >>> format_bytes(2048)
    '2.0 KiB'
"""

from __future__ import annotations

import json
from typing import Any

from neuroprune.core.errors import ReportError

SIDE_KEYS = ("params", "flops", "size_bytes", "accuracy", "latency_ms")

MIN_RELIABLE_RUNS = 20
"""Latency medians from fewer timed runs are marked unreliable (one run of 0.04 ms can read "42x faster")."""


def side(report: dict[str, Any], key: str) -> dict[str, Any]:
    """Return ``report[key]`` after checking that it has every metrics key."""
    side = report.get(key)
    if not isinstance(side, dict):
        raise ReportError(f"report[{key!r}] must be a dict of metrics, got {side!r}")
    missing = [k for k in SIDE_KEYS if k not in side]
    if missing:
        raise ReportError(f"report[{key!r}] lacks the keys {missing!r}")
    return side


def config_value(value: Any) -> str:
    """Render one config value compactly."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def latency_keys(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """Return latency keys of both sides, ordered by batch size where the key has one."""
    keys = list(dict.fromkeys([*before, *after]))

    def batch_size(key: str) -> float:
        suffix = key.rpartition("_")[2]
        return int(suffix) if suffix.isdigit() else float("inf")

    return sorted(keys, key=batch_size)


def metric_cells(before: float | None, after: float | None) -> list[str]:
    """Return the before, after and change cells of the quality metric."""
    if before is None or after is None:
        change = "n/a"
    elif is_fraction(before) and is_fraction(after):
        change = f"{(after - before) * 100:+.1f} pt"
    else:
        change = f"{after - before:+.4g}"
    return [format_metric(before), format_metric(after), change]


def is_fraction(value: float) -> bool:
    """Whether a metric value reads as a share, to be shown in percent."""
    return 0.0 <= value <= 1.0


def format_metric(value: float | None) -> str:
    """Render a metric value: a share in percent, anything else with 4 significant digits."""
    if value is None:
        return "n/a"
    if is_fraction(value):
        return f"{value * 100:.2f} %"
    return f"{value:.4g}"


def format_fraction(value: float | None) -> str:
    """Render a share as a percentage, e.g. 0.25 -> "25.0 %"."""
    return "n/a" if value is None else f"{value * 100:.1f} %"


def format_count(n: int | None) -> str:
    """Render an integer with thousands separators, e.g. 1234567 -> "1,234,567"."""
    return "n/a" if n is None else f"{n:,}"


def format_flops(n: int) -> str:
    """Render FLOPs in GFLOPs from 1e9, else in MFLOPs (3 significant digits below 1)."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GFLOPs"
    scaled = n / 1e6
    if scaled >= 1 or scaled == 0:
        return f"{scaled:.2f} MFLOPs"
    return f"{scaled:.3g} MFLOPs"


def format_bytes(n: int) -> str:
    """Render a byte count in B, KiB, MiB or GiB."""
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    if n < 1024**3:
        return f"{n / 1024**2:.2f} MiB"
    return f"{n / 1024**3:.2f} GiB"


def format_ms(value: float | None) -> str:
    """Render milliseconds, with 3 decimals below 1 ms and 2 above."""
    if value is None:
        return "n/a"
    return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms"


def ratio(
    before: float | None, after: float | None, fewer: str, more: str, decimals: int
) -> str:
    """Describe before/after as "<r>x <fewer>" or after/before as "<r>x <more>"."""
    if before is None or after is None or before <= 0 or after <= 0:
        return "unchanged" if before == after and before is not None else "n/a"
    if after <= before:
        return f"{before / after:.{decimals}f}x {fewer}"
    return f"{after / before:.{decimals}f}x {more}"


def summary_rows(before: dict[str, Any], after: dict[str, Any], metric: str,
                 latency_runs: int | None = None) -> list[list[str]]:
    """The rows of the before/after/change summary, as both the text table and the HTML page show it.

    With ``latency_runs`` below :data:`MIN_RELIABLE_RUNS` the latency changes are marked unreliable.

    Example:
        >>> side = {"params": 400, "flops": 0, "size_bytes": 1600, "accuracy": 0.9, "latency_ms": {"batch_1": 2.0}}
        >>> summary_rows(side, dict(side, params=100), "accuracy")[0]
        ['parameters', '400', '100', '4.00x smaller']
    """
    rows = [
        ["parameters", format_count(before["params"]), format_count(after["params"]),
         ratio(before["params"], after["params"], "smaller", "larger", 2)],
        ["FLOPs", format_flops(before["flops"]), format_flops(after["flops"]),
         ratio(before["flops"], after["flops"], "fewer", "more", 2)],
        ["size", format_bytes(before["size_bytes"]), format_bytes(after["size_bytes"]),
         ratio(before["size_bytes"], after["size_bytes"], "smaller", "larger", 2)],
        [metric, *metric_cells(before["accuracy"], after["accuracy"])],
    ]
    unreliable = isinstance(latency_runs, int) and latency_runs < MIN_RELIABLE_RUNS
    latency_before, latency_after = before["latency_ms"], after["latency_ms"]
    for key in latency_keys(latency_before, latency_after):
        ms_before, ms_after = latency_before.get(key), latency_after.get(key)
        rows.append([f"latency {key.replace('_', ' ')}", format_ms(ms_before), format_ms(ms_after),
                     ratio(ms_before, ms_after, "faster", "slower", 1)
                     + (f" (unreliable: {latency_runs} runs)" if unreliable else "")])
    return rows
