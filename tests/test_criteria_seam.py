"""Criteria read weights through the backend seam: a numpy-only backend scores like the torch one.

The core's criteria never touch ``nn.Module``: they ask ``backend.weight_rows(...)`` for
``units x fan-in`` rows and reduce them with the array API. A fake backend whose "model" is a dict
of numpy arrays must therefore give the very scores the torch backend gives on the same weights,
and the core must run (score, select, plan) in a process where torch cannot be imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from models import mlp

from neuroprune import collect_statistics, discover
from neuroprune.core.backend import WeightRows
from neuroprune.core.criteria import ScoringInput, score
from neuroprune.core.criteria.combine import average_ranks
from neuroprune.core.criteria.obs import removal_costs
from neuroprune.torch.recover.reconstruct import reconstruct
from neuroprune.torch.stats import AxisStats, Statistics

SRC = Path(__file__).resolve().parent.parent / "src"


class NumpyBackend:
    """Reads a "model" that is a dict ``path -> (layer type, numpy weight in torch's layout)``."""

    name = "numpy-test"

    def weight_rows(self, model, path, axis, *, outgoing=False):
        kind, w = model[path]
        rows = []
        if axis == "out":  # the filters / rows computing the units, columns spread over input units
            kernel = int(np.prod(w.shape[2:])) if w.ndim > 2 else 1
            rows.append(WeightRows("weight", w.reshape(w.shape[0], -1), "in", np.repeat(np.arange(w.shape[1]), kernel)))
        if outgoing and axis == "in":  # the columns reading the units
            rows.append(WeightRows("weight", np.swapaxes(w, 0, 1).reshape(w.shape[1], -1)))
        return rows


def numpy_model(model: nn.Module) -> dict:
    return {name: (type(m).__name__, m.weight.detach().numpy().copy())
            for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def numpy_stats(stats: Statistics) -> Statistics:
    """The same statistics with every array as numpy (a Keras backend's kind)."""
    host = lambda v: None if v is None else v.detach().cpu().numpy()  # noqa: E731
    axes = {key: AxisStats(**{f: host(getattr(e, f)) if f != "act_n" else e.act_n for f in vars(e)})
            for key, e in stats.axes.items()}
    grads = {key: host(v) for key, v in stats.weight_grad_abs.items()}
    return Statistics(axes, grads, stats.batches, stats.threshold)


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 5, 3), nn.ReLU(), nn.Conv2d(5, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


@pytest.mark.parametrize("build, shape", [(lambda: mlp((5, 6, 4, 3)), (9, 5)), (cnn, (9, 2, 6, 6))])
def test_a_numpy_backend_gives_the_torch_backends_weight_scores(build, shape):
    torch.manual_seed(0)
    model = build().eval()
    batches = [(torch.randn(*shape), torch.randint(0, 3, (shape[0],))) for _ in range(2)]
    graph = discover(model, batches[0][0])
    stats = collect_statistics(model, graph, batches, lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                               gradients=True, per_weight=True, progress=False)
    torch_data = ScoringInput(model, graph, stats)
    numpy_data = ScoringInput(numpy_model(model), graph, numpy_stats(stats), backend=NumpyBackend())
    for name, options in [("magnitude", {}), ("magnitude", {"p": 1}), ("magnitude", {"p": 1, "outgoing": True}),
                          ("seed", {}), ("gradient", {}), ("activation_frequency", {}), ("taylor", {})]:
        expected, got = score(torch_data, name, options), score(numpy_data, name, options)
        assert set(got) == set(expected) == {g.name for g in graph.groups}
        for group in graph.groups:
            assert got[group.name].dtype == np.float64 and got[group.name].shape == (group.size,)
            np.testing.assert_allclose(got[group.name], expected[group.name], rtol=1e-6, err_msg=f"{name} {options}")


def test_the_core_scores_selects_and_plans_without_torch():
    """In a process where torch cannot be imported: numpy weights in, a JSON plan out."""
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        import numpy as np
        from neuroprune.core.backend import WeightRows
        from neuroprune.core.criteria import ScoringInput, score
        from neuroprune.core.groups import DependencyGraph, Group, GroupMember
        from neuroprune.core.plan import PruningPlan
        from neuroprune.core.selection import counts_for_ratio, select_units

        class Backend:
            def weight_rows(self, model, path, axis, *, outgoing=False):
                w = model[path]
                rows = [WeightRows("weight", w, "in", np.arange(w.shape[1]))] if axis == "out" else []
                return rows + ([WeightRows("weight", w.T)] if outgoing and axis == "in" else [])

        model = {"fc1": np.array([[1.0, 0.0], [0.1, 0.1], [3.0, 1.0], [0.0, 0.2]]), "fc2": np.ones((2, 4))}
        group = Group("fc1", 4, [GroupMember("fc1", "out", np.arange(4)), GroupMember("fc2", "in", np.arange(4))],
                      np.ones(4, dtype=bool), [("fc1", "out")])
        graph = DependencyGraph([group], {}, {"fc1": "Linear", "fc2": "Linear"},
                                {"fc1": {"in": 2, "out": 4}, "fc2": {"in": 4, "out": 2}})
        scores = score(ScoringInput(model, graph, None, backend=Backend()), "magnitude", {"p": 1})
        removal = select_units(graph, scores, counts_for_ratio(graph, scores, {}, 0.5))
        keep = graph.keep_indices(removal)
        plan = PruningPlan(adapter="numpy").compose(keep, graph.module_types, graph.axis_sizes)
        print(scores["fc1"].tolist(), plan.to_dict()["modules"]["fc2"]["axes"]["in"]["keep"])
        assert "torch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
    """)
    env = {"PYTHONPATH": f"{SRC}:{':'.join(p for p in sys.path if p)}"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[1.0, 0.2, 4.0, 0.2] [0, 2]"


def test_average_ranks_equal_scipy_rankdata():
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    for _ in range(50):
        values = rng.integers(0, 5, size=int(rng.integers(1, 30))).astype(float)  # many ties
        np.testing.assert_array_equal(average_ranks(values), rankdata(values, method="average") - 1)
    assert np.isnan(average_ranks(np.array([1.0, np.nan]))).all()  # as scipy: NaN makes every rank NaN


def test_random_scores_are_the_numbers_torch_rand_drew():
    """The random baseline is unchanged by leaving torch: one generator over the groups in order."""
    model = mlp((5, 6, 4, 3))
    graph = discover(model, torch.randn(1, 5))
    for seed in (0, 7, 2**32 + 5):
        scores = score(ScoringInput(model, graph, None), "random", {"seed": seed})
        generator = torch.Generator().manual_seed(seed)
        for group in graph.groups:
            expected = torch.rand(group.size, generator=generator).double().numpy()
            np.testing.assert_array_equal(scores[group.name], expected)


def _removal_costs_by_inverse(weight, gram, unit_of, units, damping):
    """The former implementation: the inverse of the damped Gram matrix, one solve per unit."""
    h = gram.clone()
    inputs = h.shape[0] - 1
    h[range(inputs), range(inputs)] += damping * float(h.diagonal()[:inputs].mean())
    h_inv = torch.linalg.inv(h)
    costs = np.zeros(units)
    for unit in range(units):
        block = torch.nonzero(unit_of == unit).flatten()
        solved = torch.linalg.solve(h_inv[block][:, block], weight[:, block].T)
        costs[unit] = float((weight[:, block] * solved.T).sum())
    return costs


@pytest.mark.parametrize("damping", [0.0, 0.01])
def test_obs_through_cholesky_equals_the_inverse_formula_for_mixed_block_widths(damping):
    torch.manual_seed(0)
    x = torch.randn(300, 9, dtype=torch.float64)
    x1 = torch.cat([x, torch.ones(300, 1, dtype=torch.float64)], dim=1)
    w = torch.randn(4, 9, dtype=torch.float64)
    unit_of = torch.tensor([2, 0, 0, 1, 3, 1, 1, -1, 4])  # widths 2, 3, 1, 1, 1 and one fixed column
    got = removal_costs(w, x1.T @ x1, unit_of, 5, damping=damping)
    np.testing.assert_allclose(got, _removal_costs_by_inverse(w, x1.T @ x1, unit_of, 5, damping), rtol=1e-9)
    np.testing.assert_allclose(removal_costs(w.numpy(), (x1.T @ x1).numpy(), unit_of.numpy(), 5, damping=damping),
                               got, rtol=1e-9)  # numpy arrays give the same (the maths is the array API's)


def test_reconstruct_refits_a_gpt2_conv1d_like_the_equivalent_linear():
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    linear = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    linear.load_state_dict(teacher.state_dict())
    transposed = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), conv1d(3, 6))
    with torch.no_grad():
        transposed[0].load_state_dict(teacher[0].state_dict())
        transposed[2].weight.copy_(teacher[2].weight.T)
        transposed[2].bias.copy_(teacher[2].bias)
    keep = {"2": {"in": np.array([0, 2, 3, 5])}}
    batches = [torch.randn(64, 4) for _ in range(2)]
    assert reconstruct(linear, teacher, keep, batches, lambda m, b: m(b), progress=False) == ["2"]
    assert reconstruct(transposed, teacher, keep, batches, lambda m, b: m(b), progress=False) == ["2"]
    torch.testing.assert_close(transposed[2].weight.T, linear[2].weight)
    torch.testing.assert_close(transposed[2].bias, linear[2].bias)
    assert not torch.equal(linear[2].weight, teacher[2].weight)  # it did re-fit


def test_reconstruct_on_gpt2_refits_its_conv1d_projections_and_brings_the_outputs_closer():
    transformers = pytest.importorskip("transformers")
    from neuroprune.torch.adapters import adapter_for
    from neuroprune.torch.surgery import apply_keep

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=4)
    teacher = transformers.GPT2LMHeadModel(config).eval()
    graph = adapter_for(teacher).discover(teacher, None)
    ffn = next(g for g in graph.groups if g.name.endswith("mlp"))
    keep = graph.keep_indices({ffn.name: np.arange(0, ffn.size, 2)})
    batches = [torch.randint(0, 50, (4, 16)) for _ in range(4)]
    run = lambda m, b: m(input_ids=b).logits  # noqa: E731
    plain = apply_keep(teacher, keep)
    refitted = apply_keep(teacher, keep)
    # refit after surgery: the student's input already lacks the removed neurons
    kept_in = {path: axes for path, axes in keep.items() if "in" in axes}
    fitted = reconstruct(refitted, teacher, {p: {"in": np.arange(len(a["in"]))} for p, a in kept_in.items()},
                         batches, run, progress=False)
    assert fitted == ["transformer.h.0.mlp.c_proj"]
    with torch.no_grad():
        error = lambda m: sum(float((run(m, b) - run(teacher, b)).pow(2).mean()) for b in batches)  # noqa: E731
        assert error(refitted) < 0.5 * error(plain)
