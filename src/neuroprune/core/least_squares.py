"""Streaming ridge least squares on numpy: the normal equations of ``min ||X W + b - Y||^2``.

Sums ``X^T X`` and ``X^T Y`` accumulate in float64 over batches (memory does not grow with the data);
:meth:`NormalEquations.solve` adds a ridge scaled by the mean diagonal of the Gram matrix (the bias
column is not regularised) and solves through a Cholesky factor, with an LU solve where the
factorisation fails (an input that is constant over the data). This is the maths of the torch
reconstruction (:mod:`neuroprune.torch.recover.reconstruct`), torch-free, for backends that work on
numpy (Keras).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 3)); w = np.array([[1.0], [-2.0], [0.5]])
    >>> equations = NormalEquations(bias=True)
    >>> equations.add(x[:100], x[:100] @ w + 3.0); equations.add(x[100:], x[100:] @ w + 3.0)
    >>> weight, bias = equations.solve(ridge=0.0)
    >>> np.allclose(weight, w), np.allclose(bias, [3.0])
    (True, True)
"""

from __future__ import annotations

import numpy as np

from neuroprune.core.errors import DataError, NonFiniteError


def solve_normal_equations(gram: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """``gram^-1 cross`` for a symmetric positive-definite ``gram`` (Cholesky; LU where that fails)."""
    try:
        factor = np.linalg.cholesky(gram)
    except np.linalg.LinAlgError:
        return np.linalg.solve(gram, cross)
    return np.linalg.solve(factor.T, np.linalg.solve(factor, cross))


class NormalEquations:
    """``X^T X`` and ``X^T Y`` summed in float64 over ``add`` calls; ``bias`` appends a column of ones."""

    def __init__(self, *, bias: bool = True):
        self.bias = bias
        self.gram: np.ndarray | None = None
        self.cross: np.ndarray | None = None
        self.rows = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Rows of inputs ``x`` (n, inputs) and targets ``y`` (n, outputs)."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if self.bias:
            x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
        gram, cross = x.T @ x, x.T @ y
        self.gram = gram if self.gram is None else self.gram + gram
        self.cross = cross if self.cross is None else self.cross + cross
        self.rows += x.shape[0]

    def solve(self, ridge: float = 1e-3, what: str = "the least-squares fit") -> tuple[np.ndarray, np.ndarray | None]:
        """``(weight (inputs, outputs), bias (outputs,) or None)``; the ridge is ``ridge * mean(diag)``."""
        if self.gram is None:
            raise DataError(f"{what}: no calibration rows were added")
        gram = self.gram.copy()
        n = gram.shape[0] - int(self.bias)
        scale = float(np.diagonal(gram)[:n].mean()) if n else 0.0
        gram[:n, :n] += np.eye(n) * ridge * max(scale, 1e-12)
        solution = solve_normal_equations(gram, self.cross)
        if not np.isfinite(solution).all():
            raise NonFiniteError(f"{what} produced non-finite weights")
        return solution[:n], (solution[n] if self.bias else None)


__all__ = ["NormalEquations", "solve_normal_equations"]
