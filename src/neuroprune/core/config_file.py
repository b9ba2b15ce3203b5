"""Pruning settings from a TOML file, checked up front with every problem reported at once.

Example file::

    [prune]
    criterion = "taylor"
    ratio = 0.5
    steps = 3

    [[layer]]            # per-layer-type rule
    type = "Conv2d"
    min_width = 8

    [[layer]]            # per-name rule (later rules override earlier ones)
    pattern = "layer4.*"
    ratio = 0.3

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "prune.toml"
    >>> _ = path.write_text('[prune]\\nratio = 0.25\\n[[layer]]\\npattern = "fc1"\\nignore = true\\n')
    >>> config = load_config_file(path)
    >>> (config.ratio, config.layers[0].ignore)
    (0.25, True)
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from neuroprune.core.config import PruneConfig
from neuroprune.core.errors import ConfigError
from neuroprune.core.policy import LayerPolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_PRUNE_KEYS = {f.name for f in dataclasses.fields(PruneConfig)} - {"layers"}
_LAYER_KEYS = {"pattern": "pattern", "type": "layer_type", "ratio": "ratio", "criterion": "criterion",
               "min_width": "min_width", "ignore": "ignore"}


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> list[str]:
    unknown = sorted(set(table) - allowed)
    return [f"{where}: unknown key {k!r}; allowed: {', '.join(sorted(allowed))}" for k in unknown]


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed TOML of a settings file; a missing file, a folder, bytes that are not UTF-8 or
    invalid TOML are a :class:`~neuroprune.core.errors.ConfigError` naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as error:
        raise ConfigError([f"config file {str(path)!r} does not exist"]) from error
    except IsADirectoryError as error:
        raise ConfigError([f"config file {str(path)!r} is a folder; give a .toml file"]) from error
    except PermissionError as error:
        raise ConfigError([f"config file {str(path)!r} cannot be read: permission denied"]) from error
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not a UTF-8 text file (byte {error.start} is {error.object[error.start]:#04x}); "
                           "TOML files must be UTF-8"]) from error
    except OSError as error:
        raise ConfigError([f"config file {str(path)!r} cannot be read: {error.strerror or error}"]) from error
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from error


def load_config_file(path: str | os.PathLike, **overrides: Any) -> PruneConfig:
    """Read ``[prune]`` settings and ``[[layer]]`` policies; ``overrides`` win over the file.

    Every problem (unknown keys, wrong types, a ``[layer]`` table written for ``[[layer]]``,
    values out of range) is reported in one :class:`~neuroprune.core.errors.ConfigError`.
    """
    path = Path(path)
    data = read_config_file(path)
    problems = _check_keys(data, {"prune", "layer"}, str(path))
    prune = data.get("prune", {})
    if not isinstance(prune, dict):
        problems.append(f"{path}: 'prune' must be a table ([prune]), got {prune!r}")
        prune = {}
    problems += _check_keys(prune, _PRUNE_KEYS, f"{path} [prune]")
    layers = data.get("layer", [])
    if isinstance(layers, dict):
        problems.append(f"{path}: [layer] is a single table; write each layer policy as [[layer]] (an array of "
                        "tables, double brackets)")
        layers = []
    elif not isinstance(layers, list) or not all(isinstance(table, dict) for table in layers):
        problems.append(f"{path}: 'layer' must be [[layer]] tables, got {layers!r}")
        layers = []
    policies = []
    for i, table in enumerate(layers):
        where = f"{path} [[layer]] #{i + 1}"
        problems += _check_keys(table, set(_LAYER_KEYS), where)
        policy = LayerPolicy(**{_LAYER_KEYS[k]: v for k, v in table.items() if k in _LAYER_KEYS})
        problems += [f"{where}: {p}" for p in policy.problems()]
        policies.append(policy)
    settings = {k: v for k, v in prune.items() if k in _PRUNE_KEYS}
    if isinstance(settings.get("ignore"), list):
        settings["ignore"] = tuple(settings["ignore"])
    elif "ignore" in settings and not isinstance(settings["ignore"], str):
        problems.append(f"{path} [prune]: ignore must be a list of module paths, e.g. ignore = [\"fc1\"], "
                        f"got {settings.pop('ignore')!r}")
    settings.update(overrides)
    settings["layers"] = tuple(policies)
    if "threshold" in settings and "ratio" not in settings:
        settings["ratio"] = None
    config = None
    try:
        config = PruneConfig(**settings)
    except ConfigError as error:
        problems += [p for p in error.problems if not any(p in q for q in problems)]
    except TypeError as error:  # an override that is no PruneConfig field
        problems.append(f"{path}: {error}; allowed: {', '.join(sorted(_PRUNE_KEYS))}")
    if problems:
        raise ConfigError(problems)
    return config
