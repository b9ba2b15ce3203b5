"""Coverage over public architectures: torchvision and timm models and torch's own blocks.

Each model is built with random weights at a small input size; 40 % of every group's units go (by
weight magnitude). Asserted: pruning runs, masked == removed (relative to the output's scale),
every output keeps its shape, the parameter count drops, and save -> ``neuroprune.load``
reproduces the outputs exactly. torchvision and timm are test-only dependencies: run with
``make test-vision`` (its own environment; see the Makefile); elsewhere the torchvision and timm
cases are skipped. Slow models carry ``@pytest.mark.slow`` (``-m slow`` or ``-m ''`` runs them).
"""

from __future__ import annotations

import importlib.util

import pytest
from public_arch import ARCHITECTURES, Arch, prune_with_neuroprune



def _available(source: str) -> bool:
    if source == "torch":
        return True
    if source == "timm" and importlib.util.find_spec("timm") is None:
        return False
    if importlib.util.find_spec("torchvision") is None:
        return False
    from torchvision_compat import import_torchvision

    try:
        import_torchvision()
    except Exception:  # a torchvision that cannot be imported here: skip, do not fail
        return False
    return True


def _param(arch: Arch):
    marks = [pytest.mark.slow] if arch.slow else []
    return pytest.param(arch, id=arch.name, marks=marks)


SUPPORTED = [_param(a) for a in ARCHITECTURES]


@pytest.mark.parametrize("arch", SUPPORTED)
def test_public_architecture_prunes_masked_equals_removed_and_reloads(arch: Arch):
    if not _available(arch.source):
        pytest.skip(f"{arch.source} is not installed (make test-vision)")
    outcome = prune_with_neuroprune(arch, ratio=0.4)
    assert outcome.groups > 0
    assert outcome.shapes_kept
    assert outcome.masked_max_error < 1e-4
    assert outcome.params_after < outcome.params_before
    assert outcome.reload_exact
