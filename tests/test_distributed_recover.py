"""Recovery over 2 ranks (DDP / FSDP2, each rank a slice of every batch) equals one process.

The torchrun tests carry the ``dist`` marker (``make test-dist``); the batch slicing itself is
tested in one process here, in the default suite.
"""

from __future__ import annotations

import sys
from collections import namedtuple

import pytest
import torch
import torch.nn as nn

from neuroprune import PruneConfig
from neuroprune.core.errors import ConfigError
from neuroprune.torch.recover.data_parallel import DataParallel, sharded_as, slice_batch


@pytest.mark.parametrize("rows, world", [(7, 2), (5, 3), (2, 3), (64, 2), (1, 2)])
def test_slices_cover_the_batch_once_and_their_weights_give_the_global_mean(rows, world):
    x, y = torch.arange(rows).float(), torch.arange(rows)
    seen, mean = [], 0.0
    for rank in range(world):
        (part_x, part_y), weight = slice_batch((x, y), rank, world)
        assert torch.equal(part_x.long(), part_y)
        if weight:
            seen += part_y.tolist()
        mean += part_x.mean().item() * weight / world  # what DDP's average of the scaled losses computes
    assert seen == list(range(rows))
    assert mean == pytest.approx(x.mean().item())


def test_slicing_follows_dicts_named_tuples_and_leaves_other_values_whole():
    Pair = namedtuple("Pair", "x y")
    batch = {"ids": torch.ones(5, 3), "mask": torch.zeros(5, 3), "scale": torch.tensor(2.0),
             "pair": Pair(torch.ones(5), 7)}
    part, weight = slice_batch(batch, 1, 2)
    assert part["ids"].shape == (3, 3) and part["mask"].shape == (3, 3) and part["scale"].dim() == 0
    assert isinstance(part["pair"], Pair) and part["pair"].x.shape == (3,) and part["pair"].y == 7
    assert weight == pytest.approx(3 / 5 * 2)
    assert slice_batch(batch, 0, 1) == (batch, 1.0)


def test_one_process_trains_the_model_itself_and_a_bad_sharding_is_refused():
    model = nn.Linear(2, 1)
    with DataParallel(model, "fsdp") as replica:
        assert replica.net is model and replica.parameters() == list(model.parameters())
        assert replica.mean(3.0) == 3.0
    with pytest.raises(ConfigError, match="recover_sharding must be one of ddp, fsdp, none"):
        DataParallel(model, "zero3")
    with pytest.raises(ConfigError, match="recover_sharding must be one of ddp, fsdp, none, got 'zero3'"):
        PruneConfig(recover_sharding="zero3")


def test_the_sharding_set_for_a_block_reaches_recovery_inside_it():
    model = nn.Linear(2, 1)
    assert DataParallel(model).sharding == "ddp"
    with sharded_as("fsdp"):
        assert DataParallel(model).sharding == "fsdp" and DataParallel(model, "none").sharding == "none"
    assert DataParallel(model).sharding == "ddp"


def test_the_cli_option_reaches_the_config():
    from neuroprune.cli.main import build_parser
    from neuroprune.cli.settings import config_from_args

    args = build_parser().parse_args(["prune", "--model", "zoo:mlp", "--data", "digits", "--recover-sharding", "fsdp"])
    assert config_from_args(args).recover_sharding == "fsdp"


# -- 2 ranks under torchrun ------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    from test_distributed import DIST, _check, torchrun

    sys.path.insert(0, str(DIST))
    out = tmp_path_factory.mktemp("recover") / "two.pt"
    _check(torchrun("recover_run.py", str(out)))
    return torch.load(out, weights_only=False)


def _close(many: dict, one: dict) -> None:
    assert many.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(many[name], one[name], rtol=1e-4, atol=1e-5, msg=name)


CASES = ("mlp", "mlp-tail", "mlp-user-ddp", "residual", "kd", "distill", "mlp-fsdp", "distill-fsdp", "mlp-none")


@pytest.mark.dist
@pytest.mark.parametrize("name", CASES)
def test_recovery_over_two_ranks_gives_the_weights_of_one_process(two_ranks, name):
    from recover_cases import run_case

    one, many = run_case(name), two_ranks[name]
    assert two_ranks["world_size"] == 2 and many["same_on_every_rank"]
    _close(many["state"], one["state"])
    assert many["history"] == pytest.approx(one["history"], rel=1e-4, abs=1e-6)  # the global batch's loss
    if name.startswith("mlp") or name == "residual":  # rank 0 saw its share of every batch (all of it without sharding)
        assert many["rows"] == one["rows"] if name == "mlp-none" else many["rows"] < 0.6 * one["rows"]


@pytest.mark.dist
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_a_full_prune_with_fine_tuning_over_two_ranks_matches_one_process(two_ranks, sharding):
    from recover_cases import prune_case

    one, many = prune_case(sharding), two_ranks["prune" if sharding == "ddp" else "prune-fsdp"]
    assert many["same_on_every_rank"]
    assert many["plan"] == one["plan"] and many["steps"] == one["steps"]
    _close(many["state"], one["state"])


@pytest.mark.dist
def test_the_ddp_wrapper_leaves_no_gradient_hook_behind(two_ranks):
    assert two_ranks["backward_alone"]
