"""The write-up's scenario in its own framework, Keras 3: train, score, prune, validate, fine-tune, report.

The write-up builds a Keras ``Sequential`` 784-128-64-10 ReLU network, trains it 5 epochs with
Adam (batch 64, 20 % of the training data held out for validation) on MNIST, scores neurons with
``s = sum_i |w_i| g_i f_i / sum_i |w_i|`` (neuroprune's ``seed`` criterion) and prunes. Here the
neurons are removed from the Keras model itself (a smaller ``Sequential``), every step is validated
and rolled back if the validation accuracy drops by more than ``--tolerance``, the model is
fine-tuned with ``model.fit``, the other criteria are scored for comparison, and the result is
saved as ``model.keras`` (plain ``keras.saving.load_model`` reads it) plus safetensors and the plan.

Runs on any Keras backend (``KERAS_BACKEND=torch|jax|tensorflow``; torch when none is set and
TensorFlow is missing). Bring your own MNIST ``.npz`` (``x_train, y_train, x_test, y_test``, e.g.
Keras' ``mnist.npz``) or make an MNIST-shaped one offline from scikit-learn's digits::

    python examples/write_up_keras.py --make-demo-npz mnist.npz
    python examples/write_up_keras.py --data mnist.npz --out write-up-keras-out --overwrite
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import neuroprune.keras  # noqa: F401  (picks a Keras backend before keras is imported)
import neuroprune as npr
from neuroprune.core.backend import backend_for
from neuroprune.data import load_npz
from neuroprune.keras.task import KerasClassificationTask
from neuroprune.report.table import format_report

CRITERIA = ("seed", "magnitude", "gradient", "taylor", "activation_frequency")


def build(in_features: int = 784, num_classes: int = 10):
    """The write-up's model: Rescaling(1/255) -> Dense(128, relu) -> Dense(64, relu) -> Dense(10, softmax)."""
    import keras

    return keras.Sequential([
        keras.Input((in_features,)),
        keras.layers.Rescaling(1 / 255.0, name="scale"),
        keras.layers.Dense(128, activation="relu", name="fc1"),
        keras.layers.Dense(64, activation="relu", name="fc2"),
        keras.layers.Dense(num_classes, activation="softmax", name="out"),
    ], name="write_up")


def make_demo_npz(path: str | Path, seed: int = 0) -> Path:
    """An MNIST-shaped ``.npz`` from scikit-learn's digits: 28x28 uint8 images (bilinear upscale), 80/20 split."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    big = zoom(digits.images.astype(np.float32) / 16.0, (1, 28 / 8, 28 / 8), order=1)
    x = (np.clip(big, 0, 1) * 255).round().astype(np.uint8)
    y = digits.target.astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="NPZ", help="your .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--make-demo-npz", metavar="PATH", help="write an MNIST-shaped .npz from scikit-learn's digits")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (write-up: 5)")
    parser.add_argument("--samples", type=int, help="use only this many training samples (quick runs)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--criterion", default="seed", help="criterion that prunes (write-up: 'seed')")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of hidden neurons to remove")
    parser.add_argument("--steps", type=int, default=4, help="validated pruning steps")
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest validation drop a step may cause")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="model.fit epochs after every accepted step")
    parser.add_argument("--out", default="write-up-keras-out", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.data is None and args.make_demo_npz is None:
        parser.error("give --data YOUR.npz, or --make-demo-npz PATH to create an MNIST-shaped one offline")
    return args


def score_table(model, task, config) -> dict[str, dict[str, float]]:
    """Every criterion's scores on the trained model: per layer, the share of the total that the
    lowest-scoring half of the neurons carries (low: the criterion separates weak neurons clearly)."""
    from neuroprune.core.scoring_pass import score_groups

    backend = backend_for(model)
    graph = backend.discover(model, None)
    table = {}
    for name in CRITERIA:
        scores = score_groups(model, graph, task, npr.PruneConfig(criterion=name, progress=False), backend=backend)
        table[name] = {group: float(np.sort(s)[: len(s) // 2].sum() / max(s.sum(), 1e-12)) for group, s in scores.items()}
    return table


def main(argv: list[str] | None = None) -> dict:
    """Run the scenario; returns what a caller may check (paths, accuracies, the result)."""
    import keras

    args = parse_args(argv)
    start = time.perf_counter()
    if args.make_demo_npz:
        make_demo_npz(args.make_demo_npz, seed=args.seed)
        print(f"wrote {args.make_demo_npz} (MNIST-shaped: 28x28 uint8 images from scikit-learn's digits)")
    data_path = args.data or args.make_demo_npz
    splits = load_npz(data_path, layout="flat", val_fraction=0.2, seed=args.seed)
    task = KerasClassificationTask(splits, batch_size=args.batch_size, seed=args.seed)
    if args.samples:
        x, y = task.splits["train"]
        task.splits["train"] = (x[:args.samples], y[:args.samples])
    features, classes = task.splits["train"][0].shape[1], int(max(y.max() for _, y in task.splits.values())) + 1
    print(f"{data_path}: {len(task.splits['train'][0])} training, {len(task.splits['val'][0])} validation, "
          f"{len(task.splits['test'][0])} test samples; Keras backend {keras.backend.backend()}")

    keras.utils.set_random_seed(args.seed)
    model = build(features, classes)
    task.bind(model).finetune(model, epochs=args.epochs, learning_rate=1e-3, progress=not args.quiet)
    dense_accuracy = task.evaluate(model, "test")
    print(f"dense {features}-128-64-{classes} network after {args.epochs} epochs: test accuracy {dense_accuracy:.4f}")

    config = npr.PruneConfig(criterion=args.criterion, ratio=args.ratio, steps=args.steps, tolerance=args.tolerance,
                             finetune_epochs=args.finetune_epochs, seed=args.seed, progress=not args.quiet)
    print("share of the score carried by the weaker half of each layer (lower = clearer ranking):")
    for name, shares in score_table(model, task, config).items():
        print(f"  {name:22s} " + "  ".join(f"{group} {share:.3f}" for group, share in shares.items()))
    result = npr.prune(model, task, config)
    print(format_report(result.report))
    before = sum(layer["width_before"] for layer in result.report["layers"])
    after = sum(layer["width_after"] for layer in result.report["layers"])
    print(f"removed {before - after} of {before} hidden neurons (target {args.ratio:.0%}); "
          f"widths {[result.model.get_layer(n).units for n in ('fc1', 'fc2')]}")

    result.save(args.out, overwrite=args.overwrite)
    reloaded = keras.saving.load_model(Path(args.out) / "model.keras")
    x = task.splits["test"][0][:64]
    same = bool(np.array_equal(keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(result.model(x))))
    print(f"saved to {args.out}/ and reloaded with keras.saving.load_model: outputs identical: {same} "
          f"({time.perf_counter() - start:.1f} s)")
    return {"out": Path(args.out), "dense_accuracy": dense_accuracy, "pruned_accuracy": result.report["after"]["accuracy"],
            "reloaded_equal": same, "result": result}


if __name__ == "__main__":
    main()
