"""Tests of neuroprune.report.scores_csv: one row per neuron with scores and decision."""

from __future__ import annotations

import os

import pytest

from neuroprune.report.scores_csv import write_scores_csv


def test_exact_content_sorted_by_layer_then_neuron(tmp_path):
    target = tmp_path / "scores.csv"
    scores = {
        "magnitude": {"fc2": [0.5, 1.5], "fc1": [0.25, 0.125, 3.0]},
        "taylor": {"fc2": [2.0, float("nan")], "fc1": [1.0, 0.1, 7.0]},
    }
    write_scores_csv(target, scores, {"fc1": [1], "fc2": [0]})
    assert target.read_text(encoding="utf-8") == (
        "layer,neuron,magnitude,taylor,decision\n"
        "fc1,0,0.25,1.0,kept\n"
        "fc1,1,0.125,0.1,removed\n"
        "fc1,2,3.0,7.0,kept\n"
        "fc2,0,0.5,2.0,removed\n"
        "fc2,1,1.5,nan,kept\n"
    )


def test_layer_names_are_quoted_and_unscored_cells_left_empty(tmp_path):
    target = tmp_path / "scores.csv"
    write_scores_csv(target, {"a": {"x,y": [1.0]}, "b": {"z": [2.0]}}, {})
    assert target.read_text(encoding="utf-8").splitlines() == [
        "layer,neuron,a,b,decision", '"x,y",0,1.0,,kept', "z,0,,2.0,kept"]


def test_criteria_disagreeing_on_a_layer_size_is_an_error(tmp_path):
    scores = {"magnitude": {"fc1": [1.0, 2.0], "fc2": [1.0]}, "rank": {"fc1": [1.0], "fc2": [3.0]}}
    with pytest.raises(ValueError, match="'fc1'.*2 scores under 'magnitude' but 1 under 'rank'"):
        write_scores_csv(tmp_path / "scores.csv", scores, {})
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("removed, message", [({"fc7": [0]}, "'fc7'"), ({"fc1": [0, 2]}, r"'fc1'.*\[2\]")])
def test_removed_must_name_scored_neurons(tmp_path, removed, message):
    with pytest.raises(ValueError, match=message):
        write_scores_csv(tmp_path / "scores.csv", {"m": {"fc1": [1.0, 2.0]}}, removed)


def test_failed_replace_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "scores.csv"
    target.write_text("old\n", encoding="utf-8")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_scores_csv(target, {"m": {"fc1": [1.0]}}, {"fc1": [0]})
    assert target.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["scores.csv"]
