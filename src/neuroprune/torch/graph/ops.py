"""Which flow rule serves which function or tensor method met in a traced forward.

The rules themselves are in :mod:`neuroprune.torch.graph.flow_rules` (and
:mod:`~neuroprune.torch.graph.attention_ops`); they are importable from here too. An operation
missing here is only a problem when prunable channels reach it; then discovery raises
:class:`~neuroprune.core.errors.UnsupportedModuleError`.

Example:
    >>> import operator
    >>> rule_for("call_function", operator.add).__name__
    'broadcast_rule'
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F

from neuroprune.core.errors import DuplicateNameError
from neuroprune.torch.graph.attention_ops import einsum_rule, matmul_rule, opaque_attention_rule, sdpa_rule
from neuroprune.torch.graph.flow_rules import (OpCall, Rule, across_dim_rule, broadcast_rule, cat_rule, first_rule,
                                               getitem_rule, grid_aware, new_tensor_rule, pad_rule, rearrange_rule,
                                               reduce_rule, returned_mask_rule, roll_rule, shape_rule, spatial_rule,
                                               split_rule, stack_rule, unbind_rule)

__all__ = ["FUNCTION_RULES", "METHOD_RULES", "NAMED_FUNCTION_RULES", "OpCall", "Rule", "across_dim_rule",
           "broadcast_rule", "cat_rule", "einsum_rule", "first_rule", "getitem_rule", "grid_aware", "matmul_rule",
           "new_tensor_rule", "opaque_attention_rule", "pad_rule", "rearrange_rule", "reduce_rule",
           "register_function_rule", "returned_mask_rule", "roll_rule", "rule_for", "sdpa_rule", "shape_rule",
           "spatial_rule", "split_rule", "stack_rule", "unbind_rule"]

_UNARY_FUNCTIONS = [
    F.relu, F.relu6, F.gelu, F.silu, F.elu, F.selu, F.celu, F.leaky_relu, F.hardswish, F.hardsigmoid,
    F.hardtanh, F.mish, F.softplus, F.softsign, F.logsigmoid, F.tanhshrink, F.dropout, F.dropout1d,
    F.dropout2d, F.dropout3d, F.alpha_dropout, torch.relu, torch.sigmoid, torch.tanh, torch.abs,
    torch.neg, torch.exp, torch.sqrt, torch.square, torch.clamp, torch.clip, torch.dropout,
    torch.nn.functional.sigmoid, torch.nn.functional.tanh, operator.neg, operator.pos, torch.erf,
]
_BROADCAST_FUNCTIONS = [
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
    operator.imul, operator.itruediv, operator.pow, torch.add, torch.sub, torch.mul, torch.div,
    torch.maximum, torch.minimum, torch.where, torch.pow,
]
_REARRANGE_FUNCTIONS = [
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
    torch.movedim, torch.swapaxes, torch.unflatten, torch.t, getattr, torch.tile,
]
_REDUCE_FUNCTIONS = [torch.mean, torch.sum, torch.amax, torch.amin, torch.max, torch.min, torch.std,
                     torch.var, torch.logsumexp, torch.prod]
_ACROSS_FUNCTIONS = [F.softmax, F.log_softmax, F.softmin, torch.softmax, torch.log_softmax, F.normalize]
_SPATIAL_FUNCTIONS = [
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate, F.lp_pool2d,
]

FUNCTION_RULES: dict[Any, Rule] = {}
for _fns, _rule in ((_UNARY_FUNCTIONS, first_rule), (_BROADCAST_FUNCTIONS, broadcast_rule),
                    (_REARRANGE_FUNCTIONS, rearrange_rule), (_REDUCE_FUNCTIONS, reduce_rule),
                    (_ACROSS_FUNCTIONS, across_dim_rule), (_SPATIAL_FUNCTIONS, spatial_rule)):
    for _fn in _fns:
        FUNCTION_RULES[_fn] = _rule
FUNCTION_RULES.update({
    torch.cat: cat_rule, torch.concat: cat_rule, torch.concatenate: cat_rule, torch.stack: stack_rule,
    operator.getitem: getitem_rule, torch.chunk: split_rule, torch.split: split_rule,
    torch.unbind: unbind_rule, F.pad: pad_rule, torch.numel: shape_rule,
    torch.matmul: matmul_rule, operator.matmul: matmul_rule, torch.bmm: matmul_rule,
    F.scaled_dot_product_attention: sdpa_rule, torch.einsum: einsum_rule, torch.roll: roll_rule,
})
for _fn in (torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like,
            torch.randn_like, torch.randint_like):
    FUNCTION_RULES[_fn] = new_tensor_rule


#: Rules for functions of optional libraries, by ``module.qualname`` (no import needed).
NAMED_FUNCTION_RULES: dict[str, Rule] = {
    "torchvision.ops.stochastic_depth.stochastic_depth": first_rule,  # per-sample: keeps channels
    "timm.layers.drop.drop_path": first_rule,
    "timm.layers.attention.maybe_add_mask": broadcast_rule,  # scores + mask, or scores
    "timm.layers.attention.resolve_self_attn_mask": returned_mask_rule,
    "torchvision.models.swin_transformer.shifted_window_attention": opaque_attention_rule,
}

METHOD_RULES: dict[str, Rule] = {}
for _names, _rule in (
    ("relu relu_ sigmoid tanh abs neg exp sqrt square clamp clip clamp_ contiguous clone detach float "
     "half bfloat16 double to type_as type cpu cuda requires_grad_ erf", first_rule),
    ("add sub mul div add_ sub_ mul_ div_ pow maximum minimum", broadcast_rule),
    ("view reshape flatten permute transpose squeeze unsqueeze movedim swapaxes unflatten t expand "
     "expand_as view_as reshape_as repeat tile", rearrange_rule),
    ("mean sum amax amin max min std var logsumexp prod", reduce_rule),
    ("softmax log_softmax", across_dim_rule),
    ("chunk split", split_rule),
    ("unbind", unbind_rule),
    ("size dim numel", shape_rule),
    ("roll", roll_rule),
    ("new_empty new_zeros new_ones new_full new_tensor", new_tensor_rule),
    ("matmul bmm __matmul__", matmul_rule),
):
    for _name in _names.split():
        METHOD_RULES[_name] = _rule


def rule_for(kind: str, target: Any) -> Rule | None:
    """The flow rule for a ``call_function`` target or a ``call_method`` name, if known."""
    if kind == "call_method":
        return METHOD_RULES.get(target)
    try:
        rule = FUNCTION_RULES.get(target)
    except TypeError:  # unhashable target
        return None
    if rule is None:
        rule = NAMED_FUNCTION_RULES.get(f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}")
    return rule


def register_function_rule(target: Any, rule: Rule, *, replace: bool = False) -> None:
    """Teach discovery how channels flow through ``target`` (a function, or a method name).

    ``rule(ctx, call)`` returns the output's flows; decorate it with :func:`grid_aware` if it
    takes grid flows. A function wrapped with ``torch.fx.wrap`` is met as itself, so this is
    how an untraceable helper gets a rule.

    Example:
        >>> import torch
        >>> register_function_rule(torch.cumsum, first_rule)  # doctest: +SKIP
    """
    table = METHOD_RULES if isinstance(target, str) else FUNCTION_RULES
    if target in table and not replace:
        raise DuplicateNameError("flow rule for", getattr(target, "__name__", str(target)))
    table[target] = rule
