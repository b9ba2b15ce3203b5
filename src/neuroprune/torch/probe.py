"""Run a model once on a probe batch of the data, before any work, and say clearly what does not fit.

A raw ``RuntimeError: mat1 and mat2 shapes cannot be multiplied`` after minutes of training tells a
user little; :func:`probe_model` runs two training samples through the model first and turns a
failure into one sentence naming the data's sample shape and what the model's first layer expects.
It also checks the model's output against the labels: training or validation labels the model
cannot output are a :class:`~neuroprune.core.errors.DataMismatchError`, test labels it cannot output a
:class:`~neuroprune.core.errors.DataWarning` (they only count as wrong).

Example:
    >>> import torch.nn as nn
    >>> from neuroprune.data import load_digits
    >>> probe_model(nn.Sequential(nn.Linear(64, 10)), load_digits())
    10
    >>> try:
    ...     probe_model(nn.Sequential(nn.Linear(784, 10)), load_digits())
    ... except Exception as error:
    ...     print(error)
    the data does not fit the model: samples of digits have shape (64,) (flat: 64 features), but the model's first layer '0' (Linear) expects 784 input features (running the model on them raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x64 and 784x10))
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from neuroprune.data import DataSplits
from neuroprune.core.errors import DataMismatchError, DataWarning
from neuroprune.torch.modes import evaluation_mode

PROBE_SAMPLES = 2
"""Training samples the probe runs through the model."""


def describe_first_layer(model: nn.Module) -> str | None:
    """What the model's first layer with a fixed input size expects, as words (``None``: no such layer).

    Example:
        >>> describe_first_layer(nn.Sequential(nn.Conv2d(3, 8, 3)))
        "the model's first layer '0' (Conv2d) expects 3 input channels, i.e. samples of shape (3, H, W)"
    """
    for name, module in model.named_modules():
        kind = type(module).__name__
        where = f"the model's first layer {name!r} ({kind}) expects"
        if isinstance(module, nn.Linear):
            return f"{where} {module.in_features} input features"
        if isinstance(module, nn.Conv1d):
            return f"{where} {module.in_channels} input channels, i.e. samples of shape ({module.in_channels}, L)"
        if isinstance(module, nn.Conv2d):
            return f"{where} {module.in_channels} input channels, i.e. samples of shape ({module.in_channels}, H, W)"
        if isinstance(module, nn.Conv3d):
            return f"{where} {module.in_channels} input channels, i.e. samples of shape ({module.in_channels}, D, H, W)"
        if isinstance(module, nn.RNNBase):
            return f"{where} sequences of shape (T, {module.input_size}) (batch_first={module.batch_first})"
        if isinstance(module, nn.Embedding):
            return f"{where} integer token ids below {module.num_embeddings}"
        if isinstance(module, nn.MultiheadAttention):
            return f"{where} sequences of shape (T, {module.embed_dim})"
    return None


def _describe_samples(data: DataSplits) -> str:
    shape = data.input_shape
    if len(shape) == 1:
        layout = f"flat: {shape[0]} features"
    elif len(shape) == 2:
        layout = f"sequence: {shape[0]} steps of {shape[1]} features"
    else:
        layout = f"image: {shape[0]} channels of {'x'.join(str(s) for s in shape[1:])}"
    return f"samples of {data.name} have shape {shape} ({layout})"


def probe_model(model: nn.Module, data: DataSplits) -> int:
    """Run ``model`` on two training samples and check its outputs against the labels.

    The model runs in eval mode without gradients (every module's mode is restored), so its
    weights and statistics are untouched.

    Returns:
        The number of classes the model outputs (the last dimension of its output).

    Raises:
        DataMismatchError: The forward pass fails (the message names the data's sample shape and
            what the first layer expects, and quotes the first line of the original error), the
            output is not an (N, classes) tensor, or training/validation labels reach the number
            of outputs.
    """
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    x = data.x_train[:PROBE_SAMPLES].to(device=device, dtype=dtype)
    try:
        with evaluation_mode(model), torch.no_grad():
            output = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as error:
        expects = describe_first_layer(model) or "the model cannot take them"
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataMismatchError(f"the data does not fit the model: {_describe_samples(data)}, but {expects} "
                                f"(running the model on them raised {type(error).__name__}: {reason})") from error
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        got = f"a tensor of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
        raise DataMismatchError(f"the model returns {got} for a batch of {len(x)}; classification needs logits of "
                                f"shape ({len(x)}, classes)")
    outputs = int(output.shape[-1])
    _check_labels(data, outputs)
    return outputs


def _check_labels(data: DataSplits, outputs: int) -> None:
    seen = int(max(data.y_train.max(), data.y_val.max()))
    if seen >= outputs:
        raise DataMismatchError(f"labels of {data.name} go up to {seen}, but the model outputs {outputs} classes "
                                f"(labels 0..{outputs - 1}); relabel the data or give the model {seen + 1} outputs")
    beyond = int((data.y_test >= outputs).sum())
    if beyond:
        warnings.warn(DataWarning(f"{beyond} of {len(data.y_test)} test labels of {data.name} reach "
                                  f"{int(data.y_test.max())}, which the model cannot output ({outputs} classes); "
                                  "they count as wrong in every reported accuracy"), stacklevel=3)
