"""``python -m neuroprune ...``: the command line, also under torchrun.

Under ``torchrun --nproc_per_node=N -m neuroprune prune ...`` each process joins the process group
torchrun describes (gloo on CPU, nccl on GPUs; ``NEUROPRUNE_DIST_TIMEOUT`` seconds per collective),
the ranks share one pruning job, and only rank 0 prints and writes; every rank exits with the
worst exit status of them all.
"""

from __future__ import annotations

import os
import sys


def run(argv: list[str] | None = None) -> int:
    """Run the command line in this process (one rank of a job when torchrun started it)."""
    many = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if many and os.environ.get("RANK", "0") != "0":
        os.environ.setdefault("TQDM_DISABLE", "1")  # one set of progress bars (rank 0's)
        # rank 0 prints the results, notes, warnings and progress bars; a failure of this rank
        # alone (a bug no other rank shares) still reaches the real stderr (neuroprune.cli.main)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    if not many:
        from neuroprune.cli.main import main

        return main(argv)
    from neuroprune.torch import distributed

    distributed.init_from_env()
    from neuroprune.cli.main import main

    code = main(argv)
    return distributed.worst_exit_status(code)


if __name__ == "__main__":
    sys.exit(run())
