"""Entry point of the ``neuroprune`` command.

Exit status: 0 done; 2 a problem with the command or its inputs (or a full disk, a read-only
filesystem, missing permission), printed as one line (``neuroprune: error: …``; argparse usage
errors also exit 2); 130 interrupted by Ctrl-C and 143 by
SIGTERM, with a line saying what was kept; 1 an internal error (a bug), with its traceback and a
request to report it.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback

from neuroprune.core.errors import NeuropruneError
from neuroprune.cli import criteria, demo, export, prune, sensitivity, train_prune
from neuroprune.cli.console import warnings_as_lines
from neuroprune.cli.interrupts import describe_kept, exit_status, sigterm_as_interrupt

#: Errors of the machine, not of neuroprune: a full disk, a read-only filesystem, missing permission.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
BUG_HINT = ("neuroprune: internal error (a bug, not a problem with your input); please report it with the command "
            "line and the traceback above")

EPILOG = """\
examples:
  neuroprune demo                                   # the built-in default, under a minute
  neuroprune prune --model zoo:mlp --data digits --ratio 0.5 --out pruned
  neuroprune prune --model net.py:build --weights w.safetensors --data npz:mnist.npz --criterion taylor
  neuroprune sensitivity --model zoo:lenet5 --plot sens.png
  neuroprune train-prune --model zoo:mlp --ratio 0.75 --epochs 30
  neuroprune export exported --from pruned --model zoo:mlp   # model.onnx, checked with onnxruntime
  neuroprune criteria                               # what each criterion measures
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuroprune", description="Importance-based structured pruning: physically smaller, faster models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in (demo, prune, sensitivity, train_prune, criteria, export):
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # which options were given, so that they override a --config file
    args.kept, args.checkpoint_path = [], None  # what an interrupted run leaves behind
    try:
        with sigterm_as_interrupt(), warnings_as_lines():  # SIGTERM as Ctrl-C; warnings one line each
            return args.run(args)
    except NeuropruneError as error:
        print(f"neuroprune: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        how = "terminated (SIGTERM)" if exit_status(interrupt) == 143 else "interrupted"
        print(f"neuroprune: {how}; {describe_kept(args)}", file=sys.stderr)
        return exit_status(interrupt)
    except Exception as error:
        if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
            print(f"neuroprune: error: {error}", file=sys.stderr)
            return 2
        stream = _stream_for(error)
        traceback.print_exc(file=stream)
        print(BUG_HINT, file=stream)
        return 1


def _stream_for(error: BaseException):
    """Where a bug's traceback goes: stderr, except on a rank other than 0 under torchrun (whose
    stderr is silenced) when the failure is this rank's alone, which only it can tell."""
    silenced = int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0"
    if not silenced or getattr(error, "_neuroprune_shared", False):
        return sys.stderr
    print(f"neuroprune: rank {os.environ.get('RANK', '?')}:", file=sys.__stderr__)
    return sys.__stderr__


if __name__ == "__main__":
    sys.exit(main())
