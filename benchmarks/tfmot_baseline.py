"""TensorFlow Model Optimization's ``prune_low_magnitude`` on the write-up's MLP: the baseline of
benchmarks/keras_vs_torch.py. Runs in its own venv (TensorFlow, ``tensorflow-model-optimization``,
``tf_keras``; never the project's), as a subprocess of keras_vs_torch.py, and writes JSON.

Per seed: the MLP 64-128-64-10 (ReLU, logits) is trained on the given digits split like the
neuroprune run (Adam 1e-3, batch 64, the same dense epochs), wrapped in ``prune_low_magnitude``
with ``ConstantSparsity`` at the given sparsity from step 0 (every Dense kernel, the output
layer's too), fine-tuned for the same epochs, and ``strip_pruning``-ed. Reported: test accuracy,
the measured kernel sparsity, parameters, size on disk of the ``.h5`` and ``.keras`` files and of
their gzip-compressed bytes (TF-MOT's own way to show its saving), batch-1 and batch-64 latency
(median of ``tf.function``-compiled ``model(x, training=False)`` calls, one thread). With ``--neuroprune DIR``,
neuroprune's pruned ``seed<N>.keras`` models are loaded with Keras 3 on the TensorFlow backend and
timed the same way, so both are compared in one runtime.

    /work/venv-tf/bin/python benchmarks/tfmot_baseline.py --data split.npz --out tfmot.json --seeds 0 1
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


def latency_ms(model, x, runs: int = 100, warmup: int = 10) -> float:
    """Median ms of one call of the model compiled as a TensorFlow graph (tf.function): the model's own
    compute, without the eager per-layer overhead that differs between tf_keras and Keras 3."""
    import tensorflow as tf

    call = tf.function(lambda inputs: model(inputs, training=False))
    for _ in range(warmup):
        np.asarray(call(x))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        np.asarray(call(x))
        times.append((time.perf_counter() - start) * 1000)
    return float(statistics.median(times))


def disk_sizes(save, suffix: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"model{suffix}"
        save(str(path))
        data = path.read_bytes()
    return {f"bytes{suffix.replace('.', '_')}": len(data), f"gzip{suffix.replace('.', '_')}": len(gzip.compress(data, 9))}


def run_seed(data, seed: int, dense_epochs: int, finetune_epochs: int, sparsity: float) -> dict:
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((data["x_train"].shape[1],)),
                              keras.layers.Dense(128, activation="relu", name="fc1"),
                              keras.layers.Dense(64, activation="relu", name="fc2"), keras.layers.Dense(10, name="out")])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    model.fit(data["x_train"], data["y_train"], batch_size=64, epochs=dense_epochs, shuffle=True, verbose=0)
    dense_acc = float(model.evaluate(data["x_test"], data["y_test"], verbose=0)[1])
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    pruned.fit(data["x_train"], data["y_train"], batch_size=64, epochs=finetune_epochs, shuffle=True, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)  # not compiled: no optimizer state in the files
    kernels = [layer.kernel.numpy() for layer in stripped.layers if hasattr(layer, "kernel")]
    row = {"seed": seed, "dense_acc": dense_acc,
           "acc": float((stripped.predict(data["x_test"], verbose=0).argmax(-1) == data["y_test"]).mean()),
           "sparsity": float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels)),
           "params": int(stripped.count_params()),
           "weight_bytes": int(sum(w.nbytes for w in stripped.get_weights()))}
    row.update(disk_sizes(lambda p: stripped.save(p, include_optimizer=False), ".h5"))
    row.update(disk_sizes(lambda p: stripped.save(p), ".keras"))  # stripped is not compiled: no optimizer
    row["b1_ms"] = latency_ms(stripped, tf.constant(data["x_test"][:1]))
    row["b64_ms"] = latency_ms(stripped, tf.constant(data["x_test"][np.arange(64) % len(data["x_test"])]))
    return row


def time_neuroprune(folder: Path, data) -> dict[str, dict]:
    """Latency of neuroprune's pruned .keras files, with Keras 3 on the TensorFlow backend."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras  # Keras 3 (tf_keras is a separate package)
    import tensorflow as tf

    rows = {}
    for path in sorted(folder.glob("seed*.keras")):
        model = keras.saving.load_model(path, compile=False)
        rows[path.stem] = {"b1_ms": latency_ms(model, tf.constant(data["x_test"][:1])),
                           "b64_ms": latency_ms(model, tf.constant(data["x_test"][np.arange(64) % len(data["x_test"])])),
                           "params": int(model.count_params()), "keras_version": keras.__version__}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="npz with x_train, y_train, x_val, y_val, x_test, y_test")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--dense-epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.75)
    parser.add_argument("--neuroprune", type=Path, help="folder of neuroprune's pruned seed<N>.keras models to time")
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    data = dict(np.load(args.data))
    import tensorflow_model_optimization as tfmot

    result = {"tensorflow": tf.__version__, "tfmot": tfmot.__version__, "sparsity_target": args.sparsity,
              "rows": [run_seed(data, s, args.dense_epochs, args.finetune_epochs, args.sparsity) for s in args.seeds]}
    if args.neuroprune:
        result["neuroprune_on_tensorflow"] = time_neuroprune(args.neuroprune, data)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
