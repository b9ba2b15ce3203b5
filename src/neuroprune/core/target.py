"""Asked vs delivered: did a pruning run reach its target, and if not, why not.

The report's ``"target"`` entry says what was asked (a ratio of the prunable neurons, a
threshold, or a budget), what was delivered, whether that is the target (``reached``) and, when
it is not, ``why``: the rolled-back attempts with their validation drops, the limit that stopped
the loop (attempts, time, retries), and layers held at ``min_width`` or rounded by ``round_to``.

Example:
    >>> target = {"quantity": "ratio", "asked": 0.8, "delivered": 0.466, "asked_units": 640,
    ...           "delivered_units": 373, "total_units": 800, "reached": False,
    ...           "why": ["step 1 attempt 1 rolled back: validation drop +0.3600 > tolerance 0.02"]}
    >>> describe_target(target)
    'asked 80.0% of the prunable neurons (640 of 800), delivered 46.6% (373): NOT reached'
    >>> warning_line(target)
    'target not reached: asked 80.0% of the prunable neurons (640 of 800), delivered 46.6% (373); step 1 attempt 1 rolled back: validation drop +0.3600 > tolerance 0.02'
"""

from __future__ import annotations

import math
from typing import Any

#: Relative slack of a measured FLOPs or parameter budget (the budget search's precision).
BUDGET_SLACK = 0.02


def _asked_units(config, settings, original: dict[str, int]) -> tuple[dict[str, int], int]:
    """Units each group was asked to lose (ratio targets), and the prunable total."""
    asked, pooled = {}, []
    for name, width in original.items():
        setting = settings.get(name)
        if setting is not None and setting.ignore:
            continue
        share = setting.ratio if setting is not None and setting.ratio is not None else None
        if share is None and config.scope == "global":
            pooled.append(name)
            continue
        asked[name] = math.floor((config.ratio if share is None else share) * width + 1e-9)
    total = sum(original[name] for name in asked) + sum(original[name] for name in pooled)
    if pooled:
        asked["*"] = math.floor(config.ratio * sum(original[name] for name in pooled) + 1e-9)
    return asked, total


def _rollbacks(steps: list[dict[str, Any]]) -> list[str]:
    rows = []
    for record in steps:
        if record.get("accepted") or not record.get("removed"):
            continue
        share = record.get("target_ratio")
        aim = f"target {share:.1%}, " if share is not None else ""
        rows.append(f"step {record['step']} attempt {record['attempt']} ({aim}{record['removed']} units) rolled back: "
                    f"{record.get('reason', '')}")
    return rows


def _layer_limits(config, settings, original: dict[str, int], widths: dict[str, int],
                  asked: dict[str, int]) -> list[str]:
    rows = []
    for name, width0 in original.items():
        setting = settings.get(name)
        if setting is None or setting.ignore:
            continue
        width = widths.get(name, width0)
        floor = max(setting.min_width, 1)
        wanted = width0 - asked[name] if name in asked else None
        if width == floor and (wanted is None or wanted < floor):
            rows.append(f"{name}: min_width {floor} keeps {width} of {width0}"
                        + (f" (the ratio asks to keep {wanted})" if wanted is not None else ""))
        elif wanted is not None and width > wanted and config.round_to > 1 and width % config.round_to == 0:
            rows.append(f"{name}: round_to {config.round_to} keeps {width} of {width0} (the ratio asks to keep {wanted})")
    return rows


def target_report(config, settings, original: dict[str, int], widths: dict[str, int], steps: list[dict[str, Any]],
                  completed: bool, stopped: str | None) -> dict[str, Any]:
    """The ``"target"`` entry of a pruning report.

    Args:
        config: the run's :class:`~neuroprune.core.config.PruneConfig`.
        settings: resolved per-group settings (ignore, ratio, min_width).
        original: each group's width before pruning; ``widths``: after.
        steps: the loop's attempt records.
        completed: whether every scheduled step was accepted.
        stopped: the limit that ended the loop early, if one did.
    """
    total_removed = sum(original[n] - widths.get(n, original[n]) for n in original)
    why = _rollbacks(steps) + ([f"stopped: {stopped}"] if stopped else [])
    if config.ratio is None:
        prunable = sum(w for n, w in original.items() if not (settings.get(n) and settings[n].ignore))
        reached = completed
        target = {"quantity": "threshold", "asked": config.threshold, "delivered": total_removed / max(prunable, 1),
                  "asked_units": None, "delivered_units": total_removed, "total_units": prunable}
    else:
        asked, prunable = _asked_units(config, settings, original)
        asked_total = sum(asked.values())
        reached = completed and total_removed >= asked_total
        uniform = not any(s.ratio is not None for s in settings.values())
        target = {"quantity": "ratio", "asked": config.ratio if uniform else asked_total / max(prunable, 1),
                  "delivered": total_removed / max(prunable, 1), "asked_units": asked_total,
                  "delivered_units": total_removed, "total_units": prunable}
        if not reached:
            why += _layer_limits(config, settings, original, widths, asked)
    target["reached"] = bool(reached)
    target["why"] = [] if reached else why
    return target


def budget_target(target: dict[str, Any], budget, report: dict[str, Any], achieved: dict[str, float]) -> dict[str, Any]:
    """``target`` restated for a budget run: asked and delivered as fractions of the original cost.

    FLOPs and parameters are measured on the result; latency and ``max_drop`` take what the
    budget search achieved. ``reached`` needs both the per-layer ratios and the budget.
    """
    quantity = "max_drop" if budget.max_drop is not None else budget.quantity
    asked = getattr(budget, quantity)
    if quantity in ("flops", "params") and report["before"].get(quantity):
        delivered = report["after"][quantity] / report["before"][quantity]
        within = delivered <= asked * (1 + BUDGET_SLACK) + 1e-12
    else:
        delivered = achieved.get("drop" if quantity == "max_drop" else quantity)
        within = True
    why = list(target["why"])
    if not within:
        why.append(f"{quantity} at {delivered:.1%} of the original, asked {asked:.1%}")
    reached = bool(target["reached"] and within)
    return {**target, "quantity": quantity, "asked": asked, "delivered": delivered, "reached": reached,
            "why": [] if reached else why, "layer_ratios": {"asked_units": target["asked_units"],
                                                            "delivered_units": target["delivered_units"]}}


_LABELS = {"ratio": "of the prunable neurons", "threshold": "threshold", "flops": "FLOPs (fraction kept)",
           "params": "parameters (fraction kept)", "latency": "latency (fraction kept)",
           "max_drop": "largest validation drop"}


def describe_target(target: dict[str, Any]) -> str:
    """One sentence: asked, delivered, reached or not."""
    quantity = target.get("quantity", "ratio")
    verdict = "reached" if target.get("reached") else "NOT reached"
    delivered = target.get("delivered")
    if quantity == "ratio":
        text = (f"asked {target['asked']:.1%} {_LABELS['ratio']} ({target['asked_units']} of {target['total_units']}), "
                f"delivered {delivered:.1%} ({target['delivered_units']})")
    elif quantity == "threshold":
        text = (f"asked threshold {target['asked']:g}, delivered {delivered:.1%} {_LABELS['ratio']} "
                f"({target['delivered_units']} of {target['total_units']})")
    else:
        shown = "n/a" if delivered is None else f"{delivered:.1%}" if quantity != "max_drop" else f"{delivered:.4f}"
        asked = f"{target['asked']:.1%}" if quantity != "max_drop" else f"{target['asked']:g}"
        text = f"asked {_LABELS[quantity]} {asked}, delivered {shown}"
    return f"{text}: {verdict}"


def warning_line(target: dict[str, Any]) -> str:
    """The one-line CLI warning for a target that was not reached."""
    first = target.get("why") or []
    return "target not reached: " + describe_target(target).rsplit(":", 1)[0] + (f"; {first[0]}" if first else "")
