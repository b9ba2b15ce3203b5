"""What a workflow tells its caller while it runs.

A :class:`Listener` does nothing, so a workflow called from a script stays silent; the CLI
subclasses it to print progress notes on stderr, the report table and where things were saved.

Example:
    >>> class Collect(Listener):
    ...     def __init__(self):
    ...         self.lines = []
    ...     def note(self, message):
    ...         self.lines.append(message)
    >>> listener = Collect()
    >>> listener.note("budget search done")
    >>> listener.saved(None)  # not overridden: nothing happens
    >>> listener.lines
    ['budget search done']
"""

from __future__ import annotations

from typing import Any


class Listener:
    """Hooks a workflow calls at its milestones; every method does nothing here."""

    def note(self, message: str) -> None:
        """A progress line for people (the CLI prints it on stderr)."""

    def report_ready(self, result: Any) -> None:
        """The result's report is complete; nothing has been saved yet."""

    def saved(self, outputs: Any) -> None:
        """The result folder and the JSON copy of the report (where asked for) are written."""

    def epoch_done(self, record: dict[str, Any], epochs: int, metric_name: str) -> None:
        """``train_prune``: an epoch finished; ``record`` is its entry of ``report["steps"]`` (its
        ``"accuracy"`` holds the validation value of the task's metric, ``metric_name``)."""
