"""neuroprune-keras vs neuroprune-torch: the same pruning on the same network in both frameworks.

Per seed, the write-up's MLP (64-128-64-10 on the digits) and a small CNN (conv 16 - conv 32 - dense
64 on 8x8 digit images) are trained in Keras (Adam, lr 1e-3, batch 64); the torch twin gets the very
same weights (kernels transposed). Both are pruned by the same config (75 % of the hidden neurons,
criterion ``magnitude`` or the write-up's ``seed``, one step), then fine-tuned for the same number
of epochs, each in its own framework (``model.fit`` vs neuroprune's torch loop). Reported: test
accuracy (mean ± std over seeds), parameters, bytes of the saved weights, batch-1 and batch-64
latency. TensorFlow Model Optimization is not compared: it needs TensorFlow and ``tf_keras``,
which this machine does not install (its ``prune_low_magnitude`` keeps the model dense anyway).

    KERAS_BACKEND=torch python benchmarks/keras_vs_torch.py            # 5 seeds
    KERAS_BACKEND=torch python benchmarks/keras_vs_torch.py --quick    # 2 seeds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import neuroprune as npr  # noqa: E402
from neuroprune.data import load_digits  # noqa: E402
from neuroprune.keras.metrics import measure_latency_ms as keras_latency  # noqa: E402
from neuroprune.keras.metrics import size_bytes as keras_size  # noqa: E402
from neuroprune.keras.task import KerasClassificationTask  # noqa: E402
from neuroprune.tasks.classification import ClassificationTask  # noqa: E402
from neuroprune.torch.metrics import measure_latency_ms as torch_latency  # noqa: E402

DENSE_EPOCHS, FINETUNE_EPOCHS, RATIO = 20, 5, 0.75
RESULTS = Path(__file__).resolve().parent / "results"


def keras_mlp(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu", name="fc1"),
                             keras.layers.Dense(64, activation="relu", name="fc2"), keras.layers.Dense(10, name="out")])


def keras_cnn(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1"),
                             keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="c2"),
                             keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                             keras.layers.Dense(64, activation="relu", name="fc"), keras.layers.Dense(10, name="out")])


def torch_twin(model) -> nn.Module:
    """The torch model computing what the Keras ``model`` computes, with its weights."""
    layers: list[nn.Module] = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Dense":
            kernel, bias = layer.get_weights()
            linear = nn.Linear(*kernel.shape)
            linear.weight.data, linear.bias.data = torch.from_numpy(kernel.T.copy()), torch.from_numpy(bias)
            layers += [linear] + ([nn.ReLU()] if layer.activation.__name__ == "relu" else [])
        elif kind == "Conv2D":
            kernel, bias = layer.get_weights()  # (kh, kw, in, out) -> (out, in, kh, kw)
            conv = nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2], padding="same")
            conv.weight.data, conv.bias.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()), torch.from_numpy(bias)
            layers += [conv, nn.ReLU()]
        elif kind == "MaxPooling2D":
            layers.append(nn.MaxPool2d(2))
        elif kind == "Flatten":  # Keras flattens (H, W, C); torch (C, H, W): permute first
            layers += [Channels_last(), nn.Flatten()]
    return nn.Sequential(*layers)


class Channels_last(nn.Module):  # noqa: N801 - named after what it does
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def run(kind: str, criterion: str, seed: int) -> dict:
    layout = "image" if kind == "cnn" else "flat"
    data = load_digits(seed=0, layout=layout)
    ktask = KerasClassificationTask(data, batch_size=64, seed=seed)
    model = keras_cnn(seed) if kind == "cnn" else keras_mlp(seed)
    ktask.bind(model).finetune(model, epochs=DENSE_EPOCHS, learning_rate=1e-3)
    twin = torch_twin(model)
    ttask = ClassificationTask(data, batch_size=64, seed=seed)
    config = npr.PruneConfig(criterion=criterion, ratio=RATIO, tolerance=1.0, finetune_epochs=FINETUNE_EPOCHS,
                             progress=False, latency_runs=5, seed=seed)
    row = {"dense_keras": ktask.evaluate(model, "test"), "dense_torch": ttask.evaluate(twin, "test")}
    kres = npr.prune(model, ktask, config)
    torch.manual_seed(seed)
    tres = npr.prune(twin, ttask, config)
    kx1, kx64 = ktask.make_input(1), ktask.make_input(64)
    tx1, tx64 = ttask.make_input(1), ttask.make_input(64)
    for name, res, latency, x1, x64 in (("keras", kres, keras_latency, kx1, kx64), ("torch", tres, torch_latency, tx1, tx64)):
        m = res.model
        row[f"pruned_{name}"] = res.report["after"]["accuracy"]
        row[f"params_{name}"] = res.report["after"]["params"]
        row[f"bytes_{name}"] = keras_size(m) if name == "keras" else res.report["after"]["size_bytes"]
        row[f"b1_ms_{name}"] = latency(m, x1, runs=30, warmup=5)
        row[f"b64_ms_{name}"] = latency(m, x64, runs=30, warmup=5)
    row["dense_params"] = kres.report["before"]["params"]
    row["dense_bytes"] = keras_size(model)
    row["dense_b1_ms_keras"], row["dense_b64_ms_keras"] = keras_latency(model, kx1, 30, 5), keras_latency(model, kx64, 30, 5)
    return row


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds instead of 5")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import keras

    seeds = range(2 if args.quick else 5)
    lines = [f"# neuroprune-keras vs neuroprune-torch ({RATIO:.0%} of hidden neurons, {FINETUNE_EPOCHS} fine-tuning "
             f"epochs; Keras backend {keras.backend.backend()}, {len(seeds)} seeds)", "",
             "| model | criterion | dense acc | pruned acc keras | pruned acc torch | params dense -> keras / torch "
             "| bytes dense -> keras | batch-1 ms dense -> keras (torch) | batch-64 ms dense -> keras (torch) |",
             "|---|---|---|---|---|---|---|---|---|"]
    raw = {}
    for kind in ("mlp", "cnn"):
        for criterion in ("magnitude", "seed"):
            rows = [run(kind, criterion, seed) for seed in seeds]
            raw[f"{kind}/{criterion}"] = rows
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            lines.append(f"| {kind} | {criterion} | {mean_std([r['dense_keras'] for r in rows])} "
                         f"| {mean_std([r['pruned_keras'] for r in rows])} | {mean_std([r['pruned_torch'] for r in rows])} "
                         f"| {med['dense_params']:.0f} -> {med['params_keras']:.0f} / {med['params_torch']:.0f} "
                         f"| {med['dense_bytes']:.0f} -> {med['bytes_keras']:.0f} "
                         f"| {med['dense_b1_ms_keras']:.3f} -> {med['b1_ms_keras']:.3f} ({med['b1_ms_torch']:.3f}) "
                         f"| {med['dense_b64_ms_keras']:.3f} -> {med['b64_ms_keras']:.3f} ({med['b64_ms_torch']:.3f}) |")
            print(lines[-1], file=sys.stderr)
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "keras_vs_torch.md").write_text(text)
    (RESULTS / "keras_vs_torch.json").write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
