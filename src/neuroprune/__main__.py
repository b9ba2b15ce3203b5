"""``python -m neuroprune ...`` runs the ``neuroprune`` command (so does ``torchrun -m neuroprune ...``).

Example (a shell):
    python -m neuroprune criteria
"""

from __future__ import annotations

import sys

from neuroprune.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
