"""What :func:`neuroprune.prune` returns: the pruned model, the plan that replays it, the report.

Saving goes through the model's backend (weights, plan, report and the backend's own files, e.g.
a transformers ``config.json``) plus the HTML report's files from :mod:`neuroprune.report.html`.

Example:
    >>> from neuroprune.core.plan import PruningPlan
    >>> PruneResult(model=None, plan=PruningPlan(adapter="fx"), report={}).plan.adapter
    'fx'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neuroprune.core.backend import get_backend
from neuroprune.core.plan import PruningPlan


@dataclass
class PruneResult:
    """The pruned model, the plan that replays it, and the report."""

    model: Any
    plan: PruningPlan
    report: dict[str, Any]

    def save(self, folder, *, overwrite: bool = False, html: bool = True, extra: dict[str, Any] | None = None) -> None:
        """Write the model, plan and report to ``folder`` (see :func:`neuroprune.torch.io.save`), with
        ``report.html`` and the report's figures as PNGs unless ``html=False``; ``extra`` maps further
        file names to their content (e.g. a tokenizer's files), written in the same atomic step."""
        files = dict(extra or {})
        if html:
            from neuroprune.report.html import report_files  # matplotlib loads only when a report is drawn

            files.update(report_files(self.report))
        get_backend(self.plan.adapter).save(folder, self.model, self.plan, self.report, overwrite=overwrite,
                                            extra=files)
