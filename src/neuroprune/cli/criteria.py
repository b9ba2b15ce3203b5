"""``neuroprune criteria``: list the importance criteria."""

from __future__ import annotations

import argparse

from neuroprune.core.criteria import criterion_names, get_criterion


def register(subparsers) -> None:
    parser = subparsers.add_parser("criteria", help="list importance criteria")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for name in criterion_names():
        criterion = get_criterion(name)
        doc = (type(criterion).__doc__ or "").strip().splitlines()[0] if type(criterion).__doc__ else ""
        options = f"  [options: {', '.join(criterion.options)}]" if criterion.options else ""
        print(f"{name:22s} {doc}{options}")
    return 0
