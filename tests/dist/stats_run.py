"""torchrun script: measure every case over this process group; rank 0 saves the results.

Usage: python -m torch.distributed.run --nproc_per_node=2 tests/dist/stats_run.py OUT.pt [[ddp-]CASE[:BATCHES] ...]
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from cases import CASES, measure  # noqa: E402

from neuroprune.torch import distributed  # noqa: E402


def main() -> None:
    distributed.init_from_env(timeout_s=60)
    out, names = sys.argv[1], sys.argv[2:] or list(CASES)
    results = {}
    for spec in names:
        name, _, batches = spec.partition(":")
        ddp = name.startswith("ddp-")
        results[spec] = measure(name.removeprefix("ddp-"), int(batches or 5), ddp=ddp)
    results["world_size"] = distributed.world_size()
    if distributed.is_writer():
        torch.save(results, out)
    distributed.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
