"""Retrain-free recovery: re-fit the layers that read pruned neurons (ThiNet / FLAP style).

For every layer that lost input channels, least squares finds the weights and bias on the kept
inputs that best reproduce what the layer computed before pruning:
``min ||X_kept W^T + b - Y_before||^2 + ridge``, where ``X_kept`` are the layer's inputs in the
pruned network (earlier re-fits included) and ``Y_before`` its outputs in the unpruned network.
Sums ``X^T X`` and ``X^T Y`` stream over calibration batches in float64, so memory does not grow
with the data. Linear and ordinary Conv2d layers are re-fitted; other layers are left as they are.

Example:
    >>> import torch, torch.nn as nn
    >>> teacher = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    >>> student = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    >>> _ = student.load_state_dict(teacher.state_dict())
    >>> keep = {"2": {"in": torch.tensor([0, 1, 2, 3, 4, 5])}}
    >>> reconstruct(student, teacher, keep, [torch.randn(32, 4)], lambda m, b: m(b), progress=False)
    ['2']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import NonFiniteError

MAX_ROWS_PER_BATCH = 8192


def _reconstructable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"


def _features(module: nn.Module, x: torch.Tensor, kept: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows of kept inputs (Linear: features; Conv2d: unfolded patches), and rows picked."""
    x = x.index_select(-1 if isinstance(module, nn.Linear) else 1, kept.to(x.device))
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
    else:
        patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    picked = None
    if rows.shape[0] > MAX_ROWS_PER_BATCH:
        picked = torch.randperm(rows.shape[0], generator=generator)[:MAX_ROWS_PER_BATCH].to(rows.device)
        rows = rows.index_select(0, picked)
    return rows, picked


def _targets(module: nn.Module, y: torch.Tensor, picked: torch.Tensor | None) -> torch.Tensor:
    rows = y.reshape(-1, y.shape[-1]) if isinstance(module, nn.Linear) else y.movedim(1, -1).reshape(-1, y.shape[1])
    return rows if picked is None else rows.index_select(0, picked)


def refit_layer(student: nn.Module, teacher: nn.Module, path: str, kept: torch.Tensor, batches: list[Any],
                run: Callable[[nn.Module, Any], Any], ridge: float = 1e-3) -> None:
    """Least-squares re-fit of layer ``path`` of ``student`` on its ``kept`` input channels."""
    s_mod, t_mod = student.get_submodule(path), teacher.get_submodule(path)
    captured: dict[str, torch.Tensor] = {}
    hooks = [s_mod.register_forward_pre_hook(lambda m, args: captured.__setitem__("x", args[0].detach())),
             t_mod.register_forward_hook(lambda m, args, out: captured.__setitem__("y", out.detach()))]
    generator = torch.Generator().manual_seed(0)
    gram = cross = None
    has_bias = s_mod.bias is not None
    try:
        with torch.no_grad():
            for batch in batches:
                run(teacher, batch)
                run(student, batch)
                x, picked = _features(s_mod, captured["x"], kept, generator)
                y = _targets(s_mod, captured["y"], picked).double()
                x = x.double()
                if has_bias:
                    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)
                gram = x.T @ x if gram is None else gram + x.T @ x
                cross = x.T @ y if cross is None else cross + x.T @ y
    finally:
        for hook in hooks:
            hook.remove()
    n = gram.shape[0] - int(has_bias)
    scale = float(torch.diagonal(gram)[:n].mean()) if n else 0.0
    gram[:n, :n] += torch.eye(n, dtype=gram.dtype, device=gram.device) * ridge * max(scale, 1e-12)
    solution = torch.linalg.solve(gram, cross)  # (inputs [+1], outputs)
    if not bool(torch.isfinite(solution).all()):
        raise NonFiniteError(f"reconstruction of {path} produced non-finite weights")
    weight = solution[:n].T
    with torch.no_grad():
        index = kept.to(s_mod.weight.device)
        if isinstance(s_mod, nn.Linear):
            s_mod.weight[:, index] = weight.to(s_mod.weight.dtype)
        else:
            out, k = s_mod.weight.shape[0], len(kept)
            s_mod.weight[:, index] = weight.reshape(out, k, *s_mod.kernel_size).to(s_mod.weight.dtype)
        if has_bias:
            s_mod.bias.copy_(solution[n].to(s_mod.bias.dtype))


def reconstruct(student: nn.Module, teacher: nn.Module, keep: dict[str, dict[str, torch.Tensor]], batches: list[Any],
                run: Callable[[nn.Module, Any], Any], *, ridge: float = 1e-3, progress: bool = True) -> list[str]:
    """Re-fit, in forward order, every Linear/Conv2d of ``student`` whose inputs lost channels.

    Args:
        student: the pruned (or masked) model, changed in place.
        teacher: the model before pruning.
        keep: module path -> axis -> kept positions (the ``"in"`` axes are used).
        batches: calibration batches; ``run(model, batch)`` runs a forward pass on one.

    Returns:
        The paths of the re-fitted layers.
    """
    order = [name for name, _ in student.named_modules()]
    targets = [p for p in order if p in keep and "in" in keep[p] and _reconstructable(student.get_submodule(p))]
    for path in tqdm(targets, desc="reconstructing", disable=not progress, leave=False):
        refit_layer(student, teacher, path, keep[path]["in"], batches, run, ridge)
    return targets
