"""Writing files whole or not at all, under temporary names that cannot be a user's file.

Every file the library writes (checkpoints, exports, restored images, JSON tables) goes through
[writing][contrastive_prompts.app._files.writing]: the content is written to a new file that the
operating system creates for this write alone (an exclusive create under a random name, so an
existing file of any name is never opened, let alone replaced), then renamed over the target. Any
exception, ``KeyboardInterrupt`` included, removes the temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._checks import InputError

__all__ = [
    "TEMPORARY_SUFFIX",
    "check_folder",
    "json_text",
    "make_folder",
    "remove_stale",
    "writing",
]

TEMPORARY_SUFFIX = ".partial"
"""Marks the hidden temporary files: ``.<target name>.<random>-<host>-<process id>.partial<target
suffix>`` (the target's suffix last, for writers that choose the format by it; the host and the
process say whose it is, see [remove_stale][contrastive_prompts.app._files.remove_stale])."""

# six hex digits naming this machine, so a process id is only compared with this machine's
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]

_TEMPORARY = re.compile(
    r"\.(?P<name>.+)\.[0-9a-f]{16}-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)"
    + re.escape(TEMPORARY_SUFFIX)
    + r".*"
)


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
    if target.is_dir():
        raise InputError(f"expected a file to write, got {str(target)!r}, which is a folder")
    if not target.parent.is_dir():
        found = "a file" if target.parent.exists() else "not found"
        raise InputError(
            f"expected the folder of {str(target)!r} to exist, got {str(target.parent)!r}: {found}"
        )
    temporary = target.with_name(
        f".{target.name}.{secrets.token_hex(8)}-{_HOST}-{os.getpid()}{TEMPORARY_SUFFIX}"
        f"{target.suffix}"
    )
    try:
        # an exclusive create: never a file that was there; the umask gives it a new file's mode
        os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        yield temporary
        os.replace(temporary, target)
    except Exception as error:
        if not _disk_full(error):
            raise
        free = shutil.disk_usage(target.parent).free
        kept = "the file there is as it was" if target.exists() else "nothing was written"
        raise OSError(
            errno.ENOSPC,
            f"cannot write {str(target)!r}: the disk that holds it is full ({free:,} bytes "
            f"free); {kept}",
        ) from error
    finally:
        temporary.unlink(missing_ok=True)


def _disk_full(error: BaseException) -> bool:
    """Whether a writer failed for want of space: an OSError, or torch's and safetensors' text."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return any(
        words in text
        for words in ("No space left", "StorageFull", "file write failed", "Disk quota exceeded")
    )


def check_folder(path: str | os.PathLike[str], what: str = "folder") -> Path:
    """``path`` checked to be a folder or makeable as one, without making anything.

    Raises:
        InputError: ``path``, or a folder on its way, is a file.
    """
    folder = Path(path)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(
            f"expected {what} {str(folder)!r} to be a folder (made if missing), got "
            f"{str(existing)!r}, which is a file"
        )
    return folder


def make_folder(path: str | os.PathLike[str], what: str = "folder") -> Path:
    """``path`` as a folder, made with its parents if missing; one line if it cannot be.

    Raises:
        InputError: ``path``, or a folder on its way, is a file.
    """
    folder = check_folder(path, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        check_folder(path, what)  # a file made there meanwhile: said in its words
        raise
    return folder


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


def remove_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files in ``folder`` left by processes of this machine that died.

    A process killed while it wrote (``kill -9``, a power cut) cannot remove its temporary
    file. One is stale when the process that made it, named in its name, no longer runs, or
    runs but started after the file was last written (its id was reused). Files of other
    machines, of running writers, and every other file are left alone.

    Returns:
        The files removed.
    """
    removed = []
    for path in Path(folder).glob(f".*{TEMPORARY_SUFFIX}*"):
        found = _TEMPORARY.fullmatch(path.name)
        if found is None or found["host"] != _HOST:
            continue
        try:
            written = path.stat().st_mtime
        except OSError:
            continue
        started = _process_start(int(found["pid"]))
        if started is not None and started <= written + 1:
            continue  # its writer may still be at it
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _process_start(pid: int) -> float | None:
    """When process ``pid`` of this machine started (seconds since the epoch); ``None`` if it
    does not run. Where the system does not say when, a running process counts as started at 0.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except (PermissionError, OSError):
        pass  # it runs, as another user
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0
