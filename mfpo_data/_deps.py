"""Optional dependencies: import them lazily, and say which pip extra brings them when they are missing."""

from __future__ import annotations

import importlib

from mfpo_data.errors import MissingExtraError


def require(*modules: str, extra: str, feature: str | None = None) -> None:
    """Raise `MissingExtraError` naming `pip install "mfpo[extra]"` unless every module imports."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        what = feature or f"the '{extra}' backends"
        raise MissingExtraError(
            f"{what} need{'s' if feature else ''} {', '.join(missing)}: pip install \"mfpo[{extra}]\""
        )
