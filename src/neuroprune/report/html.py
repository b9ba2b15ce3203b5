"""Render a pruning report as one self-contained HTML page.

The page has inline CSS, no JavaScript and no external references: the figures of
:mod:`neuroprune.report.plots` are embedded as ``data:image/png;base64`` images, and a
Content-Security-Policy forbids loading anything else. Every string taken from the
report is escaped. Table cells are formatted as in :func:`neuroprune.report.table.format_report`.

Example:
    >>> side = {"params": 1000, "flops": 2_000_000, "size_bytes": 4096,
    ...         "accuracy": None, "latency_ms": {"batch_1": 0.5}}
    >>> page = render_html({"before": side, "after": side})
    >>> "<title>neuroprune report</title>" in page and "1,000" in page
    True
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from typing import Any

from neuroprune.core.atomic import write_atomic
from neuroprune.report.plots import FIGURE_FILES, figure_png, make_figures

# The cell formatting of the text table, so both renderings show the same values.
from neuroprune.report.formatting import config_value, format_count, format_fraction, format_metric, side, summary_rows

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 2rem auto; max-width: 64rem; padding: 0 1.5rem; color: #1f2430; background: #fff;
       line-height: 1.45; }
h1 { font-size: 1.8rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #dde2ea; padding-bottom: 0.2rem; }
p.lead { color: #4a5568; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { padding: 0.3rem 0.75rem; border-bottom: 1px solid #e6e9ef; text-align: left; vertical-align: top; }
th { background: #f3f5f9; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.85rem; }
tr.rolled-back td { background: #fdecea; color: #8a1c12; }
tr.rolled-back td.result { font-weight: 600; }
tr.accepted td.result { color: #1e6b35; }
td.result { white-space: nowrap; }
.bar { display: inline-block; width: 8rem; height: 0.7rem; background: #e6e9ef; border-radius: 2px;
       vertical-align: middle; }
.bar > span { display: block; height: 100%; background: #2f6db5; border-radius: 2px; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e6e9ef; }
figcaption { color: #4a5568; font-size: 0.85rem; }
.muted { color: #6b7686; }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class _Raw(str):
    """HTML that is already escaped and goes into a cell as it is."""


def render_html(report: dict[str, Any]) -> str:
    """Render the report as a complete HTML page (a string).

    Sections: summary (before, after, change), layer widths, fixed layers, pruning steps
    (rolled-back rows have the class ``rolled-back`` and say "rolled back"), sensitivity
    and score distributions when the report has them, and the config. Each applicable
    figure is embedded once as a base64 PNG with alt text.

    Raises:
        ValueError: If ``before`` or ``after`` is missing or incomplete (as the text table).

    Example:
        >>> side = {"params": 400, "flops": 0, "size_bytes": 1600, "accuracy": 0.9,
        ...         "latency_ms": {"batch_1": 2.0}}
        >>> page = render_html({"before": side, "after": dict(side, params=100), "steps": [
        ...     {"step": 1, "attempt": 1, "removed": 9, "accuracy": 0.5, "accepted": False}]})
        >>> "4.00x smaller" in page and 'class="rolled-back"' in page
        True
    """
    before, after = side(report, "before"), side(report, "after")
    metric = str(report.get("metric") or "accuracy")
    images = {name: _image(name, fig, report) for name, fig in make_figures(report).items()}
    sections = [
        _section("Summary", _summary_table(before, after, metric), _target_part(report.get("target"))),
        _section("Layer widths", images.get("widths", ""), _layers_table(report.get("layers") or [])),
        _section("Fixed layers", _fixed_table(report.get("fixed_layers") or {})),
        *([_section("Frozen modules", _table(["module", "why it could not be followed"],
                                             [[str(k), _reasons(v)] for k, v in report["frozen_modules"].items()],
                                             "ll"))] if report.get("frozen_modules") else []),
        _section("Pruning steps", _steps_lead(report, metric), images.get("steps", ""),
                 _steps_table(report.get("steps") or [], metric)),
    ]
    if "sensitivity" in images:
        sections.append(_section("Sensitivity", images["sensitivity"]))
    if "scores" in images:
        sections.append(_section("Score distributions", images["scores"]))
    if report.get("config"):
        sections.append(_section("Config", _config_table(report["config"])))
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<title>neuroprune report</title>\n<style>", _CSS, "</style>\n</head>\n<body>\n",
        "<h1>neuroprune report</h1>\n", _lead(report, metric), *sections, "</body>\n</html>\n",
    ])


def report_files(report: dict[str, Any]) -> dict[str, bytes | str]:
    """``report.html`` and ``figures/<name>.png`` contents, for saving beside ``report.json``."""
    files: dict[str, bytes | str] = {"report.html": render_html(report)}
    for name, fig in make_figures(report).items():
        files[f"figures/{FIGURE_FILES[name]}"] = figure_png(fig)
    return files


def write_html(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Render the report and write it to ``path`` as UTF-8, atomically.

    The page goes to a temporary file in the target's folder, which then replaces the
    target with ``os.replace``; if anything fails, the target is left as it was.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> side = {"params": 1, "flops": 0, "size_bytes": 4, "accuracy": None, "latency_ms": {}}
        >>> target = Path(tempfile.mkdtemp()) / "report.html"
        >>> write_html({"before": side, "after": side}, target)
        >>> target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
        True
    """
    write_atomic(path, render_html(report))


def _target_part(target: dict[str, Any] | None) -> str:
    """Asked vs delivered under the summary, with the reasons a missed target was missed."""
    if not target:
        return ""
    from neuroprune.core.target import describe_target  # noqa: PLC0415

    why = "".join(f"<li>{_e(reason)}</li>" for reason in target.get("why") or [])
    return f"<p class=\"target\">Target: {_e(describe_target(target))}</p>\n" + (f"<ul>{why}</ul>\n" if why else "")


def _lead(report: dict[str, Any], metric: str) -> str:
    """One line under the title: criterion, target and metric, when the config has them."""
    config = report.get("config") or {}
    facts = [f"metric: {metric}"]
    if config.get("criterion") is not None:
        facts.insert(0, f"criterion: {config['criterion']}")
    if config.get("ratio") is not None:
        facts.insert(1, f"target ratio: {config_value(config['ratio'])}")
    elif config.get("threshold") is not None:
        facts.insert(1, f"threshold: {config_value(config['threshold'])}")
    return f"<p class=\"lead\">{_e(' | '.join(facts))}</p>\n"


def _summary_table(before: dict[str, Any], after: dict[str, Any], metric: str) -> str:
    """The before/after/change table, with the same cells as the text report."""
    return _table(["", "before", "after", "change"], summary_rows(before, after, metric), "lrrl")


def _layers_table(layers: Sequence[dict[str, Any]]) -> str:
    """One row per layer: width before, after, kept share as a number and a bar."""
    if not layers:
        return "<p class=\"muted\">No layers recorded.</p>\n"
    rows = []
    for layer in layers:
        width_before, width_after = layer["width_before"], layer["width_after"]
        kept = width_after / width_before if width_before else None
        rows.append([str(layer["name"]), str(width_before), str(width_after),
                     format_fraction(kept), _bar(kept), "; ".join(layer.get("kept_because") or [])])
    return _table(["layer", "before", "after", "kept", "", "kept because"], rows, "lrrrll")


def _fixed_table(fixed: dict[str, Any]) -> str:
    """One row per layer that was not pruned, with the reasons."""
    if not fixed:
        return "<p class=\"muted\">No layers were held fixed.</p>\n"
    rows = [[str(name), _reasons(reasons)] for name, reasons in fixed.items()]
    return _table(["layer", "why it was not pruned"], rows, "ll")


def _steps_lead(report: dict[str, Any], metric: str) -> str:
    """The reference validation metric and the tolerance each attempt was held to."""
    facts = []
    if report.get("reference_val") is not None:
        facts.append(f"validation {metric} of the unpruned model: {format_metric(report['reference_val'])}")
    tolerance = (report.get("config") or {}).get("tolerance")
    if tolerance is not None:
        facts.append(f"largest accepted drop: {config_value(tolerance)}")
    return f"<p>{_e('; '.join(facts))}.</p>\n" if facts else ""


def _steps_table(steps: Sequence[dict[str, Any]], metric: str) -> str:
    """One row per attempt; rolled-back rows get the class ``rolled-back``."""
    if not steps:
        return "<p class=\"muted\">No steps recorded.</p>\n"
    rows, classes = [], []
    for step in steps:
        accepted = bool(step.get("accepted"))
        rows.append([
            str(step.get("step", "")),
            str(step.get("attempt", "")),
            format_fraction(step.get("target_ratio")),
            format_count(step.get("removed")),
            format_metric(step.get("accuracy")),
            _Raw(f"<td class=\"result\">{'accepted' if accepted else 'rolled back'}</td>"),
            str(step.get("reason", "")),
        ])
        classes.append("accepted" if accepted else "rolled-back")
    headers = ["step", "attempt", "target", "removed", f"validation {metric}", "result", "reason"]
    return _table(headers, rows, "rrrrrll", classes)


def _config_table(config: dict[str, Any]) -> str:
    """One row per config entry, values rendered as in the text report."""
    rows = [[str(key), config_value(value)] for key, value in config.items()]
    return _table(["setting", "value"], rows, "lc")


def _image(name: str, fig: Any, report: dict[str, Any]) -> str:
    """A ``<figure>`` with the PNG of ``fig`` inline and its alt text."""
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    alt = _alt_text(name, report)
    return (f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{_e(alt)}\">"
            f"<figcaption>{_e(alt)}</figcaption></figure>\n")


def _alt_text(name: str, report: dict[str, Any]) -> str:
    """Describe a figure in words, for screen readers and broken images."""
    metric = str(report.get("metric") or "accuracy")
    if name == "widths":
        widths = ", ".join(f"{layer['name']} {layer['width_before']} to {layer['width_after']}"
                           for layer in report.get("layers") or [])
        return f"Layer widths before and after pruning: {widths}."
    if name == "steps":
        steps = report.get("steps") or []
        accepted = sum(bool(step.get("accepted")) for step in steps)
        return (f"Validation {metric} of each pruning attempt ({accepted} accepted, "
                f"{len(steps) - accepted} rolled back), with the neurons each attempt removed.")
    if name == "sensitivity":
        return (f"Validation {metric} against the fraction of each layer removed, "
                f"for {len(report['sensitivity'])} layers.")
    criteria = ", ".join(str(c) for c in report["scores"])
    return f"Histograms of neuron scores per layer under the criteria {criteria}."


def _section(title: str, *parts: str) -> str:
    """An ``<h2>`` heading followed by ready HTML parts."""
    return f"<section>\n<h2>{_e(title)}</h2>\n{''.join(parts)}</section>\n"


def _table(headers: list[str], rows: list[list[str]], align: str,
           row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; ``align`` holds per column "l", "r" (numeric) or "c" (code)."""
    kinds = {"l": "", "r": " class=\"num\"", "c": " class=\"code\""}
    head = "".join(f"<th{kinds[how] if how == 'r' else ''}>{_e(h)}</th>" for h, how in zip(headers, align))
    lines = [f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"]
    for i, row in enumerate(rows):
        css = f" class=\"{row_classes[i]}\"" if row_classes else ""
        cells = "".join(cell if isinstance(cell, _Raw) else f"<td{kinds[how]}>{_e(cell)}</td>"
                        for cell, how in zip(row, align))
        lines.append(f"<tr{css}>{cells}</tr>\n")
    lines.append("</tbody>\n</table>\n")
    return "".join(lines)


def _bar(share: float | None) -> _Raw:
    """A cell with a horizontal bar showing the kept share."""
    if share is None:
        return _Raw("<td></td>")
    percent = min(100.0, max(0.0, share * 100))
    return _Raw(f"<td><span class=\"bar\" role=\"img\" aria-label=\"{percent:.1f} % kept\">"
                f"<span style=\"width: {percent:.1f}%\"></span></span></td>")


def _reasons(reasons: Any) -> str:
    """Join a list of reasons with "; " (a single string is kept as it is)."""
    if isinstance(reasons, str):
        return reasons
    return "; ".join(str(reason) for reason in reasons) or "fixed"


def _e(value: Any) -> str:
    """Escape a value for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)
