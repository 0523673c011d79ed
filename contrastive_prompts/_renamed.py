"""Old names that still work for one release, with a warning the first time each is used."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

_warned: set[str] = set()


def renamed_attribute(
    module: str, name: str, renames: Mapping[str, str], namespace: Mapping[str, Any]
) -> Any:
    """Resolve ``module.name`` through ``renames`` (old name -> new name), warning once.

    Meant for a module's ``__getattr__``: an unknown name raises AttributeError as usual.
    """
    if name not in renames:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = renames[name]
    key = f"{module}.{name}"
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"{key} is renamed {module}.{new}; the old name goes in the next release",
            FutureWarning,
            stacklevel=3,
        )
    return namespace[new]
