"""Retrain-free recovery: re-fit the layers that read pruned neurons (ThiNet / FLAP style).

For every layer that lost input channels, least squares finds the weights and bias on the kept
inputs that best reproduce what the layer computed before pruning:
``min ||X_kept W^T + b - Y_before||^2 + ridge``, where ``X_kept`` are the layer's inputs in the
pruned network (earlier re-fits included) and ``Y_before`` its outputs in the unpruned network.
Sums ``X^T X`` and ``X^T Y`` stream over calibration batches in float64, so memory does not grow
with the data; the normal equations are solved through a Cholesky factor. Linear layers
(``nn.Linear`` and GPT-2's ``(in, out)``-stored ``Conv1D``) and ordinary Conv2d layers are
re-fitted; other layers are left as they are.

Example:
    >>> import numpy as np, torch, torch.nn as nn
    >>> teacher = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    >>> student = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    >>> _ = student.load_state_dict(teacher.state_dict())
    >>> keep = {"2": {"in": np.array([0, 1, 2, 3, 4, 5])}}
    >>> reconstruct(student, teacher, keep, [torch.randn(32, 4)], lambda m, b: m(b), progress=False)
    ['2']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from neuroprune.core.errors import NonFiniteError, PlanError
from neuroprune.torch import distributed
from neuroprune.torch.owners import owner_of, solve_on_owner
from neuroprune.torch.weights import reads_like_linear

MAX_ROWS_PER_BATCH = 8192


class _Captured(Exception):
    """Stops a forward pass once the re-fitted layer's input or output has been captured."""


def _run_until_captured(run: Callable[[nn.Module, Any], Any], model: nn.Module, batch: Any) -> None:
    try:
        run(model, batch)
    except _Captured:
        pass


def _capture_input(store: dict[str, torch.Tensor]):
    def hook(module, args):
        store["x"] = args[0].detach()
        raise _Captured

    return hook


def _capture_output(store: dict[str, torch.Tensor], key: str = "y", stop: bool = True):
    def hook(module, args, output):
        store[key] = output.detach()
        if stop:
            raise _Captured

    return hook


def _capture_sum(store: dict[str, torch.Tensor], key: str):
    def hook(module, args):
        store[key] = args[0].detach()
        raise _Captured

    return hook


def _reconstructable(module: nn.Module) -> bool:
    if reads_like_linear(module):
        return True
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"


def _row_mask(module: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """Indices of the Linear input rows at real tokens, where a (batch, tokens) mask fits ``x``."""
    if mask is None or not reads_like_linear(module) or x.dim() != 3 or tuple(x.shape[:2]) != tuple(mask.shape):
        return None
    return torch.nonzero(mask.reshape(-1).to(x.device) != 0).flatten()


def _features(module: nn.Module, x: torch.Tensor, kept: torch.Tensor, generator: torch.Generator,
              real: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows of kept inputs (Linear: features; Conv2d: unfolded patches), and rows picked.

    ``real`` (optional) lists the rows that may be used at all (e.g. non-padding tokens).
    """
    x = x.index_select(-1 if reads_like_linear(module) else 1, kept.to(x.device))
    if reads_like_linear(module):
        rows = x.reshape(-1, x.shape[-1])
    else:
        patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    picked = real
    count = rows.shape[0] if picked is None else len(picked)
    if count > MAX_ROWS_PER_BATCH:
        choice = torch.randperm(count, generator=generator)[:MAX_ROWS_PER_BATCH].to(rows.device)
        picked = choice if picked is None else picked[choice]
    if picked is not None:
        rows = rows.index_select(0, picked)
    return rows, picked


def _targets(module: nn.Module, y: torch.Tensor, picked: torch.Tensor | None) -> torch.Tensor:
    rows = y.reshape(-1, y.shape[-1]) if reads_like_linear(module) else y.movedim(1, -1).reshape(-1, y.shape[1])
    return rows if picked is None else rows.index_select(0, picked)


def _hooks(student: nn.Module, teacher: nn.Module, path: str, residual_sum: str | None, captured: dict):
    """Hooks that capture what the fit needs and stop each forward pass as soon as they have it."""
    s_mod, t_mod = student.get_submodule(path), teacher.get_submodule(path)
    if residual_sum is None:
        return [s_mod.register_forward_pre_hook(_capture_input(captured)),
                t_mod.register_forward_hook(_capture_output(captured))]
    x_hook = s_mod.register_forward_pre_hook(lambda m, args: captured.__setitem__("x", args[0].detach()))
    return [x_hook, s_mod.register_forward_hook(_capture_output(captured, "y_student", stop=False)),
            student.get_submodule(residual_sum).register_forward_pre_hook(_capture_sum(captured, "sum_student")),
            teacher.get_submodule(residual_sum).register_forward_pre_hook(_capture_sum(captured, "sum_teacher"))]


def _target(captured: dict[str, torch.Tensor], path: str, residual_sum: str | None) -> torch.Tensor:
    if residual_sum is None:
        return captured["y"]
    if captured["sum_teacher"].shape != captured["y_student"].shape:
        raise PlanError(f"reconstruction of {path}: {residual_sum} reads a tensor shaped "
                        f"{tuple(captured['sum_teacher'].shape)}, the layer writes {tuple(captured['y_student'].shape)}; "
                        "it is not the residual sum after the layer")
    # what the teacher feeds the sum point, minus the student's residual (its sum minus this layer's output)
    return captured["sum_teacher"] - (captured["sum_student"] - captured["y_student"])


def refit_layer(student: nn.Module, teacher: nn.Module, path: str, kept: Any, batches: list[Any],
                run: Callable[[nn.Module, Any], Any], ridge: float = 1e-3,
                token_mask: Callable[[Any], torch.Tensor | None] | None = None,
                residual_sum: str | None = None, *, owner: int = 0) -> None:
    """Least-squares re-fit of layer ``path`` of ``student`` on its ``kept`` input channels.

    With ``token_mask``, Linear inputs shaped (batch, tokens, features) only contribute the rows
    of real tokens (the mask's non-zero entries), so padding does not shape the fit.

    ``residual_sum`` names the module whose first input is this layer's output plus a residual
    stream (in a transformer block, the norm after the attention output or FFN down projection).
    The target is then what the *teacher* feeds that module minus the *student's* residual, so the
    layer also absorbs the error that earlier pruned layers left in the residual stream, instead of
    reproducing its own old output on top of it.

    Under torchrun each rank sums its share of the batches and the rank ``owner`` solves
    (:func:`~neuroprune.torch.owners.solve_on_owner`); every rank gets the same new weights.
    """
    s_mod = student.get_submodule(path)
    kept = torch.as_tensor(kept, dtype=torch.long)
    captured: dict[str, torch.Tensor] = {}
    # the forward passes stop where the fit has what it needs: what comes later does not matter
    hooks = _hooks(student, teacher, path, residual_sum, captured)
    gram = cross = None
    has_bias = s_mod.bias is not None
    try:
        with torch.no_grad():
            # under torchrun each rank sums its share of whole batches; a batch's row sample is
            # seeded by its index, so the sums do not depend on the number of ranks
            for index, batch in distributed.shard(list(enumerate(batches))):
                generator = torch.Generator().manual_seed(index)
                _run_until_captured(run, teacher, batch)
                _run_until_captured(run, student, batch)
                real = _row_mask(s_mod, captured["x"], token_mask(batch) if token_mask is not None else None)
                x, picked = _features(s_mod, captured["x"], kept, generator, real)
                y = _targets(s_mod, _target(captured, path, residual_sum), picked).double()
                x = x.double()
                if has_bias:
                    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)
                gram = x.T @ x if gram is None else gram + x.T @ x
                cross = x.T @ y if cross is None else cross + x.T @ y
    finally:
        for hook in hooks:
            hook.remove()
    size, outputs = _fit_shape(s_mod, len(kept))
    n = size - int(has_bias)
    if gram is None:  # this rank had no batch: it adds zeros
        gram = torch.zeros(size, size, dtype=torch.float64, device=s_mod.weight.device)
        cross = torch.zeros(size, outputs, dtype=torch.float64, device=s_mod.weight.device)

    def solve(sums: torch.Tensor) -> torch.Tensor:
        gram, cross = sums[:, :size].clone(), sums[:, size:]
        scale = float(torch.diagonal(gram)[:n].mean()) if n else 0.0
        gram[:n, :n] += torch.eye(n, dtype=gram.dtype, device=gram.device) * ridge * max(scale, 1e-12)
        solution = _solve_normal_equations(gram, cross)  # (inputs [+1], outputs)
        if not bool(torch.isfinite(solution).all()):
            raise NonFiniteError(f"reconstruction of {path} produced non-finite weights")
        return solution

    # the sums go to the layer's owner rank, which solves; every rank gets the new weights
    solution = solve_on_owner(owner, torch.cat([gram, cross], dim=1), solve, (size, outputs))
    weight = solution[:n].T
    with torch.no_grad():
        index = kept.to(s_mod.weight.device)
        if isinstance(s_mod, nn.Linear):
            s_mod.weight[:, index] = weight.to(s_mod.weight.dtype)
        elif reads_like_linear(s_mod):  # Conv1D: weight stored (in, out)
            s_mod.weight[index, :] = weight.T.to(s_mod.weight.dtype)
        else:
            out, k = s_mod.weight.shape[0], len(kept)
            s_mod.weight[:, index] = weight.reshape(out, k, *s_mod.kernel_size).to(s_mod.weight.dtype)
        if has_bias:
            s_mod.bias.copy_(solution[n].to(s_mod.bias.dtype))


def _fit_shape(module: nn.Module, kept: int) -> tuple[int, int]:
    """(rows of the normal equations: features [+ bias], outputs) of re-fitting ``module`` on ``kept`` inputs."""
    if isinstance(module, nn.Linear):
        features, outputs = kept, module.weight.shape[0]
    elif reads_like_linear(module):  # Conv1D: (in, out)
        features, outputs = kept, module.weight.shape[1]
    else:
        features, outputs = kept * math.prod(module.kernel_size), module.weight.shape[0]
    return features + int(module.bias is not None), outputs


def _solve_normal_equations(gram: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """``gram^-1 cross`` for a symmetric positive-definite ``gram``, through its Cholesky factor
    (an LU solve where the factorisation fails, e.g. an input that is constant over the data)."""
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        return torch.linalg.solve(gram, cross)
    return torch.cholesky_solve(cross, factor)


def reconstruct(student: nn.Module, teacher: nn.Module, keep: Mapping[str, Mapping[str, Any]], batches: list[Any],
                run: Callable[[nn.Module, Any], Any], *, ridge: float = 1e-3, progress: bool = True,
                token_mask: Callable[[Any], torch.Tensor | None] | None = None,
                residual_sums: dict[str, str] | None = None) -> list[str]:
    """Re-fit, in forward order, every Linear/Conv2d of ``student`` whose inputs lost channels.

    Args:
        student: the pruned (or masked) model, changed in place.
        teacher: the model before pruning.
        keep: module path -> axis -> kept positions (numpy arrays, lists or tensors; the ``"in"``
            axes are used).
        batches: calibration batches; ``run(model, batch)`` runs a forward pass on one.
        token_mask: ``token_mask(batch)`` gives a (batch, tokens) mask of real tokens; padding
            rows are then left out of the fit (see :func:`refit_layer`).
        residual_sums: layer path -> the module that adds its output to a residual stream; those
            layers are fitted to the teacher's residual sum (see :func:`refit_layer`). Model
            adapters know them (e.g. ``HFAdapter.residual_sums``).

    Returns:
        The paths of the re-fitted layers.
    """
    order = [name for name, _ in student.named_modules()]
    targets = [p for p in order if p in keep and "in" in keep[p] and _reconstructable(student.get_submodule(p))]
    bar = tqdm(targets, desc="reconstructing", disable=not progress or not distributed.is_writer(), leave=False)
    for number, path in enumerate(bar):
        refit_layer(student, teacher, path, keep[path]["in"], batches, run, ridge, token_mask,
                    (residual_sums or {}).get(path), owner=owner_of(number))
    return targets
