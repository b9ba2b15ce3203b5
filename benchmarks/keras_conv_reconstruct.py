"""Keras least-squares reconstruction of convolutions: accuracy right after pruning, without fine-tuning.

The small Keras CNN of benchmarks/keras_vs_torch.py (conv 16 - conv 32 - dense 64 on 8x8 digit
images, trained 20 epochs with Adam) loses half of the channels of both convolutions (criterion
``magnitude``, one step, the Dense layer left whole, no fine-tuning). Three recoveries are compared
per seed: none; reconstruction of Dense layers only (what neuroprune-keras re-fitted before: the
3x3 ``c2`` is left as it is); reconstruction of every consumer (``c2``'s 3x3 kernel re-fitted on
its input patches, then the Dense). Reported: test accuracy (mean ± std over seeds) and seconds
spent in the pruning call.

    KERAS_BACKEND=torch python benchmarks/keras_conv_reconstruct.py            # 3 seeds
    KERAS_BACKEND=torch python benchmarks/keras_conv_reconstruct.py --seeds 1  # a quick look
    KERAS_BACKEND=torch python benchmarks/keras_conv_reconstruct.py --ratio 0.75 --json keras_conv_reconstruct_75
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

from keras_vs_torch import DENSE_EPOCHS, keras_cnn  # noqa: E402

import neuroprune as npr  # noqa: E402
import neuroprune.keras.reconstruct as keras_reconstruct  # noqa: E402
from neuroprune.core.policy import LayerPolicy  # noqa: E402
from neuroprune.data import load_digits  # noqa: E402
from neuroprune.keras.task import KerasClassificationTask  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RECOVERIES = ("none", "dense only", "dense + conv")


def prune(model, task, recovery: str, ratio: float, seed: int) -> tuple[float, float]:
    """(test accuracy after pruning, seconds) with the given recovery."""
    config = npr.PruneConfig(criterion="magnitude", ratio=ratio, steps=1, tolerance=1.0, judge="before",
                             layers=(LayerPolicy(layer_type="Dense", ignore=True),),
                             reconstruct=recovery != "none", progress=False, latency_runs=1, seed=seed)
    everything = keras_reconstruct.reconstructable
    if recovery == "dense only":
        keras_reconstruct.reconstructable = lambda layer: type(layer).__name__ == "Dense"
    try:
        start = time.perf_counter()
        result = npr.prune(model, task, config)
        seconds = time.perf_counter() - start
    finally:
        keras_reconstruct.reconstructable = everything
    widths = {layer["name"]: layer["width_after"] for layer in result.report["layers"]}
    assert widths == {"c1": round(16 * (1 - ratio)), "c2": round(32 * (1 - ratio)), "fc": 64}, widths
    return task.evaluate(result.model, "test"), seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of conv channels removed (default 0.5)")
    parser.add_argument("--json", default="keras_conv_reconstruct", help="rows into results/<JSON>.json")
    args = parser.parse_args(argv)
    data = load_digits(seed=0, layout="image")
    rows = []
    for seed in range(args.seeds):
        task = KerasClassificationTask(data, batch_size=64, seed=seed)
        model = keras_cnn(seed)
        task.bind(model).finetune(model, epochs=DENSE_EPOCHS, learning_rate=1e-3)
        row = {"seed": seed, "dense": task.evaluate(model, "test")}
        for recovery in RECOVERIES:
            row[recovery], row[f"{recovery} s"] = prune(model, task, recovery, args.ratio, seed)
        rows.append(row)
        print(json.dumps(row))

    def cell(key: str, digits: int = 4) -> str:
        values = [row[key] for row in rows]
        spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.{digits}f}{spread}"

    def seeds(key: str) -> str:
        return " / ".join(f"{row[key]:.4f}" for row in rows)

    lines = [f"| recovery (no fine-tuning) | test accuracy, {len(rows)} seeds | per seed | seconds in prune |",
             "|---|---|---|---|",
             f"| dense model | {cell('dense')} | {seeds('dense')} | |"]
    lines += [f"| {recovery} | {cell(recovery)} | {seeds(recovery)} | {cell(recovery + ' s', 2)} |"
              for recovery in RECOVERIES]
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.json}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
