"""Ctrl-C and SIGTERM: stop cleanly, say what was kept, exit 130 / 143.

SIGTERM is turned into :class:`Terminated` (a ``KeyboardInterrupt``), so the same clean-up runs as
for Ctrl-C: half-written folders and files are removed, finished ones stay. Commands note what
they wrote in ``args.kept`` and their checkpoint in ``args.checkpoint_path``; :func:`describe_kept`
turns that into the sentence printed on exit.

Example:
    >>> import argparse
    >>> describe_kept(argparse.Namespace(kept=[], checkpoint_path=None))
    'nothing was written'
    >>> exit_status(Terminated()), exit_status(KeyboardInterrupt())
    (143, 130)
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def exit_status(interrupt: BaseException) -> int:
    """128 + the signal number: 143 for SIGTERM, 130 for Ctrl-C (SIGINT)."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (elsewhere: unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _checkpoint_step(folder: str) -> tuple[int, int | None] | None:
    try:
        state = json.loads((Path(folder) / "state.json").read_text(encoding="utf-8"))
        return int(state["step"]), state.get("config", {}).get("steps")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def describe_kept(args) -> str:
    """What an interrupted command leaves behind, in one sentence."""
    kept = list(getattr(args, "kept", []) or [])
    checkpoint = getattr(args, "checkpoint_path", None)
    position = _checkpoint_step(checkpoint) if checkpoint else None
    if position is not None:
        step, steps = position
        of = f" of {steps}" if isinstance(steps, int) else ""  # "auto" plans as it goes
        kept.append(f"checkpoint after step {step}{of} in {checkpoint}; rerun the same command with --resume")
    return "; ".join(kept) if kept else "nothing was written"
