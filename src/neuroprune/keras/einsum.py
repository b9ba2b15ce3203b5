"""``EinsumDense`` layers that are plain projections, followed like ``Dense``.

A plain projection contracts the input's last dimension with the first of a 2-D kernel and puts
the kernel's second dimension last in the output, every other dimension passing through
(``"...a,ab->...b"``, ``"abc,cd->abd"``), with a bias over that last dimension or none. Its width
is ``output_shape[-1]``. Any other equation mixes or moves channels: its channels are frozen,
with the equation in the reason.

Example:
    >>> projection_problem({"equation": "abc,cd->abd", "bias_axes": "d"}) is None
    True
    >>> projection_problem({"equation": "abc,cde->abde", "bias_axes": None})
    "equation 'abc,cde->abde' is not a plain projection (like '...a,ab->...b')"
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuroprune.keras.grouping import ChannelIds


def projection_problem(config: dict[str, Any]) -> str | None:
    """Why an ``EinsumDense`` config is not a plain projection (``None`` when it is)."""
    equation = str(config.get("equation", "")).replace(" ", "")
    plain = f"equation {equation!r} is not a plain projection (like '...a,ab->...b')"
    try:
        inputs, output = equation.split("->")
        source, kernel = inputs.split(",")
    except ValueError:
        return plain
    if len(kernel) != 2 or not source or not output:
        return plain
    contracted, produced = kernel
    if source[-1] != contracted or output[-1] != produced or source[:-1] != output[:-1] \
            or contracted in output or produced in source or contracted == produced:
        return plain
    bias = config.get("bias_axes") or ""
    if bias not in ("", produced):
        return f"bias_axes {bias!r} of equation {equation!r} is not over the output features only"
    return None


def propagate_einsum(ids: ChannelIds, call: Any) -> list[np.ndarray | None]:
    """Flows through an ``EinsumDense``: a projection like ``Dense``, or frozen with the reason."""
    from neuroprune.keras.flow import MIXING_ACTIVATIONS, _activation_name, _freeze_inputs

    problem = projection_problem(call.config)
    shape = call.config.get("output_shape")
    width = shape if isinstance(shape, int) else (list(shape)[-1] if shape else None)
    if problem is None and not width:
        problem = "its output width (output_shape[-1]) is not known"
    if problem is not None:
        return _freeze_inputs(ids, call, f"EinsumDense {problem}; its channels are kept")
    if call.inputs[0] is not None:
        ids.bind_axis(call.path, "in", call.inputs[0])
    out = ids.producer_axis(call.path, "out", int(width))
    if _activation_name(call.config) in MIXING_ACTIVATIONS:
        ids.freeze(out, f"{call.path}: its {_activation_name(call.config)} activation mixes the units")
    return [out]
