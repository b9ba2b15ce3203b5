"""The core's loop is framework-free: a backend over plain numpy weight matrices drives it end to end.

The "model" is a two-layer perceptron held as numpy arrays; :class:`NumpyBackend` implements the
seam (:class:`neuroprune.core.backend.Backend`) with its own discovery, masks, surgery and
measurement, and :class:`NumpyTask` the :class:`neuroprune.core.tasks.Task` protocol. A Keras
backend implements the same methods.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from neuroprune.core.backend import Backend, MaskHandle, register_backend, unregister_backend
from neuroprune.core.config import PruneConfig
from neuroprune.core.criteria.registry import _CRITERIA, Criterion, register_criterion
from neuroprune.core.groups import DependencyGraph, Group, GroupMember
from neuroprune.core.loop import prune
from neuroprune.core.tasks import Task


class NumpyMLP:
    """``relu(x W1^T + b1) W2^T + b2`` with the weights in ``arrays``."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __call__(self, x: np.ndarray) -> np.ndarray:
        a = self.arrays
        return np.maximum(x @ a["fc1.weight"].T + a["fc1.bias"], 0) @ a["fc2.weight"].T + a["fc2.bias"]


class _Masks:
    def __init__(self, model: NumpyMLP, keep):
        self.model, self.keep = model, keep
        self.saved = {k: v.copy() for k, v in model.arrays.items()}
        self.reapply()

    def reapply(self) -> None:
        for path, axes in self.keep.items():
            for axis, kept in axes.items():
                self.model.arrays.update(_zeroed(self.model.arrays, path, axis, np.asarray(kept)))

    def remove(self) -> None:
        for name, saved in self.saved.items():
            self.model.arrays[name][...] = saved  # bit for bit, in place

    def commit(self) -> None:
        self.saved = {}


def _zeroed(arrays, path: str, axis: str, kept: np.ndarray) -> dict[str, np.ndarray]:
    weight = arrays[f"{path}.weight"]
    dropped = np.setdiff1d(np.arange(weight.shape[0 if axis == "out" else 1]), kept)
    if axis == "out":
        weight[dropped, :] = 0
        arrays[f"{path}.bias"][dropped] = 0
    else:
        weight[:, dropped] = 0
    return {}


class NumpyBackend:
    name = "numpy-test"

    def __init__(self):
        self.agreed: list = []

    def matches(self, model) -> bool:
        return isinstance(model, NumpyMLP)

    def clone(self, model):
        return NumpyMLP(copy.deepcopy(model.arrays))

    def discover(self, model, example, ignore=(), *, ignore_untraceable=False):
        hidden, inputs = model.arrays["fc1.weight"].shape
        outputs = model.arrays["fc2.weight"].shape[0]
        units = np.arange(hidden)
        group = Group("fc1", hidden, [GroupMember("fc1", "out", units), GroupMember("fc2", "in", units)],
                      np.ones(hidden, dtype=bool), [("fc1", "out")])
        return DependencyGraph([group], {}, {"fc1": "numpy.Dense", "fc2": "numpy.Dense"},
                               {"fc1": {"out": hidden, "in": inputs}, "fc2": {"out": outputs, "in": hidden}})

    def weight_rows(self, model, path, axis, *, outgoing=False):
        return []

    def collect_statistics(self, model, graph, task, needs, *, threshold=0.0, progress=True, desc=""):
        return None

    def mask(self, model, keep):
        return _Masks(model, keep)

    def apply_keep(self, model, keep):
        for path, axes in keep.items():
            for axis, kept in axes.items():
                kept = np.asarray(kept)
                if axis == "out":
                    model.arrays[f"{path}.weight"] = model.arrays[f"{path}.weight"][kept]
                    model.arrays[f"{path}.bias"] = model.arrays[f"{path}.bias"][kept]
                else:
                    model.arrays[f"{path}.weight"] = model.arrays[f"{path}.weight"][:, kept]
        return model

    def reconstruct(self, student, before, keep, task, config):
        raise AssertionError("not asked for")

    def recover(self, model, task, config, teacher, desc):
        return 0

    def snapshot(self):
        state = np.random.get_state()

        class Restore:
            def restore(self):
                np.random.set_state(state)

        return Restore()

    def agree(self, value):
        self.agreed.append(value)
        return value

    def measure(self, model, task, config):
        return {"params": sum(a.size for a in model.arrays.values()), "accuracy": task.evaluate(model, "test")}

    def measure_cost(self, model, task, quantity):
        return float(sum(a.size for a in model.arrays.values()))

    def cost_model(self, model, graph, task, quantity, *, skip=frozenset(), min_widths=None):
        return None

    def save(self, folder, model, plan, report, *, overwrite=False, extra=None):
        folder.mkdir(parents=True, exist_ok=overwrite)
        np.savez(folder / "model.npz", **model.arrays)
        (folder / "plan.json").write_text(json.dumps(plan.to_dict()))

    def fingerprint(self, model, task):
        return {"weights": "", "data": ""}

    def check_checkpoint(self, folder):
        pass

    def save_checkpoint(self, folder, model, state, config, fingerprint):
        raise AssertionError("no checkpoint asked for")

    def load_checkpoint(self, folder, original, config, fingerprint):
        raise AssertionError("no checkpoint asked for")


class NumpyTask:
    """Two blobs in 4-D; the label is the sign of the first input."""

    metric_name = "accuracy"
    lower_is_better = False
    capabilities = frozenset()

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.x = {split: rng.normal(size=(n, 4)) for split, n in (("train", 64), ("val", 64), ("test", 64))}

    def example_input(self):
        return self.x["train"][:2]

    def make_input(self, batch_size):
        return self.x["train"][:batch_size]

    def calibration_batches(self):
        return [self.x["train"]]

    def train_batches(self, epoch):
        return [self.x["train"]]

    def loss(self, model, batch):
        raise AssertionError("no gradient criterion asked for")

    def evaluate(self, model, split):
        x = self.x[split]
        return float((model(x).argmax(axis=1) == (x[:, 0] > 0)).mean())


class RowNorm(Criterion):
    """L2 norm of each hidden unit's incoming weights, read straight from the numpy model."""

    name = "numpy_row_norm"

    def score(self, data, options):
        return {"fc1": np.linalg.norm(data.model.arrays["fc1.weight"], axis=1)}


def numpy_mlp() -> NumpyMLP:
    """8 hidden units: 4 that carry the label (two per sign of the first input) and 4 nearly silent ones."""
    w1 = np.zeros((8, 4))
    w1[:4, 0] = [2.0, -1.5, 1.8, -1.2]
    w1[4:, :] = 1e-3
    w2 = np.zeros((2, 8))
    w2[1, :4], w2[0, :4] = [1, -1, 1, -1], [-1, 1, -1, 1]
    return NumpyMLP({"fc1.weight": w1, "fc1.bias": np.zeros(8), "fc2.weight": w2, "fc2.bias": np.array([0, 0.01])})


@pytest.fixture
def backend():
    """The numpy backend and its criterion, registered for one test only (other code lists every criterion)."""
    backend = register_backend(NumpyBackend())
    register_criterion(RowNorm())
    yield backend
    unregister_backend(backend.name)
    _CRITERIA.pop(RowNorm.name)


def test_the_fake_backend_and_task_satisfy_the_protocols(backend):
    assert isinstance(backend, Backend) and isinstance(NumpyTask(), Task)
    assert isinstance(backend.mask(numpy_mlp(), {}), MaskHandle)


def test_the_loop_prunes_a_numpy_model_end_to_end(backend, tmp_path):
    model, task = numpy_mlp(), NumpyTask()
    original = copy.deepcopy(model.arrays)
    result = prune(model, task, PruneConfig(criterion="numpy_row_norm", ratio=0.5, tolerance=0.0, progress=False))
    assert result.model.arrays["fc1.weight"].shape == (4, 4) and result.model.arrays["fc2.weight"].shape == (2, 4)
    assert np.array_equal(result.model.arrays["fc1.weight"], original["fc1.weight"][:4])  # the silent half went
    assert all(np.array_equal(v, original[k]) for k, v in model.arrays.items())  # the caller's model untouched
    assert result.plan.adapter == "numpy-test" and result.plan.keep()["fc1"]["out"].tolist() == [0, 1, 2, 3]
    assert result.report["steps"][0]["accepted"] and result.report["after"]["accuracy"] == 1.0
    assert result.report["before"]["params"] == 58 and result.report["after"]["params"] == 30
    assert [w["width_after"] for w in result.report["layers"]] == [4]
    # every decision went through agree: the units removed and the verdict (and the reference metric)
    assert any(isinstance(v, dict) and sorted(v["fc1"].tolist()) == [4, 5, 6, 7] for v in backend.agreed)
    assert True in backend.agreed
    result.save(tmp_path / "out", html=False)  # saved by the backend, no torch writer involved
    assert np.load(tmp_path / "out" / "model.npz")["fc1.weight"].shape == (4, 4)


def test_a_rolled_back_numpy_attempt_restores_the_weights_bit_for_bit(backend):
    model, task = numpy_mlp(), NumpyTask()
    result = prune(model, task, PruneConfig(criterion="numpy_row_norm", ratio=0.9, tolerance=0.0, max_retries=0,
                                            progress=False))
    step = result.report["steps"][0]
    assert not step["accepted"] and "> tolerance 0.0" in step["reason"]
    assert all(np.array_equal(result.model.arrays[k], v) for k, v in model.arrays.items())
    assert False in backend.agreed


class RankZeroSaysNo(NumpyBackend):
    """As on a rank whose own validation passed while rank 0's failed: the agreed verdict wins."""

    name = "numpy-rank-zero-says-no"

    def agree(self, value):
        return False if isinstance(value, bool) else super().agree(value)


def test_the_loop_follows_the_agreed_verdict_not_its_own():
    backend = register_backend(RankZeroSaysNo())
    register_criterion(RowNorm())
    try:
        model = numpy_mlp()
        result = prune(model, NumpyTask(), PruneConfig(criterion="numpy_row_norm", ratio=0.5, tolerance=0.0,
                                                        max_retries=0, progress=False))
    finally:
        unregister_backend(backend.name)
        _CRITERIA.pop(RowNorm.name)
    assert not result.report["steps"][0]["accepted"]  # locally within tolerance, rolled back as agreed
    assert all(np.array_equal(result.model.arrays[k], v) for k, v in model.arrays.items())
