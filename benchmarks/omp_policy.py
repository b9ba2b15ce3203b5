"""Run a benchmark script under a chosen ``OMP_WAIT_POLICY`` (OpenMP reads it only at start-up).

PyTorch's OpenMP threads spin-wait by default; on a shared 2-core machine that makes timings
swing several-fold, so the timing benchmarks restart themselves with ``passive`` unless told
otherwise (``env`` keeps whatever the environment says).

    from omp_policy import reexec_with_omp_policy
    reexec_with_omp_policy("passive")   # first thing in main(), before any timing
"""

from __future__ import annotations

import os
import sys

POLICIES = ("passive", "active", "env")
_MARKER = "_NEUROPRUNE_OMP_REEXEC"


def reexec_with_omp_policy(policy: str) -> None:
    """Restart the running script with ``OMP_WAIT_POLICY=policy`` unless it is set already."""
    if policy == "env" or os.environ.get("OMP_WAIT_POLICY", "").lower() == policy or os.environ.get(_MARKER):
        return
    env = dict(os.environ, OMP_WAIT_POLICY=policy.upper(), **{_MARKER: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:]], env)
