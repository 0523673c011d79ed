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
    warn_once(f"{module}.{name} is renamed {module}.{new}; the old name goes in the next release")
    return namespace[new]


def warn_once(message: str, *, stacklevel: int = 4) -> None:
    """A FutureWarning with ``message``, the first time this message comes in this process."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, FutureWarning, stacklevel=stacklevel)
