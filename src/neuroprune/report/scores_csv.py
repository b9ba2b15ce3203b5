"""Write every neuron's scores and the pruning decision as CSV ("why this neuron").

Example:
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "scores.csv"
    >>> write_scores_csv(target, {"magnitude": {"fc1": [0.5, 0.125]}}, {"fc1": [1]})
    >>> print(target.read_text(), end="")
    layer,neuron,magnitude,decision
    fc1,0,0.5,kept
    fc1,1,0.125,removed
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from neuroprune.core.atomic import write_atomic
from neuroprune.core.errors import ReportError


def write_scores_csv(
    path: str | os.PathLike[str],
    scores: Mapping[str, Mapping[str, Iterable[float]]],
    removed: Mapping[str, Iterable[int]],
) -> None:
    """Write one CSV row per neuron: its layer, index, score per criterion and decision.

    The header is ``layer,neuron,<criterion>...,decision`` with the criteria in the order
    of ``scores``; rows are sorted by layer name, then neuron index. Scores are written
    in Python's shortest round-trip form (``nan`` and ``inf`` as such); a criterion that
    does not score a layer leaves its cells empty. The decision is ``removed`` for the
    indices in ``removed[layer]``, else ``kept``. The file is written atomically: a
    temporary file in the target's folder replaces the target with ``os.replace``.

    Args:
        path: The CSV file to write.
        scores: ``scores[criterion][layer]`` holds one score per neuron of the layer.
        removed: ``removed[layer]`` holds the indices of the layer's removed neurons.

    Raises:
        ValueError: If the criteria give a layer different neuron counts, or ``removed``
            names a layer without scores or an index outside the layer (the message
            names the layer).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "scores.csv"
        >>> write_scores_csv(target, {"l1": {"fc1": [0.5, 0.25]}, "rank": {"fc1": [2, 1]}},
        ...                  {"fc1": [1]})
        >>> target.read_text().splitlines()[:2]
        ['layer,neuron,l1,rank,decision', 'fc1,0,0.5,2.0,kept']
    """
    criteria = list(scores)
    columns = {criterion: {layer: [float(v) for v in values] for layer, values in layers.items()}
               for criterion, layers in scores.items()}
    sizes = _layer_sizes(columns)
    decisions = _removed_sets(removed, sizes)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["layer", "neuron", *criteria, "decision"])
    for layer in sorted(sizes):
        for neuron in range(sizes[layer]):
            cells = [_score_cell(columns[c].get(layer), neuron) for c in criteria]
            decision = "removed" if neuron in decisions.get(layer, ()) else "kept"
            writer.writerow([layer, neuron, *cells, decision])
    write_atomic(Path(path), buffer.getvalue())


def _layer_sizes(columns: dict[str, dict[str, list[float]]]) -> dict[str, int]:
    """Return each layer's neuron count, checking that all criteria agree on it."""
    sizes: dict[str, int] = {}
    first: dict[str, str] = {}
    for criterion, layers in columns.items():
        for layer, values in layers.items():
            if layer not in sizes:
                sizes[layer], first[layer] = len(values), criterion
            elif sizes[layer] != len(values):
                raise ReportError(
                    f"layer {layer!r} has {sizes[layer]} scores under {first[layer]!r} "
                    f"but {len(values)} under {criterion!r}"
                )
    return sizes


def _removed_sets(removed: Mapping[str, Iterable[int]], sizes: dict[str, int]) -> dict[str, set[int]]:
    """Return the removed indices per layer as sets, checking layers and ranges."""
    result = {}
    for layer, indices in removed.items():
        if layer not in sizes:
            raise ReportError(f"removed neurons are given for layer {layer!r}, which has no scores")
        result[layer] = {int(i) for i in indices}
        outside = sorted(i for i in result[layer] if not 0 <= i < sizes[layer])
        if outside:
            raise ReportError(f"layer {layer!r} has {sizes[layer]} neurons; removed indices "
                             f"{outside} are out of range")
    return result


def _score_cell(values: list[float] | None, neuron: int) -> str:
    """Render one score, or an empty cell when the criterion does not score the layer."""
    return "" if values is None else repr(values[neuron])


