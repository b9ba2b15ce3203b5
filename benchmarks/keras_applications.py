"""Keras 3 public architectures: ``keras.applications`` models with random weights, half of every group.

Every model is built with ``weights=None`` (nothing is downloaded) at 32x32x3 with 10 classes and
trained for one epoch on the digits (upsampled to 32x32x3), so that its activations are those of a
trained network rather than of a random initialisation (BatchNormalization statistics are then
re-estimated on 512 training images: one epoch moves them too little at Keras's momentum). neuroprune finds its groups, removes half of the units of every group by weight magnitude
(``neuroprune.prune``, one step, no recovery, tolerance 1: the architecture is checked, not how
far a one-epoch network can be pruned) and the table gives:

* groups, and the layers kept whole with their reasons (the output layer always is);
* masked == pruned: the largest difference between the masked original and the smaller model,
  relative to the output's scale, for the pruning that was applied;
* params and FLOPs kept (the report's own numbers; latency is measured in the other Keras benchmarks);
* test accuracy before -> after, and after the pruned model's BatchNormalization statistics are
  re-estimated on 512 training images (their moving statistics still describe the unpruned
  network's activations);
* reload: the pruned ``.keras`` file read by plain ``keras.saving.load_model`` gives identical outputs.

    KERAS_BACKEND=torch .venv/bin/python benchmarks/keras_applications.py          # ~6 min on 2 cores
    KERAS_BACKEND=torch .venv/bin/python benchmarks/keras_applications.py --only MobileNetV2,ConvNeXtTiny
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("KERAS_BACKEND", "torch")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import neuroprune  # noqa: E402
from neuroprune.core.config import PruneConfig  # noqa: E402
from neuroprune.data import load_digits  # noqa: E402
from neuroprune.keras.graph import discover  # noqa: E402
from neuroprune.keras.masks import apply_masks  # noqa: E402
from neuroprune.keras.task import KerasClassificationTask  # noqa: E402

MODELS = ("MobileNetV2", "MobileNetV3Small", "ResNet50", "DenseNet121", "EfficientNetB0", "ConvNeXtTiny", "VGG16")
RESULTS = ROOT / "benchmarks" / "results"


def digits_as_images() -> SimpleNamespace:
    """The digits splits as 32x32x3 images (each pixel 4x4, three equal channels)."""
    data, arrays = load_digits(), {}
    for split in ("train", "val", "test"):
        x = np.asarray(getattr(data, f"x_{split}"), dtype=np.float32).reshape(-1, 8, 8)
        arrays[f"x_{split}"] = np.repeat(np.kron(x, np.ones((4, 4), np.float32))[..., None], 3, axis=-1)
        arrays[f"y_{split}"] = np.asarray(getattr(data, f"y_{split}"))
    return SimpleNamespace(**arrays)


def recalibrate_batch_norm(model, x) -> None:
    """Set every BatchNormalization's moving statistics to those of ``x`` (momentum 0 for one pass)."""
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def _numpy(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def run(name: str, task, folder: Path) -> dict:
    started = time.perf_counter()
    model = getattr(keras.applications, name)(input_shape=(32, 32, 3), weights=None, classes=10,
                                                  classifier_activation=None)  # logits: random weights give ~uniform softmax
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(task.splits["train"][0], task.splits["train"][1], batch_size=64, epochs=1, verbose=0)
    recalibrate_batch_norm(model, task.splits["train"][0][:512])
    graph = discover(model)
    reasons = sorted({r.split(": ", 1)[-1] for rs in graph.frozen.values() for r in rs} - {"model output"})
    config = PruneConfig(criterion="magnitude", ratio=0.5, steps=1, tolerance=1.0, progress=False,
                         latency_runs=1)
    result = neuroprune.prune(model, task, config)
    x = task.make_input(4)
    handle = apply_masks(model, result.plan.keep())
    masked = _numpy(model, x)
    handle.remove()
    pruned = _numpy(result.model, x)
    scale = float(np.abs(pruned).max()) or 1.0
    result.model.save(folder / f"{name}.keras")
    recalibrate_batch_norm(result.model, task.splits["train"][0][:512])
    recalibrated = task.evaluate(result.model, "test")
    reloaded = _numpy(keras.saving.load_model(folder / f"{name}.keras"), x)
    before, after = result.report["before"], result.report["after"]
    return {"model": name, "groups": len(graph.groups), "frozen_reasons": reasons,
            "masked_vs_pruned": float(np.abs(masked - pruned).max()) / scale,
            "reload_identical": bool(np.array_equal(reloaded, pruned)),
            "accuracy": [before["accuracy"], after["accuracy"], recalibrated], "params": [before["params"], after["params"]], "flops": [before["flops"], after["flops"]],
            "seconds": time.perf_counter() - started}


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | crashed: {r['error']} | | | | | | | |"
    (p0, p1), (f0, f1), (a0, a1, a2) = r["params"], r["flops"], r["accuracy"]
    frozen = "; ".join(r["frozen_reasons"]) or "output layer only"
    return (f"| {r['model']} | {r['groups']} | {frozen} | {r['masked_vs_pruned']:.1e} | {p0:,} -> {p1:,} "
            f"({p1 / p0:.0%}) | {f1 / f0:.0%} | {a0:.3f} -> {a1:.3f} -> {a2:.3f} | {'yes' if r['reload_identical'] else 'NO'} | {r['seconds']:.0f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated keras.applications names (default: all of the table)")
    parser.add_argument("--out", default="keras_applications", help="result file name under benchmarks/results/")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else MODELS
    task = KerasClassificationTask(digits_as_images(), batch_size=64, calibration_samples=128)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                rows.append(run(name, task, Path(tmp)))
            except Exception as error:  # recorded in the table: one run covers every model
                traceback.print_exc()
                rows.append({"model": name, "error": f"{type(error).__name__}: {str(error)[:120]}"})
            print(row(rows[-1]), flush=True)
    header = ["| model | groups | kept whole (besides the output) | masked vs pruned | params | FLOPs kept "
              "| test accuracy before -> pruned -> BN re-estimated | .keras reloads | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    load = os.getloadavg()[0]
    text = "\n".join([
        "# Keras 3 public architectures (keras.applications, random weights, 32x32x3, half of every group)", "",
        *header, *map(row, rows), "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with Keras {keras.__version__} "
        f"({keras.backend.backend()} backend), load average {load:.1f} on {os.cpu_count()} cores; masked vs pruned "
        "is the largest logit difference over the largest logit; command: `KERAS_BACKEND=torch .venv/bin/python benchmarks/keras_applications.py"
        + (f" --only {args.only}" if args.only else "") + "`.", ""])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(text)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
