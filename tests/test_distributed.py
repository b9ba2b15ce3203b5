"""Many processes (torch.distributed, gloo on CPU): results must not depend on the world size.

Each test launches ``python -m torch.distributed.run`` (torchrun) on a script in tests/dist/ and
compares with one process. They take tens of seconds each, so they carry the ``dist`` marker and
run with ``make test-dist`` (CI calls it), not in the default suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.dist

ROOT = Path(__file__).resolve().parents[1]
DIST = Path(__file__).parent / "dist"
sys.path.insert(0, str(DIST))
from cases import CASES, measure  # noqa: E402

TIMEOUT_S = 180


def torchrun(script: str, *args: str, ranks: int = 2, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``script`` (a tests/dist/ file, or ``-m module``) under torchrun; never hangs past TIMEOUT_S."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
                   "OMP_NUM_THREADS": "1", **(env or {})}
    target = ["-m", *script.split()[1:]] if script.startswith("-m ") else [str(DIST / script)]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{_free_port()}",
               *target, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd, env=environment)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _check(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]


def _same_measurements(many: dict, one: dict) -> None:
    assert many["schema"] == one["schema"]  # every field, same shapes and dtypes
    np.testing.assert_array_equal(many["ints"], one["ints"])  # counts are exact
    # float64 sums agree to rounding (the order of additions differs); the per-weight ``seed``
    # accumulator is float32 by design, so it rounds at float32 precision
    single = np.concatenate([np.full(int(np.prod(shape)), dtype == "float32") for _, field, shape, dtype
                             in one["schema"] if field not in ("act_count", "grad_numel", "batches")])
    np.testing.assert_allclose(many["floats"][~single], one["floats"][~single], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(many["floats"][single], one["floats"][single], rtol=1e-5, atol=1e-7)
    assert many["scores"].keys() == one["scores"].keys()
    for criterion, scores in one["scores"].items():
        if isinstance(scores, str):  # the criterion does not apply: the same error
            assert many["scores"][criterion] == scores
            continue
        for group, value in scores.items():
            torch.testing.assert_close(many["scores"][criterion][group], value, rtol=1e-5, atol=1e-7)
    assert many["selection"] == one["selection"]


@pytest.mark.parametrize("ranks", [2, 3])
def test_statistics_scores_and_selection_do_not_depend_on_the_world_size(tmp_path, ranks):
    # 5 batches: uneven shards (3 + 2, or 2 + 2 + 1); "mlp:1": one batch, so other ranks add zeros
    names = [*CASES, "mlp:1"] if ranks == 2 else ["mlp", "transformer", "mlp:2"]
    _check(torchrun("stats_run.py", str(tmp_path / "out.pt"), *names, ranks=ranks))
    results = torch.load(tmp_path / "out.pt", weights_only=False)
    assert results["world_size"] == ranks
    for spec in names:
        name, _, batches = spec.partition(":")
        _same_measurements(results[spec], measure(name, int(batches or 5)))


def test_under_a_ddp_model_only_activation_fields_are_summed(tmp_path):
    # DDP has averaged the gradients: summing them again would count them twice
    _check(torchrun("stats_run.py", str(tmp_path / "out.pt"), "ddp-mlp:4", "ddp-transformer:4"))
    results = torch.load(tmp_path / "out.pt", weights_only=False)
    for name in ("mlp", "transformer"):
        _same_measurements(results[f"ddp-{name}:4"], measure(name, 4, pairs=True))
