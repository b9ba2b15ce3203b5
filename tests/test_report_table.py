"""Tests of neuroprune.report.table: text rendering and JSON storage."""

from __future__ import annotations

import os

import pytest

from neuroprune.report.table import format_report, read_report_json, write_report_json


def make_report(accuracy_before=0.974, accuracy_after=0.968) -> dict:
    before = {
        "params": 101_770,
        "flops": 203_264,
        "size_bytes": 409_000,
        "accuracy": accuracy_before,
        "latency_ms": {"batch_1": 0.12, "batch_64": 2.4},
    }
    after = {
        "params": 25_300,
        "flops": 50_600,
        "size_bytes": 101_700,
        "accuracy": accuracy_after,
        "latency_ms": {"batch_1": 0.06, "batch_64": 1.2},
    }
    steps = [
        {"step": 1, "attempt": 1, "target_ratio": 0.25, "removed": 48, "accuracy": 0.97,
         "accepted": True, "reason": "drop 0.004 <= tolerance 0.02"},
        {"step": 2, "attempt": 1, "target_ratio": 0.5, "removed": 96, "accuracy": 0.91,
         "accepted": False, "reason": "drop 0.064 > tolerance 0.02"},
    ]
    layers = [
        {"name": "fc1", "width_before": 128, "width_after": 32},
        {"name": "encoder.ffn", "width_before": 1536, "width_after": 1536},
    ]
    return {"metric": "accuracy", "before": before, "after": after, "steps": steps,
            "layers": layers, "config": {"ratio": 0.75, "tolerance": 0.02}}


def test_summary_shows_numbers_and_changes():
    text = format_report(make_report())
    for expected in ["101,770", "25,300", "0.203 MFLOPs", "399.4 KiB", "99.3 KiB",
                     "97.40 %", "96.80 %", "4.02x smaller", "-0.6 pt", "2.0x faster"]:
        assert expected in text


def test_steps_are_marked_accepted_or_rolled_back():
    text = format_report(make_report())
    accepted = next(line for line in text.splitlines() if "drop 0.004" in line)
    rolled_back = next(line for line in text.splitlines() if "drop 0.064" in line)
    assert "accepted" in accepted and "rolled back" not in accepted
    assert "rolled back" in rolled_back


def test_layer_rows_show_widths_and_bars():
    lines = format_report(make_report()).splitlines()
    fc1 = next(line for line in lines if line.startswith("fc1 "))
    assert "128 -> 32" in fc1 and "#####---------------" in fc1 and "25.0 %" in fc1
    full = next(line for line in lines if line.startswith("encoder.ffn"))
    assert "1536 -> 1536" in full and "#" * 20 in full


def test_columns_are_aligned_and_plain_ascii():
    text = format_report(make_report())
    assert text.isascii() and "\x1b" not in text
    lines = text.splitlines()
    header = next(line for line in lines if line.strip().startswith("before"))
    before_end = header.index("before") + len("before")
    for label, cell in [("parameters", "101,770"), ("FLOPs", "0.203 MFLOPs"),
                        ("size", "399.4 KiB"), ("latency batch 64", "2.40 ms")]:
        row = next(line for line in lines if line.startswith(label))
        assert row.index(cell) + len(cell) == before_end, row


def test_accuracy_none_is_shown_as_not_available():
    text = format_report(make_report(None, None))
    metric_line = next(line for line in text.splitlines() if line.startswith("accuracy"))
    assert metric_line.split() == ["accuracy", "n/a", "n/a", "n/a"]


def test_metric_name_is_used():
    report = make_report()
    report["metric"] = "spearman"
    text = format_report(report)
    assert "spearman" in text


def test_large_values_use_gflops_and_mib():
    report = make_report()
    report["before"].update(flops=4_500_000_000, size_bytes=90 * 1024**2)
    text = format_report(report)
    assert "4.50 GFLOPs" in text and "90.00 MiB" in text


def test_missing_key_is_rejected():
    report = make_report()
    del report["after"]["flops"]
    with pytest.raises(ValueError, match="flops"):
        format_report(report)


def test_empty_steps_and_layers():
    report = make_report()
    report["steps"], report["layers"] = [], []
    text = format_report(report)
    assert "no steps" in text and "no layers" in text


def test_json_round_trip(tmp_path):
    report = make_report()
    path = tmp_path / "report.json"
    write_report_json(report, path)
    assert read_report_json(path) == report
    assert path.read_text().startswith("{\n  ")  # indented
    assert os.listdir(tmp_path) == ["report.json"]


def _failing_replace(src, dst):
    raise OSError("disk gone")


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    monkeypatch.setattr(os, "replace", _failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_report_json(make_report(), path)
    assert os.listdir(tmp_path) == []


def test_interrupted_write_keeps_old_report(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    write_report_json({"old": True}, path)
    monkeypatch.setattr(os, "replace", _failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_report_json(make_report(), path)
    assert read_report_json(path) == {"old": True}
    assert os.listdir(tmp_path) == ["report.json"]


def test_read_rejects_non_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="list"):
        read_report_json(path)
