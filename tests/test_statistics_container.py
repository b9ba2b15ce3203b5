"""core.statistics: framework-free containers, a fixed schema and flat (de)serialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from neuroprune.core.errors import NeuropruneError
from neuroprune.core.statistics import AxisStats, Statistics, merge_schemas
from neuroprune.torch import distributed
from neuroprune.torch.graph.discover import discover
from neuroprune.torch.stats import collect_statistics


def _collected(batches):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    graph = discover(model, torch.randn(1, 4))
    loss = lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])  # noqa: E731
    return collect_statistics(model, graph, batches, loss, gradients=True, per_weight=True, gram=True, progress=False)


def _batches(n):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(5, 4, generator=generator), torch.randint(0, 3, (5,), generator=generator)) for _ in range(n)]


def test_old_import_path_gives_the_same_classes():
    from neuroprune.torch import stats

    assert stats.Statistics is Statistics and stats.AxisStats is AxisStats


def test_flat_round_trip_keeps_every_field_shape_and_dtype():
    stats = _collected(_batches(3))
    schema = stats.schema()
    floats, ints = stats.flat_arrays(schema)
    assert floats.dtype == np.float64 and ints.dtype == np.int64
    back = Statistics().load_flat(schema, floats, ints)
    assert back.schema() == schema and back.batches == 3
    for key, entry in stats.axes.items():
        for name in ("act_count", "act_abs", "act_sum", "act_sq", "grad_abs", "grad_numel", "taylor", "gram"):
            mine, theirs = getattr(entry, name), getattr(back.axes[key], name)
            assert (mine is None) == (theirs is None)
            if mine is not None:
                np.testing.assert_array_equal(np.asarray(theirs), mine.numpy())
                assert str(theirs.dtype) == str(mine.dtype).replace("torch.", "")
        assert back.axes[key].act_n == entry.act_n
    for key, value in stats.weight_grad_abs.items():
        assert back.weight_grad_abs[key].dtype == np.float32
        np.testing.assert_array_equal(back.weight_grad_abs[key], value.numpy())


def test_torch_vectors_and_flat_sum_equal_merge():
    a, b = _collected(_batches(2)), _collected(_batches(3)[2:])
    schema = merge_schemas([a.schema(), b.schema()])
    fa, ia = a.flat_arrays(schema, like=torch.zeros(0))
    fb, ib = b.flat_arrays(schema, like=torch.zeros(0))
    assert isinstance(fa, torch.Tensor) and fa.dtype == torch.float64 and ia.dtype == torch.int64
    summed = Statistics().load_flat(schema, fa + fb, ia + ib)
    merged = _collected(_batches(2)).merge(b)
    whole = _collected(_batches(3))
    for key, entry in whole.axes.items():
        for name in ("act_abs", "act_sq", "grad_abs", "taylor", "gram"):
            torch.testing.assert_close(getattr(summed.axes[key], name), getattr(entry, name))
            torch.testing.assert_close(getattr(merged.axes[key], name), getattr(entry, name))
        for name in ("act_count", "grad_numel"):
            if getattr(entry, name) is not None:
                assert torch.equal(getattr(summed.axes[key], name), getattr(entry, name))
        assert summed.axes[key].act_n == entry.act_n
    assert summed.batches == merged.batches == 3


def test_missing_fields_add_zeros_and_order_is_fixed():
    empty = Statistics()
    full = _collected(_batches(1))
    schema = merge_schemas([empty.schema(), full.schema()])
    assert schema == merge_schemas([full.schema(), empty.schema()])
    floats, ints = empty.flat_arrays(schema)
    assert not floats.any() and not ints.any() and len(floats) == len(full.flat_arrays(schema)[0])


def test_numpy_values_merge():
    a, b = AxisStats(act_abs=np.ones(3), act_n=2.0), AxisStats(act_abs=np.full(3, 2.0), act_n=1.0)
    a.merge(b)
    assert a.act_abs.tolist() == [3.0, 3.0, 3.0] and a.act_n == 3.0


def test_shapes_that_differ_between_processes_are_refused():
    a, b = Statistics(), Statistics()
    a.axis("fc", "in").act_abs = np.zeros(3)
    b.axis("fc", "in").act_abs = np.zeros(4)
    with pytest.raises(NeuropruneError, match="every process must prune the same model"):
        merge_schemas([a.schema(), b.schema()])


def test_one_process_helpers_are_the_identity():
    stats = _collected(_batches(1))
    assert distributed.all_reduce_statistics(stats) is stats
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    distributed.barrier()
    with pytest.raises(ValueError, match="boom"), distributed.guarded(barrier_at_end=True):
        raise ValueError("boom")
    model = nn.Linear(2, 2)
    assert distributed.state_hash(model) == distributed.state_hash(model)
    distributed.check_same_state(model)
