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

from .config import PruneConfig
from .errors import ConfigError
from .policy import LayerPolicy

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


def load_config_file(path: str | os.PathLike, **overrides: Any) -> PruneConfig:
    """Read ``[prune]`` settings and ``[[layer]]`` policies; ``overrides`` win over the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError([f"config file {str(path)!r} does not exist"]) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from error
    problems = _check_keys(data, {"prune", "layer"}, str(path))
    prune = data.get("prune", {})
    problems += _check_keys(prune, _PRUNE_KEYS, f"{path} [prune]")
    layers = data.get("layer", [])
    policies = []
    for i, table in enumerate(layers if isinstance(layers, list) else []):
        where = f"{path} [[layer]] #{i + 1}"
        problems += _check_keys(table, set(_LAYER_KEYS), where)
        try:
            policy = LayerPolicy(**{_LAYER_KEYS[k]: v for k, v in table.items() if k in _LAYER_KEYS})
        except TypeError as error:
            problems.append(f"{where}: {error}")
            continue
        problems += [f"{where}: {p}" for p in policy.problems()]
        policies.append(policy)
    settings = {k: v for k, v in prune.items() if k in _PRUNE_KEYS}
    if "ignore" in settings:
        settings["ignore"] = tuple(settings["ignore"])
    settings.update(overrides)
    settings["layers"] = tuple(policies)
    if "threshold" in settings and "ratio" not in settings:
        settings["ratio"] = None
    config = None
    try:
        config = PruneConfig(**settings)
    except ConfigError as error:
        problems += [p for p in error.problems if not any(p in q for q in problems)]
    except TypeError as error:
        problems.append(f"{path}: {error}")
    if problems:
        raise ConfigError(problems)
    return config
