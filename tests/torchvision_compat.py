"""Import torchvision next to a CPU build of torch whose ABI its C++ extension does not match.

The torchvision 0.28.0 wheel reachable from this machine's package index is a CUDA build: its
``_C.so`` does not load next to the CPU ``torch==2.13.0`` pin, and ``import torchvision`` then
fails with ``operator torchvision::nms does not exist`` (its fake-kernel registrations need the
``nms`` and ``qnms`` schemas the extension would have defined). The models themselves are pure
Python, so defining those two schemas first is enough for everything these tests use
(classification and segmentation models; not detection, whose ``nms`` has no kernel then).

Example:
    >>> tv = import_torchvision()  # doctest: +SKIP
    >>> tv.models.resnet18(weights=None)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

_LIBRARY = None  # keeps the schema definitions alive


def _extension_loads() -> bool:
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # nothing to fix; the import reports itself
    for location in spec.submodule_search_locations:
        for candidate in Path(location).glob("_C*.so"):
            try:
                torch.ops.load_library(str(candidate))
                return True
            except (OSError, RuntimeError):
                return False
    return True


def import_torchvision():
    """``import torchvision``, defining the two op schemas its broken extension would provide."""
    global _LIBRARY
    import torch

    if _LIBRARY is None and not _extension_loads():
        _LIBRARY = torch.library.Library("torchvision", "DEF")
        _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return importlib.import_module("torchvision")
