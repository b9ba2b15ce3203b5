"""torchrun script: one full ``prune()`` over the process group (or a failure, or a crash to resume).

Usage: python -m torch.distributed.run --nproc_per_node=2 tests/dist/prune_run.py MODE OUT
MODE: "plan" (prune under each of PRUNE_CONFIGS, save to OUT/NAME), "crash" (checkpoint to OUT, stop after step 1),
"nan" (rank 1 meets a non-finite calibration batch), "raise" (rank 1 fails while validating).
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from cases import PRUNE_CONFIGS, prune_config, trained_mlp  # noqa: E402

from neuroprune import prune  # noqa: E402
from neuroprune.torch import distributed  # noqa: E402


class Crash(Exception):
    pass


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    distributed.init_from_env(timeout_s=60)
    model, task = trained_mlp()
    me = distributed.rank()
    if mode == "nan" and me == 1:  # this rank's share of the calibration data holds a NaN
        batches = task.calibration_batches()
        task.calibration_batches = lambda: [(torch.full_like(x, float("nan")), y) for x, y in batches]
    if mode == "raise" and me == 1:
        evaluate = task.evaluate
        calls = []

        def failing(model, split):
            calls.append(split)
            if len(calls) == 2:
                raise ValueError("validation data unreadable on this rank")
            return evaluate(model, split)

        task.evaluate = failing
    try:
        if mode == "crash":
            def stop(step, model):
                if step == 1:
                    raise Crash("stopped after step 1")
            prune(model, task, prune_config(), checkpoint=out, on_step=stop)
        elif mode == "plan":
            for name, changes in PRUNE_CONFIGS.items():
                result = prune(model, task, prune_config(**changes))
                distributed.check_same_state(result.model)  # identical surgery on every rank
                result.save(out / name, html=False)
        else:
            prune(model, task, prune_config())
    except Exception as error:  # every rank must get here, with the same error
        (out.parent / f"error-{me}.json").write_text(json.dumps({"type": type(error).__name__, "message": str(error),
                                                                  "failed_rank": getattr(error, "failed_rank", None)}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
