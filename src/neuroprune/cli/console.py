"""What the CLI prints: warnings as one line each, notes on stderr, and the workflows' milestones.

Example:
    >>> import argparse
    >>> listener = PrintingListener(argparse.Namespace(quiet=False))
    >>> listener.epoch_done({"step": 1, "target_ratio": 0.25, "accuracy": 0.9}, 3, "accuracy")
    epoch 1/3: 25% masked, val accuracy 0.9000
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neuroprune.core.errors import NeuropruneWarning
from neuroprune.core.target import warning_line
from neuroprune.report.table import format_report
from neuroprune.workflows.listener import Listener


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Print every :class:`~neuroprune.core.errors.NeuropruneWarning` as one line ``neuroprune: warning: …``
    on stderr (each distinct message once); other warnings keep Python's format."""
    with warnings.catch_warnings():
        warnings.simplefilter("default", NeuropruneWarning)
        original = warnings.showwarning
        shown: set[str] = set()

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, NeuropruneWarning):
                if str(message) not in shown:  # the same check may run twice (before training, in prune)
                    shown.add(str(message))
                    print(f"neuroprune: warning: {message}", file=sys.stderr)
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def print_err(message: str) -> None:
    print(message, file=sys.stderr)


class PrintingListener(Listener):
    """Prints a workflow's notes on stderr, its report table on stdout (with a warning line on stderr when
    the target was missed, unless ``warn_missed_target`` is off) and, unless ``announce_saved`` is off,
    where the result folder was saved."""

    def __init__(self, args: argparse.Namespace, *, warn_missed_target: bool = True, announce_saved: bool = True):
        self.args, self.warn_missed_target, self.announce_saved = args, warn_missed_target, announce_saved

    def note(self, message: str) -> None:
        print_err(message)

    def report_ready(self, result: Any) -> None:
        print(format_report(result.report))
        target = result.report.get("target")
        if self.warn_missed_target and target and not target["reached"]:
            print_err("neuroprune: warning: " + warning_line(target))

    def saved(self, outputs: Any) -> None:
        folder = Path(outputs.folder) if outputs is not None and outputs.folder else None
        if self.announce_saved and folder is not None and folder.is_dir():  # (only rank 0's machine has it)
            names = sorted(path.name + ("/" if path.is_dir() else "") for path in folder.iterdir())
            print(f"\nsaved to {outputs.folder}/ ({', '.join(names)})")

    def epoch_done(self, record: dict[str, Any], epochs: int, metric_name: str) -> None:
        if not getattr(self.args, "quiet", False):
            print(f"epoch {record['step']}/{epochs}: {record['target_ratio']:.0%} masked, val {metric_name} "
                  f"{record['accuracy']:.4f}")
