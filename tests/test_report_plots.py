"""Tests of neuroprune.report.plots: figures of a report, and PNG files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from neuroprune.report.plots import (FIGURE_FILES, figure_png, make_figures, plot_layer_widths,
                                     plot_score_distributions, plot_sensitivity, plot_steps,
                                     save_figures)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_report(optional: bool = True) -> dict:
    """A small report with a rolled-back attempt, an empty attempt and, optionally,
    sensitivity curves and scores."""
    side = {"params": 17_226, "flops": 34_048, "size_bytes": 69_344, "accuracy": 0.9722,
            "latency_ms": {"batch_1": 0.024, "batch_64": 0.046}}
    after = {"params": 2_778, "flops": 5_440, "size_bytes": 11_544, "accuracy": 0.9667,
             "latency_ms": {"batch_1": 0.023, "batch_64": 0.032}}
    steps = [
        {"step": 1, "attempt": 1, "target_ratio": 0.25, "removed": 48, "accuracy": 0.949,
         "drop": 0.004, "accepted": True, "reason": "validation drop +0.0040 <= tolerance 0.02"},
        {"step": 2, "attempt": 1, "target_ratio": 0.5, "removed": 96, "accuracy": 0.871,
         "drop": 0.082, "accepted": False, "reason": "validation drop +0.0820 > tolerance 0.02"},
        {"step": 2, "attempt": 2, "target_ratio": 0.5, "removed": 48, "accuracy": 0.944,
         "drop": 0.009, "accepted": True, "reason": "validation drop +0.0090 <= tolerance 0.02"},
        {"step": 3, "attempt": 1, "target_ratio": 0.75, "removed": 0, "accuracy": None,
         "accepted": False, "reason": "nothing to remove"},
    ]
    report = {
        "metric": "accuracy", "reference_val": 0.953, "before": side, "after": after, "steps": steps,
        "layers": [{"name": "fc1", "width_before": 128, "width_after": 64},
                   {"name": "fc2", "width_before": 64, "width_after": 32},
                   {"name": "head", "width_before": 10, "width_after": 10}],
        "fixed_layers": {"fc3": ["model output"]},
        "config": {"criterion": "magnitude", "ratio": 0.75, "tolerance": 0.02, "ignore": []},
    }
    if optional:
        ratios = [0.1, 0.2, 0.3, 0.4]
        report["sensitivity"] = {"fc1": {"ratios": ratios, "metric": [0.95, 0.94, 0.92, 0.85]},
                                 "fc2": {"ratios": ratios, "metric": [0.95, 0.95, 0.93, 0.90]}}
        rng = np.random.default_rng(0)
        report["scores"] = {
            "magnitude": {"fc1": rng.random(128).tolist(), "fc2": rng.random(64).tolist()},
            "rank": {"fc1": rng.random(128).tolist(), "fc2": rng.random(64).tolist()},
            "taylor": {"fc1": rng.random(128).tolist(), "fc2": rng.random(64).tolist()},
        }
    return report


def line(ax, label):
    return next(line for line in ax.lines if line.get_label() == label)


def test_layer_widths_has_grouped_bars_per_layer():
    fig = plot_layer_widths(make_report())
    (ax,) = fig.axes
    before, after = ax.containers
    assert [bar.get_height() for bar in before] == [128, 64, 10]
    assert [bar.get_height() for bar in after] == [64, 32, 10]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["fc1", "fc2", "head"]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["before", "after"]


def test_steps_marks_accepted_and_rolled_back_attempts():
    fig = plot_steps(make_report())
    metric_ax, removed_ax = fig.axes
    accepted, rolled_back = line(metric_ax, "accepted"), line(metric_ax, "rolled back")
    assert list(accepted.get_xdata()) == [1, 3]
    assert list(accepted.get_ydata()) == pytest.approx([0.949, 0.944])
    assert list(rolled_back.get_xdata()) == [2]  # the attempt without a metric has no marker
    assert rolled_back.get_markerfacecolor() == "none"
    assert accepted.get_markerfacecolor() != "none"
    assert [bar.get_height() for bar in removed_ax.patches] == [48, 96, 48, 0]
    assert line(metric_ax, "reference").get_ydata()[0] == pytest.approx(0.953)
    assert line(metric_ax, "tolerance limit").get_ydata()[0] == pytest.approx(0.933)
    assert [t.get_text() for t in metric_ax.get_xticklabels()] == ["1.1", "2.1", "2.2", "3.1"]


def test_sensitivity_has_one_line_per_layer():
    fig = plot_sensitivity(make_report())
    (ax,) = fig.axes
    layer_lines = [line for line in ax.lines if line.get_label() in {"fc1", "fc2"}]
    assert len(layer_lines) == 2
    assert list(line(ax, "fc2").get_ydata()) == [0.95, 0.95, 0.93, 0.90]


def test_sensitivity_rejects_mismatched_lengths():
    report = {"sensitivity": {"fc9": {"ratios": [0.1, 0.2], "metric": [0.9]}}}
    with pytest.raises(ValueError, match="fc9"):
        plot_sensitivity(report)


def test_score_distributions_grid_is_layers_by_criteria():
    fig = plot_score_distributions(make_report())
    assert len(fig.axes) == 2 * 3
    assert all(len(ax.patches) >= 5 for ax in fig.axes)
    assert fig.axes[1].get_title() == "fc1 / rank"


def test_score_distributions_notes_missing_and_non_finite_scores():
    report = {"scores": {"a": {"fc1": [1.0, float("nan"), 2.0, 3.0]}, "b": {"fc2": [float("inf")]}}}
    fig = plot_score_distributions(report)
    fc1_a, fc1_b, fc2_a, fc2_b = fig.axes
    assert "1 non-finite left out" in fc1_a.get_title()
    assert [t.get_text() for t in fc1_b.texts] == ["no scores"]
    assert [t.get_text() for t in fc2_b.texts] == ["no finite scores"]
    assert not fc2_a.patches


def test_optional_figures_are_none_when_their_key_is_absent():
    report = make_report(optional=False)
    assert plot_sensitivity(report) is None
    assert plot_score_distributions(report) is None
    assert plot_layer_widths({}) is None and plot_steps({}) is None
    assert list(make_figures(report)) == ["widths", "steps"]


def test_report_strings_are_not_read_as_mathtext():
    report = {"layers": [{"name": "a$b_{x", "width_before": 4, "width_after": 2}]}
    assert figure_png(plot_layer_widths(report)).startswith(PNG_SIGNATURE)


def test_save_figures_writes_pngs(tmp_path):
    paths = save_figures(make_report(), tmp_path / "figures")
    assert [p.name for p in paths] == list(FIGURE_FILES.values())
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert sorted(os.listdir(tmp_path / "figures")) == sorted(FIGURE_FILES.values())


def test_save_figures_writes_only_what_applies(tmp_path):
    paths = save_figures(make_report(optional=False), tmp_path)
    assert [p.name for p in paths] == ["widths.png", "steps.png"]
    assert sorted(os.listdir(tmp_path)) == ["steps.png", "widths.png"]
