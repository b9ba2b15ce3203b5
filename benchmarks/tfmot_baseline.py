"""TensorFlow Model Optimization's ``prune_low_magnitude`` on the write-up's MLP or the small CNN: the
baseline of benchmarks/keras_vs_torch.py. Runs in its own venv (TensorFlow, ``tensorflow-model-optimization``,
``tf_keras``; never the project's), as a subprocess of keras_vs_torch.py, and writes JSON.

Per seed: the MLP 64-128-64-10 or the CNN (conv 16 - conv 32 - max-pool - dense 64 - 10 on 8x8x1
images; ReLU, logits; the networks of keras_vs_torch.py) is trained on the given digits split like
the neuroprune run (Adam 1e-3, batch 64, the same dense epochs); then, for every ``--sparsity``, a
copy of that dense model is wrapped in ``prune_low_magnitude`` with ``ConstantSparsity`` from step 0
(every Dense and Conv2D kernel, the output layer's too), fine-tuned for the same epochs, and
``strip_pruning``-ed. Reported: test accuracy, the measured kernel sparsity, parameters, size on disk
of the ``.h5`` and ``.keras`` files and of their gzip-compressed bytes (TF-MOT's own way to show its
saving), batch-1 and batch-64 latency (median of ``tf.function``-compiled ``model(x, training=False)``
calls, one thread). With ``--neuroprune DIR``, neuroprune's pruned ``seed<N>.keras`` models are loaded
with Keras 3 on the TensorFlow backend; per seed the dense model, every TF-MOT model and neuroprune's
are then timed round-robin in one loop (order reversed every round), so that the load of a shared
machine falls on all of them alike.

    /work/venv-tf/bin/python benchmarks/tfmot_baseline.py --data split.npz --out tfmot.json --seeds 0 1
    /work/venv-tf/bin/python benchmarks/tfmot_baseline.py --model cnn --sparsity 0.75 0.93 --data split.npz --out t.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tfmot works on tf_keras (Keras 2) only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

RUNS, WARMUP = 100, 10


def round_robin_ms(models: dict, x, runs: int = RUNS, warmup: int = WARMUP) -> dict[str, float]:
    """Median ms of one call of each model compiled as a TensorFlow graph (tf.function), the models
    called in turn (order reversed every round): the models' own compute, without the eager
    per-layer overhead that differs between tf_keras and Keras 3, under the same machine load."""
    import tensorflow as tf

    calls = {name: tf.function(lambda inputs, m=model: m(inputs, training=False)) for name, model in models.items()}
    for call in calls.values():
        for _ in range(warmup):
            np.asarray(call(x))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(runs):
        for name in (list(calls) if round_ % 2 == 0 else list(reversed(calls))):
            start = time.perf_counter()
            np.asarray(calls[name](x))
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: float(statistics.median(t)) for name, t in times.items()}


def disk_sizes(save, suffix: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"model{suffix}"
        save(str(path))
        data = path.read_bytes()
    return {f"bytes{suffix.replace('.', '_')}": len(data), f"gzip{suffix.replace('.', '_')}": len(gzip.compress(data, 9))}


def build(kind: str, input_shape: tuple[int, ...]):
    """The tf_keras twin of keras_vs_torch.py's ``keras_mlp`` / ``keras_cnn``."""
    import tf_keras as keras

    layers = keras.layers
    if kind == "cnn":
        body = [layers.Conv2D(16, 3, padding="same", activation="relu", name="c1"),
                layers.Conv2D(32, 3, padding="same", activation="relu", name="c2"),
                layers.MaxPooling2D(), layers.Flatten(), layers.Dense(64, activation="relu", name="fc")]
    else:
        body = [layers.Dense(128, activation="relu", name="fc1"), layers.Dense(64, activation="relu", name="fc2")]
    return keras.Sequential([keras.Input(input_shape), *body, layers.Dense(10, name="out")])


def run_seed(data, kind: str, seed: int, dense_epochs: int, finetune_epochs: int,
             sparsities: list[float]) -> tuple[dict, list[tuple[dict, object]]]:
    """The dense row and model, and one (row, stripped model) per sparsity."""
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    model = build(kind, data["x_train"].shape[1:])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    model.fit(data["x_train"], data["y_train"], batch_size=64, epochs=dense_epochs, shuffle=True, verbose=0)
    dense_weights = model.get_weights()
    dense = {"seed": seed, "acc": float(model.evaluate(data["x_test"], data["y_test"], verbose=0)[1]),
             "params": int(model.count_params()), "model": model}
    pruned_rows = []
    for sparsity in sparsities:
        keras.utils.set_random_seed(seed)
        copy = build(kind, data["x_train"].shape[1:])
        copy.set_weights(dense_weights)
        schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1)
        pruned = tfmot.sparsity.keras.prune_low_magnitude(copy, pruning_schedule=schedule)
        pruned.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
        pruned.fit(data["x_train"], data["y_train"], batch_size=64, epochs=finetune_epochs, shuffle=True, verbose=0,
                   callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        stripped = tfmot.sparsity.keras.strip_pruning(pruned)  # not compiled: no optimizer state in the files
        kernels = [layer.kernel.numpy() for layer in stripped.layers if hasattr(layer, "kernel")]
        row = {"seed": seed, "sparsity_target": sparsity, "dense_acc": dense["acc"],
               "acc": float((stripped.predict(data["x_test"], verbose=0).argmax(-1) == data["y_test"]).mean()),
               "sparsity": float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels)),
               "params": int(stripped.count_params()),
               "weight_bytes": int(sum(w.nbytes for w in stripped.get_weights()))}
        row.update(disk_sizes(lambda p, m=stripped: m.save(p, include_optimizer=False), ".h5"))
        row.update(disk_sizes(lambda p, m=stripped: m.save(p), ".keras"))  # not compiled: no optimizer
        pruned_rows.append((row, stripped))
    return dense, pruned_rows


def load_neuroprune(folder: Path) -> dict[int, object]:
    """neuroprune's pruned seed<N>.keras files, loaded with Keras 3 on the TensorFlow backend."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras  # Keras 3 (tf_keras is a separate package)

    return {int(path.stem[4:]): keras.saving.load_model(path, compile=False) for path in sorted(folder.glob("seed*.keras"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="npz with x_train, y_train, x_val, y_val, x_test, y_test")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--dense-epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.75], help="one TF-MOT model per value")
    parser.add_argument("--neuroprune", type=Path, help="folder of neuroprune's pruned seed<N>.keras models to time")
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    data = dict(np.load(args.data))
    import tensorflow_model_optimization as tfmot

    ours = load_neuroprune(args.neuroprune) if args.neuroprune else {}
    x1 = tf.constant(data["x_test"][:1])
    x64 = tf.constant(data["x_test"][np.arange(64) % len(data["x_test"])])
    result = {"tensorflow": tf.__version__, "tfmot": tfmot.__version__, "model": args.model,
              "sparsity_targets": args.sparsity, "runs": RUNS, "dense": [], "rows": [], "neuroprune_on_tensorflow": {}}
    for seed in args.seeds:
        dense, pruned = run_seed(data, args.model, seed, args.dense_epochs, args.finetune_epochs, args.sparsity)
        models = {"dense": dense.pop("model"), **{f"tfmot{i}": m for i, (_, m) in enumerate(pruned)}}
        if seed in ours:
            models["neuroprune"] = ours[seed]
        b1, b64 = round_robin_ms(models, x1), round_robin_ms(models, x64)
        result["dense"].append({**dense, "b1_ms": b1["dense"], "b64_ms": b64["dense"]})
        for i, (row, _) in enumerate(pruned):
            result["rows"].append({**row, "b1_ms": b1[f"tfmot{i}"], "b64_ms": b64[f"tfmot{i}"]})
        if seed in ours:
            import keras

            result["neuroprune_on_tensorflow"][f"seed{seed}"] = {
                "b1_ms": b1["neuroprune"], "b64_ms": b64["neuroprune"], "params": int(ours[seed].count_params()),
                "keras_version": keras.__version__}
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
