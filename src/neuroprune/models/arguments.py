"""Checks shared by the zoo's model builders.

Example:
    >>> require_positive(width=0)
    Traceback (most recent call last):
    ...
    neuroprune.core.errors.ConfigError: invalid configuration: width must be an integer >= 1, got 0
"""

from __future__ import annotations

from neuroprune.core.errors import ConfigError


def require_positive(**values: int) -> None:
    """Raise :class:`ConfigError` naming every value that is not an integer >= 1."""
    problems = [
        f"{name} must be an integer >= 1, got {value!r}"
        for name, value in values.items()
        if isinstance(value, bool) or not isinstance(value, int) or value < 1
    ]
    if problems:
        raise ConfigError(problems)
