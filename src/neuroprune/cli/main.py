"""Entry point of the ``neuroprune`` command.

Errors neuroprune raises on purpose are printed as one line (``neuroprune: error: …``) with exit
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import NeuropruneError
from . import criteria, demo, export, prune, sensitivity, train_prune
from .common import warnings_as_lines

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
    try:
        with warnings_as_lines():  # neuroprune warnings: one line each on stderr
            return args.run(args)
    except NeuropruneError as error:
        print(f"neuroprune: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neuroprune: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
