"""Choosing a class by the name a recipe gives it: `"module:Class"` strings, imported only when chosen.

The tables live with what they list: `sources.SOURCES` and `backends.REGISTRY`. Importing a module only
when it is used keeps a heavy backend's library needed only by the recipes that ask for it.
"""

from __future__ import annotations

import importlib

from mfpo_data.errors import ConfigError


def target(choices: dict[str, str], key: str, name: str) -> tuple[str, str]:
    """`(module, attribute)` registered as `name`; a ConfigError naming recipe key `key` and the choices otherwise."""
    if name not in choices:
        raise ConfigError(f"'{key}' is '{name}', expected one of: {', '.join(sorted(choices))}")
    module_name, _, attr = choices[name].partition(":")
    return module_name, attr


def load(choices: dict[str, str], key: str, name: str) -> type:
    module_name, attr = target(choices, key, name)
    return getattr(importlib.import_module(module_name), attr)
