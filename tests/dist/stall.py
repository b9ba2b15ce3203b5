"""torchrun script: rank 1 stalls; rank 0's next collective must fail after the process-group
timeout instead of waiting forever. Rank 0 writes OUT/rank0.json (error type, seconds waited)."""

import json
import os
import sys
import time
from pathlib import Path

from neuroprune.torch import distributed


def main() -> None:
    out = Path(sys.argv[1])
    distributed.init_from_env(timeout_s=3)
    if distributed.rank() == 1:
        time.sleep(12)  # stuck (e.g. in I/O) past the timeout, then gone
        os._exit(0)
    started = time.perf_counter()
    try:
        distributed.barrier()
        outcome = {"type": None}
    except Exception as error:  # the timeout: gloo raises
        outcome = {"type": type(error).__name__}
    outcome["seconds"] = time.perf_counter() - started
    (out / "rank0.json").write_text(json.dumps(outcome))
    os._exit(0)


if __name__ == "__main__":
    main()
