"""torchrun script: every recovery case of recover_cases.py and a full prune over the process group.

Usage: python -m torch.distributed.run --nproc_per_node=2 tests/dist/recover_run.py OUT.pt [CASE ...]
Each rank checks that every rank holds the same weights after each case; rank 0 saves the results.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from recover_cases import RECOVER_CASES, backward_alone, prune_case, run_case  # noqa: E402

from neuroprune.torch import distributed  # noqa: E402


def main() -> None:
    distributed.init_from_env(timeout_s=60)
    out, names = sys.argv[1], sys.argv[2:] or [*RECOVER_CASES, "prune", "prune-fsdp"]
    results = {}
    for name in names:
        if name.startswith("prune"):
            results[name] = prune_case("fsdp" if name == "prune-fsdp" else "ddp")
        else:
            results[name] = run_case(name)
        hashes = [None] * distributed.world_size()
        dist.all_gather_object(hashes, {k: v.sum().item() for k, v in results[name]["state"].items()})
        results[name]["same_on_every_rank"] = all(h == hashes[0] for h in hashes)
    results["backward_alone"] = backward_alone()
    results["world_size"] = distributed.world_size()
    if distributed.is_writer():
        torch.save(results, out)
    distributed.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
