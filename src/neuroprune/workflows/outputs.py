"""The one place where workflows write their outputs: the result folder, report JSON, scores, curves.

Every file goes through :mod:`neuroprune.core.atomic` (a path holds a complete old or new version).
Under torchrun every rank calls these functions and rank 0 writes (the result folder's save is a
collective of its own: the other ranks wait for it).
:class:`Outputs` says where a run writes and collects, in ``kept``, a sentence per output already
written, which the CLI reports when a run is interrupted.

Example:
    >>> import tempfile, torch.nn as nn
    >>> from neuroprune.core.loop import PruneResult
    >>> from neuroprune.core.plan import PruningPlan
    >>> folder = tempfile.mkdtemp() + "/out"
    >>> outputs = Outputs(folder=folder, html=False)
    >>> save_result(PruneResult(nn.Linear(2, 2), PruningPlan(), {"metric": "accuracy"}), outputs)
    >>> outputs.kept == [f"the pruned model in {folder}/"]
    True
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuroprune.core.atomic import remove_folder, write_atomic
from neuroprune.report.scores_csv import write_scores_csv
from neuroprune.report.table import write_report_json
from neuroprune.torch.checkpoint import is_checkpoint
from neuroprune.torch.distributed import is_writer


@dataclass
class Outputs:
    """Where a workflow writes.

    Attributes:
        folder: the result folder (model, plan, report, ``report.html``, figures); ``None``: none.
        json: a copy of the report as JSON; ``None``: none.
        overwrite: replace an existing result folder.
        html: write ``report.html`` and the figures into the folder.
        extra_files: further files for the folder (relative name -> content), e.g. a tokenizer's.
        kept: one sentence per output written so far (appended to as they are written).
    """

    folder: str | None = None
    json: str | None = None
    overwrite: bool = False
    html: bool = True
    extra_files: dict[str, Any] | None = None
    kept: list[str] = field(default_factory=list)


def save_result(result: Any, outputs: Outputs, *, again: bool = False) -> None:
    """Write ``result`` (a :class:`~neuroprune.core.loop.PruneResult`) to ``outputs.folder`` and its report
    to ``outputs.json``; ``again`` rewrites both after the report grew (the folder is ours by then)."""
    if outputs.folder:
        result.save(outputs.folder, overwrite=outputs.overwrite or again, html=outputs.html, extra=outputs.extra_files)
        if not again:
            outputs.kept.append(f"the pruned model in {outputs.folder}/")
    if outputs.json:
        if is_writer():
            write_report_json(result.report, outputs.json)
        if not again:
            outputs.kept.append(f"the report in {outputs.json}")


def save_scores(path: str, scores: dict[str, Any], removed: dict[str, Any], outputs: Outputs) -> None:
    """Write every neuron's scores and the decision as CSV (see :mod:`neuroprune.report.scores_csv`)."""
    if is_writer():
        write_scores_csv(path, scores, removed)
    outputs.kept.append(f"the scores in {path}")


def save_sensitivity(result: dict[str, Any], *, json_path: str | None, plot_path: str | None, kept: list[str]) -> None:
    """Write sensitivity curves as JSON and as a PNG plot, where paths are given."""
    if not is_writer():
        return
    if json_path:
        write_atomic(json_path, json.dumps(result, indent=2))
        kept.append(f"the curves in {json_path}")
    if plot_path:
        from neuroprune.report.plots import figure_png, plot_sensitivity  # matplotlib only when drawing

        write_atomic(plot_path, figure_png(plot_sensitivity({"sensitivity": result["layers"], "metric": result["metric"]})))


def discard_checkpoint(path: str | None) -> None:
    """Remove a checkpoint folder of ours once the run it served is saved (a folder that is not a
    checkpoint is left alone)."""
    if path is not None and is_writer() and is_checkpoint(path):
        remove_folder(path)


def tokenizer_files(tokenizer: Any) -> dict[str, bytes]:
    """The files ``tokenizer.save_pretrained`` writes, as contents, so they are saved with the model
    in one atomic step (an interrupted run never leaves a folder with half of them)."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {str(path.relative_to(folder)): path.read_bytes() for path in Path(folder).rglob("*") if path.is_file()}
