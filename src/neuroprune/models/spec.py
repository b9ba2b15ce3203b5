"""Model specs: the strings that name a model on the command line and in :mod:`neuroprune.torch.export`.

* ``zoo:NAME`` - a built-in model of :mod:`neuroprune.models.zoo`, sized for the data;
* ``hf:DIR_OR_NAME`` - a Hugging Face transformers model (loaded by :mod:`neuroprune.hf.adapter`);
* ``path/to/file.py:function`` - a file of the user's whose ``function()`` returns the model.

Both the CLI and the exporter resolve specs here, so neither imports the other.

Example:
    >>> parse_model_spec("zoo:mlp")
    ('zoo', 'mlp')
    >>> parse_model_spec("nets/my_net.py:build")
    ('nets/my_net.py', 'build')
"""

from __future__ import annotations

import importlib.util
import inspect
import traceback
from pathlib import Path
from typing import Any

import torch.nn as nn

from neuroprune.core.errors import ConfigError, DataError, ModelFileError, UnknownNameError
from neuroprune.models.zoo import ZOO, build_model, zoo_entry

#: Most classes a zoo classifier is built for (its last layer has one output per class).
MAX_ZOO_CLASSES = 100_000


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``zoo:NAME`` -> ("zoo", NAME); ``hf:DIR_OR_NAME`` -> ("hf", DIR_OR_NAME); ``keras:PATH.keras``
    -> ("keras", PATH.keras); ``path/file.py:function`` -> (path, function).

    Raises:
        ConfigError: the spec is none of these, naming the forms allowed.
    """
    if spec.startswith("zoo:"):
        return "zoo", spec[4:]
    if spec.startswith("hf:") and spec[3:]:
        return "hf", spec[3:]
    if spec.startswith("keras:") and spec[6:]:  # a Keras 3 model file (neuroprune.cli.keras_model)
        return "keras", spec[6:]
    path, sep, function = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not function:
        raise ConfigError([f"model spec {spec!r} must be zoo:NAME (one of {', '.join(ZOO)}), hf:DIR_OR_NAME "
                           "(a Hugging Face transformers model), keras:PATH.keras or path/to/file.py:build_fn"])
    return path, function


def refuse_hf(spec: str) -> None:
    """Refuse an ``hf:`` spec where only classifiers (``zoo:`` or a model file) are taken."""
    if parse_model_spec(spec)[0] == "hf":
        raise ConfigError([f"{spec}: Hugging Face models are pruned with `neuroprune prune --model hf:DIR --data "
                           "text:FILE`; this command takes zoo:NAME or path/to/file.py:build_fn"])


def model_layout(spec: str, layout: str | None, image_size: int | None) -> tuple[str, int]:
    """The data layout and image size a model wants (zoo defaults unless given; model files: flat, 8).

    Example:
        >>> model_layout("zoo:lenet5", None, None)
        ('image', 32)
    """
    refuse_hf(spec)
    kind, name = parse_model_spec(spec)
    if kind == "zoo":
        entry = zoo_entry(name)
        return layout or entry.layout, image_size or entry.image_size
    return layout or "flat", image_size or 8


def build_from_spec(spec: str, data: Any) -> nn.Module:
    """Build the model a spec names, sized for ``data`` (a :class:`~neuroprune.data.DataSplits`) where it is
    a zoo model."""
    refuse_hf(spec)
    kind, name = parse_model_spec(spec)
    if kind == "zoo":
        entry = zoo_entry(name)
        if data.num_classes > MAX_ZOO_CLASSES:
            raise DataError(f"labels of {data.name} reach {data.num_classes - 1}: a zoo classifier would need "
                            f"{data.num_classes} outputs, more than the {MAX_ZOO_CLASSES} allowed; number your "
                            "classes 0..K-1")
        kwargs: dict[str, Any] = {"num_classes": data.num_classes}
        if entry.layout == "image":
            kwargs["in_channels"] = data.input_shape[0]
        elif entry.layout == "flat":
            kwargs["in_features"] = data.input_shape[0]
        return build_model(name, **kwargs)
    return build_from_file(kind, name)


def _user_line(error: BaseException, path: Path) -> str:
    """``file.py:LINE`` of the deepest frame of ``error`` in the user's file (the file alone if none)."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f"{path}:{error.lineno}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


def build_from_file(file: str, function: str) -> nn.Module:
    """Import ``file`` and call ``function()``; every failure is a :class:`ModelFileError` naming the file and line.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "net.py"
        >>> _ = path.write_text("import torch.nn as nn\\ndef build(width):\\n    return nn.Linear(4, width)\\n")
        >>> try:
        ...     build_from_file(str(path), "build")
        ... except ModelFileError as error:
        ...     print(str(error).split(": ", 1)[1])
        build(width) needs arguments; the builder must take none: def build(): return MyNet(...)
    """
    path = Path(file)
    if not path.is_file():
        raise ConfigError([f"model file {file!r} does not exist"])
    module_spec = importlib.util.spec_from_file_location(f"neuroprune_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ModelFileError(f"{_user_line(error, path)}: syntax error in the model file: {error.msg}") from error
    except ImportError as error:
        raise ModelFileError(f"{_user_line(error, path)}: the model file imports something that cannot be "
                             f"imported: {error}") from error
    except Exception as error:  # any code at import time of the user's file
        raise ModelFileError(f"{_user_line(error, path)}: importing the model file raised "
                             f"{type(error).__name__}: {error}") from error
    builder = getattr(module, function, None)
    if not callable(builder):
        functions = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise UnknownNameError(f"function in {file}", function, functions)
    try:
        inspect.signature(builder).bind()
    except TypeError:
        raise ModelFileError(f"{path}: {function}{inspect.signature(builder)} needs arguments; the builder must take "
                             f"none: def {function}(): return MyNet(...)") from None
    except ValueError:  # no signature (a builtin): let the call tell
        pass
    try:
        model = builder()
    except Exception as error:
        raise ModelFileError(f"{_user_line(error, path)}: {function}() raised {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise ConfigError([f"{file}:{function} returned {type(model).__name__}, not a torch.nn.Module"])
    return model
