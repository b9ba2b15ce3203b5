"""Float32 master copies for training float16/bfloat16 parameters without changing their dtype.

The optimizer steps on float32 copies of the low-precision parameters (float32 and float64
parameters are stepped directly); after every step the copies are written back in each
parameter's own dtype, so a mixed model (fp16 weights, fp32 LayerNorms) stays exactly as mixed.

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Linear(4, 2).to(torch.bfloat16)
    >>> masters = MasterWeights(list(model.parameters()))
    >>> optimizer = torch.optim.SGD(masters.optimized, lr=0.1)
    >>> model(torch.randn(3, 4, dtype=torch.bfloat16)).float().pow(2).mean().backward()
    >>> masters.step(optimizer)
    >>> model.weight.dtype, masters.optimized[0].dtype
    (torch.bfloat16, torch.float32)
"""

from __future__ import annotations

import torch

LOW_PRECISION = (torch.float16, torch.bfloat16)


class MasterWeights:
    """Pairs each low-precision parameter with a float32 copy the optimizer updates."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params
        self.masters = {id(p): p.detach().float().clone() for p in params if p.dtype in LOW_PRECISION}
        #: what to hand the optimizer: the float32 copy of a low-precision parameter, else the parameter
        self.optimized = [self.masters.get(id(p), p) for p in params]

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Move the gradients to the copies (float32), step, write the copies back, clear the gradients."""
        for p in self.params:
            master = self.masters.get(id(p))
            if master is not None:
                master.grad = None if p.grad is None else p.grad.detach().float()
        optimizer.step()
        with torch.no_grad():
            for p in self.params:
                master = self.masters.get(id(p))
                if master is not None:
                    p.copy_(master)
        self.zero_grad(optimizer)

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        for p in self.params:
            p.grad = None
