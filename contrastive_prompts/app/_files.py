"""Writing files whole or not at all, under temporary names that cannot be a user's file.

Every file the library writes (checkpoints, exports, restored images, JSON tables) goes through
[writing][contrastive_prompts.app._files.writing]: the content is written to a new file that the
operating system creates for this write alone (an exclusive create under a random name, so an
existing file of any name is never opened, let alone replaced), then renamed over the target. Any
exception, ``KeyboardInterrupt`` included, removes the temporary file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["TEMPORARY_SUFFIX", "json_text", "writing"]

TEMPORARY_SUFFIX = ".partial"
"""Marks the hidden temporary files: ``.<target name>.<random>.partial<target suffix>`` (the
target's suffix last, for writers that choose the format by it)."""


@contextlib.contextmanager
def writing(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary path beside ``target``; renamed to ``target`` if the block succeeds.

    The temporary file is created exclusively in ``target``'s folder (which must exist), so it
    is never a file that was there before. On success it is moved over ``target`` in one
    rename, with the permissions a file created in its place would have (the umask's); on any
    exception, ``KeyboardInterrupt`` included, it is removed.

    Args:
        target: the file to write.

    Yields:
        The temporary path to write the content to (it exists, empty).

    Examples:
        >>> import tempfile, os
        >>> target = Path(tempfile.mkdtemp()) / "table.json"
        >>> with writing(target) as temporary:
        ...     _ = temporary.write_text("{}")
        >>> target.read_text(), [p.name for p in target.parent.iterdir()]
        ('{}', ['table.json'])
    """
    target = Path(target)
    temporary = target.with_name(
        f".{target.name}.{secrets.token_hex(8)}{TEMPORARY_SUFFIX}{target.suffix}"
    )
    # an exclusive create: never a file that was there; the umask gives it a new file's mode
    os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf": JSON has no literal for them
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_text(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always writes valid JSON: a non-finite float becomes a string.

    Python's ``json`` writes ``NaN`` and ``Infinity``, which no JSON reader but Python's accepts;
    here they are written ``"nan"``, ``"inf"`` and ``"-inf"``.

    Examples:
        >>> json_text({"l1": float("nan"), "psnr": [float("inf"), 30.5]})
        '{"l1": "nan", "psnr": ["inf", 30.5]}'
    """
    return json.dumps(_finite(value), allow_nan=False, **kwargs)
