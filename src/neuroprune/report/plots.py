"""Draw a pruning report as matplotlib figures, and save them as PNG files.

Figures are built with ``matplotlib.figure.Figure`` on a ``FigureCanvasAgg``: pyplot is
never imported, so no window opens, no backend is switched and no global figure list
grows. A figure needs no closing; drop the reference when done. matplotlib loads on the first
drawing, not on import (so ``import neuroprune`` stays cheap).

Every ``plot_*`` function returns None when the report has nothing for it to draw (no
layers, no steps, no ``"sensitivity"`` or no ``"scores"`` key).

Example:
    >>> report = {"layers": [{"name": "fc1", "width_before": 128, "width_after": 32}]}
    >>> fig = plot_layer_widths(report)
    >>> len(fig.axes), figure_png(fig)[:4]
    (1, b'\\x89PNG')
    >>> plot_sensitivity(report) is None
    True
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuroprune.core.atomic import write_atomic
from neuroprune.core.errors import ReportError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: File name of each figure that :func:`save_figures` writes, in the order it writes them.
FIGURE_FILES = {
    "widths": "widths.png",
    "steps": "steps.png",
    "sensitivity": "sensitivity.png",
    "scores": "scores.png",
}

_BEFORE_COLOR = "#aab4c3"
_AFTER_COLOR = "#2f6db5"
_REJECT_COLOR = "#c0392b"
_REMOVED_COLOR = "#d9dee7"
_MAX_WIDTH_IN = 16.0
_MAX_LABELLED_BARS = 24
_MAX_STEP_TICKS = 30


def plot_layer_widths(report: dict[str, Any]) -> Figure | None:
    """Draw grouped bars of each layer's width before and after pruning.

    Returns:
        A figure with one axes holding two bar containers ("before", "after"), or None
        when the report lists no layers.

    Example:
        >>> fig = plot_layer_widths({"layers": [
        ...     {"name": "fc1", "width_before": 128, "width_after": 32},
        ...     {"name": "fc2", "width_before": 64, "width_after": 16}]})
        >>> [len(bars) for bars in fig.axes[0].containers]
        [2, 2]
    """
    layers = report.get("layers") or []
    if not layers:
        return None
    names = [_text(layer["name"]) for layer in layers]
    x = np.arange(len(names))
    fig = _new_figure(min(_MAX_WIDTH_IN, max(5.0, 1.5 + 0.5 * len(names))), 3.8)
    ax = fig.add_subplot()
    half = 0.4
    before = ax.bar(x - half / 2, [layer["width_before"] for layer in layers], half,
                    label="before", color=_BEFORE_COLOR)
    after = ax.bar(x + half / 2, [layer["width_after"] for layer in layers], half,
                   label="after", color=_AFTER_COLOR)
    if len(names) <= _MAX_LABELLED_BARS:
        ax.bar_label(before, fontsize=7, padding=1)
        ax.bar_label(after, fontsize=7, padding=1)
    crowded = len(names) > 8 or max(len(name) for name in names) > 8
    ax.set_xticks(x, names, rotation=40 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel("width (neurons, channels or heads)")
    ax.set_title("Layer widths before and after pruning")
    ax.margins(y=0.12)
    ax.legend()
    return fig


def plot_steps(report: dict[str, Any]) -> Figure | None:
    """Draw the validation metric of every pruning attempt, and the neurons it removed.

    The x axis counts attempts in order (ticks read ``step.attempt``). Accepted attempts
    are filled markers on a line (label ``"accepted"``), rolled-back ones hollow red
    markers (label ``"rolled back"``); attempts without a metric (nothing removed) have
    no marker. Grey bars on a second y axis show the neurons each attempt removed. A
    dashed line marks ``reference_val`` and a dotted one the tolerance limit.

    Returns:
        A figure with two axes (metric, then neurons removed), or None without steps.

    Example:
        >>> fig = plot_steps({"reference_val": 0.95, "steps": [
        ...     {"step": 1, "attempt": 1, "removed": 28, "accuracy": 0.949, "accepted": True},
        ...     {"step": 2, "attempt": 1, "removed": 40, "accuracy": 0.90, "accepted": False}]})
        >>> len(fig.axes), [line.get_label() for line in fig.axes[0].lines][:2]
        (2, ['accepted', 'rolled back'])
    """
    steps = report.get("steps") or []
    if not steps:
        return None
    metric = _text(report.get("metric") or "accuracy")
    attempts = np.arange(1, len(steps) + 1)
    fig = _new_figure(min(_MAX_WIDTH_IN, max(6.0, 2.0 + 0.45 * len(steps))), 4.2)
    ax = fig.add_subplot()
    removed_ax = ax.twinx()
    _draw_removed_bars(removed_ax, attempts, [step.get("removed") or 0 for step in steps])
    ax.set_zorder(removed_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    _draw_attempt_markers(ax, attempts, steps)
    _draw_reference_lines(ax, report)
    if len(steps) <= _MAX_STEP_TICKS:
        ax.set_xticks(attempts, [f"{step.get('step', '')}.{step.get('attempt', '')}" for step in steps])
    if _all_fractions(line.get_ydata() for line in ax.lines):
        ax.yaxis.set_major_formatter(_percent_formatter(1.0))
    ax.set_xlabel("attempt (step.attempt)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Pruning attempts")
    handles, labels = ax.get_legend_handles_labels()
    bar_handles, bar_labels = removed_ax.get_legend_handles_labels()
    fig.legend(handles + bar_handles, labels + bar_labels, loc="outside lower center",
               ncols=min(5, len(labels) + len(bar_labels)), fontsize=8, frameon=False)
    return fig


def plot_sensitivity(report: dict[str, Any]) -> Figure | None:
    """Draw one line per layer: the metric against the fraction of the layer removed.

    Reads ``report["sensitivity"][layer] = {"ratios": [...], "metric": [...]}``. A dashed
    line (label ``"reference"``) marks ``reference_val`` when present.

    Returns:
        A figure with one axes, or None when the report has no sensitivity data.

    Raises:
        ValueError: If a layer has not as many metric values as ratios.

    Example:
        >>> fig = plot_sensitivity({"sensitivity": {
        ...     "fc1": {"ratios": [0.25, 0.5], "metric": [0.95, 0.9]},
        ...     "fc2": {"ratios": [0.25, 0.5], "metric": [0.94, 0.8]}}})
        >>> [line.get_label() for line in fig.axes[0].lines]
        ['fc1', 'fc2']
    """
    sensitivity = report.get("sensitivity")
    if not sensitivity:
        return None
    metric = _text(report.get("metric") or "accuracy")
    fig = _new_figure(7.5 if len(sensitivity) > 12 else 6.0, 4.0)
    ax = fig.add_subplot()
    colors = _colors(len(sensitivity))
    for color, (name, curve) in zip(colors, sensitivity.items()):
        ratios, values = list(curve["ratios"]), list(curve["metric"])
        if len(ratios) != len(values):
            raise ReportError(f"sensitivity of layer {name!r} has {len(ratios)} ratios "
                             f"but {len(values)} metric values")
        ax.plot(ratios, values, marker="o", markersize=3, color=color, label=_text(name))
    if report.get("reference_val") is not None:
        ax.axhline(report["reference_val"], color="black", linestyle="--", linewidth=0.8,
                   label="reference")
    ax.xaxis.set_major_formatter(_percent_formatter(1.0, decimals=0))
    if _all_fractions(line.get_ydata() for line in ax.lines):
        ax.yaxis.set_major_formatter(_percent_formatter(1.0))
    ax.set_xlabel("fraction of the layer removed")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Sensitivity per layer")
    ax.grid(alpha=0.3)
    if len(sensitivity) > 12:
        fig.legend(loc="outside right upper", fontsize=7)
    else:
        ax.legend(fontsize=8)
    return fig


def plot_score_distributions(report: dict[str, Any]) -> Figure | None:
    """Draw a histogram of the neuron scores of every layer under every criterion.

    Reads ``report["scores"][criterion][layer] = [score per neuron]``. The grid has one
    row per layer (in first-seen order) and one column per criterion; a cell without
    scores, or with only non-finite ones, says so instead of drawing bars. Non-finite
    scores are left out of the histograms, and the title counts them.

    Returns:
        A figure with ``layers x criteria`` axes, or None when there are no scores.

    Example:
        >>> fig = plot_score_distributions({"scores": {
        ...     "magnitude": {"fc1": [0.1, 0.5, 0.2], "fc2": [1.0, 2.0]},
        ...     "rank": {"fc1": [3.0, 1.0, 2.0], "fc2": [1.0, 0.0]}}})
        >>> len(fig.axes)
        4
    """
    scores = report.get("scores")
    if not scores:
        return None
    criteria = list(scores)
    layers = list(dict.fromkeys(layer for criterion in criteria for layer in scores[criterion]))
    if not layers:
        return None
    fig = _new_figure(min(_MAX_WIDTH_IN, 1.0 + 3.4 * len(criteria)), 0.8 + 2.0 * len(layers))
    grid = fig.subplots(len(layers), len(criteria), squeeze=False)
    for row, layer in enumerate(layers):
        for col, criterion in enumerate(criteria):
            values = scores[criterion].get(layer)
            _draw_histogram(grid[row][col], values, f"{_text(layer)} / {_text(criterion)}")
    fig.suptitle("Neuron score distributions")
    return fig


def make_figures(report: dict[str, Any]) -> dict[str, Figure]:
    """Build every figure that applies to the report, keyed as in :data:`FIGURE_FILES`.

    Example:
        >>> list(make_figures({"layers": [{"name": "fc1", "width_before": 8, "width_after": 4}]}))
        ['widths']
    """
    builders = {
        "widths": plot_layer_widths,
        "steps": plot_steps,
        "sensitivity": plot_sensitivity,
        "scores": plot_score_distributions,
    }
    figures = {name: build(report) for name, build in builders.items()}
    return {name: fig for name, fig in figures.items() if fig is not None}


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure as PNG bytes.

    Example:
        >>> figure_png(plot_layer_widths({"layers": [
        ...     {"name": "fc1", "width_before": 8, "width_after": 4}]}))[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figures(report: dict[str, Any], folder: str | os.PathLike[str]) -> list[Path]:
    """Write each applicable figure as a PNG into ``folder`` (created if missing).

    Files are named as in :data:`FIGURE_FILES` and written atomically (temporary file,
    then ``os.replace``); figures that do not apply are not written.

    Returns:
        The paths written, in the order of :data:`FIGURE_FILES`.

    Example:
        >>> import tempfile
        >>> paths = save_figures({"layers": [
        ...     {"name": "fc1", "width_before": 8, "width_after": 4}]}, tempfile.mkdtemp())
        >>> [path.name for path in paths]
        ['widths.png']
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in make_figures(report).items():
        path = folder / FIGURE_FILES[name]
        write_atomic(path, figure_png(fig))
        paths.append(path)
    return paths


def _new_figure(width: float, height: float) -> Figure:
    """Return an empty figure with constrained layout, attached to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (heavy: load when drawing)
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _draw_removed_bars(ax: Any, attempts: np.ndarray, removed: list[int]) -> None:
    """Draw the neurons removed per attempt as pale bars in the lower part of ``ax``."""
    ax.bar(attempts, removed, width=0.6, color=_REMOVED_COLOR, label="neurons removed")
    ax.set_ylim(0, max(1, max(removed)) * 2.5)
    ax.set_ylabel("neurons removed", color="#6b7686")
    ax.tick_params(axis="y", colors="#6b7686")


def _draw_attempt_markers(ax: Any, attempts: np.ndarray, steps: list[dict[str, Any]]) -> None:
    """Plot accepted attempts as a filled line and rolled-back ones as hollow red rings."""
    measured = np.array([step.get("accuracy") is not None for step in steps], dtype=bool)
    passed = np.array([bool(step.get("accepted")) for step in steps], dtype=bool)
    accepted, rejected = measured & passed, measured & ~passed
    values = np.array([np.nan if step.get("accuracy") is None else step["accuracy"] for step in steps],
                      dtype=float)
    ax.plot(attempts[accepted], values[accepted], marker="o", color=_AFTER_COLOR, label="accepted")
    ax.plot(attempts[rejected], values[rejected], marker="o", linestyle="none", markersize=8,
            markerfacecolor="none", markeredgecolor=_REJECT_COLOR, markeredgewidth=1.5,
            label="rolled back")


def _draw_reference_lines(ax: Any, report: dict[str, Any]) -> None:
    """Mark the unpruned validation metric and, with a tolerance, the lowest accepted value."""
    reference = report.get("reference_val")
    if reference is None:
        return
    ax.axhline(reference, color="black", linestyle="--", linewidth=0.8, label="reference")
    tolerance = (report.get("config") or {}).get("tolerance")
    if isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool):
        ax.axhline(reference - tolerance, color=_REJECT_COLOR, linestyle=":", linewidth=1.0,
                   label="tolerance limit")


def _draw_histogram(ax: Any, values: Any, title: str) -> None:
    """Draw one histogram of finite scores, or a note when there is none."""
    scores = np.asarray([] if values is None else list(values), dtype=float)
    finite = scores[np.isfinite(scores)]
    left_out = scores.size - finite.size
    ax.set_title(title + (f" ({left_out} non-finite left out)" if left_out else ""), fontsize=8)
    ax.tick_params(labelsize=7)
    if finite.size == 0:
        ax.text(0.5, 0.5, "no scores" if values is None else "no finite scores",
                ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    bins = min(30, max(5, math.ceil(math.sqrt(finite.size))))
    ax.hist(finite, bins=bins, color=_AFTER_COLOR, edgecolor="white", linewidth=0.5)
    ax.set_ylabel("neurons", fontsize=7)


def _all_fractions(series: Any) -> bool:
    """Whether every finite value of the given arrays lies in [0, 1] (and there is one)."""
    values = np.concatenate([np.asarray(s, dtype=float).ravel() for s in series] or [np.empty(0)])
    values = values[np.isfinite(values)]
    return values.size > 0 and bool(np.all((values >= 0) & (values <= 1)))


def _percent_formatter(xmax: float, decimals: int | None = None) -> Any:
    from matplotlib.ticker import PercentFormatter  # noqa: PLC0415 (heavy: load when drawing)

    return PercentFormatter(xmax, decimals=decimals)


def _colors(n: int) -> list[Any]:
    """Return ``n`` distinguishable colours (tab10 up to 10, then tab20, then cycling)."""
    from matplotlib import colormaps  # noqa: PLC0415 (heavy: load when drawing)

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _text(value: Any) -> str:
    """Return a report string for matplotlib, with ``$`` escaped so it is not mathtext."""
    return str(value).replace("$", r"\$")


