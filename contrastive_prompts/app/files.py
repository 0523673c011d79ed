"""Files read without running code, and written whole or not at all.

Reading: PyTorch files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings,
bytes, containers (lists, tuples, dicts, sets) and numpy arrays, never an arbitrary Python object,
so a malicious file cannot run code when it is loaded. A file that needs more is refused with the
names of the types it asked for; there is no switch that reads it anyway.

Writing: every file the library writes (checkpoints, exports, restored images, JSON tables) goes
through [writing][contrastive_prompts.app.files.writing]: the content is written to a new file that
the operating system creates for this write alone (an exclusive create under a random name, so an
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
import pickle
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import InputError

__all__ = [
    "TEMPORARY_SUFFIX",
    "CheckpointError",
    "check_folder",
    "file_problem",
    "is_safetensors",
    "json_text",
    "make_folder",
    "read_weights",
    "remove_stale",
    "safe_load",
    "unreadable",
    "writing",
]

PathLike = str | os.PathLike[str]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, refused as unsafe, or does not fit where it goes.

    Examples:
        >>> try:
        ...     safe_load("no-such-run/last.pt")
        ... except CheckpointError as error:
        ...     print(error)
        checkpoint 'no-such-run/last.pt' not found
    """


def _numpy_array_globals() -> list[Any]:
    """What a pickled numpy array needs: the 0.1 checkpoints kept numpy's RNG state as one.

    Rebuilding an array from its bytes runs no code of the file's choosing; an array of Python
    objects can only hold what the same unpickler rebuilds.
    """
    reconstruct = np.zeros(1).__reduce__()[0]
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def file_problem(path: PathLike) -> str | None:
    """Why ``path`` cannot be read as a file, in words that follow its name; ``None`` if it can.

    Examples:
        >>> file_problem("no-such-file.pt")
        'not found'
        >>> file_problem(".")
        'is a folder, not a file'
    """
    if not os.path.lexists(path):
        return "not found"
    if not os.path.exists(path):
        return "is a broken link (what it points to is not found)"
    if os.path.isdir(path):
        return "is a folder, not a file"
    if not os.path.isfile(path):
        return "is not a regular file (a pipe, socket or device)"
    return None


def is_safetensors(path: PathLike) -> bool:
    """A safetensors file starts with an 8-byte header length and the header's ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def safe_load(path: PathLike, *, what: str = "checkpoint") -> Any:
    """Read a PyTorch file with ``torch.load(weights_only=True)``, with clear errors.

    Args:
        path: the file.
        what: how the file is named in messages (``"checkpoint"``, ``"PromptIR checkpoint"``).

    Returns:
        The unpickled object, tensors on the CPU.

    Raises:
        CheckpointError: the file is missing, not a regular file, a safetensors file (said as
            such, recognised by its header whatever its name), unreadable, or needs types that
            the safe loader refuses (the message names them).

    Examples:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
        >>> torch.save({"w": torch.ones(2)}, path)
        >>> safe_load(path)["w"]
        tensor([1., 1.])
    """
    path = os.fspath(path)
    problem = file_problem(path)
    if problem:
        raise CheckpointError(f"{what} {path!r} {problem}")
    if is_safetensors(path):
        raise CheckpointError(
            f"{what} {path!r} is a safetensors file (tensors by name), which this reader of "
            "PyTorch files does not read: pass the dict safetensors.torch.load_file gives"
        )
    try:
        # a file object, not the name: torch picks a reader by the name's suffix, and a file
        # is read by what it holds
        with open(path, "rb") as f, torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = _unsafe_globals(path) or _refused_names(error)
        if unsafe:
            raise CheckpointError(
                f"{what} {path!r} was refused: it asks for Python objects beyond tensors, numbers, "
                f"strings and containers ({', '.join(unsafe)}), and loading those can run code; "
                "this library never does. Ask the file's source for a .safetensors copy of its "
                "weights"
            ) from error
        raise CheckpointError(unreadable(what, path, error)) from error
    except Exception as error:
        raise CheckpointError(unreadable(what, path, error)) from error


def read_weights(path: PathLike, *, what: str = "weights file", missing: str = "") -> Any:
    """What a file of weights holds: a PyTorch file read by
    [safe_load][contrastive_prompts.app.files.safe_load], or a safetensors file (recognised by its
    header, whatever its name) as a dict of tensors.

    The core's modules take tensors, never a file; this is how a file becomes tensors for them.

    Args:
        path: the file.
        what: how the file is named in messages.
        missing: said after "not found" when there is no file (how to get one).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: ``path`` is not a regular file, cannot be read, or is refused as unsafe.

    Examples:
        >>> import tempfile, os
        >>> from safetensors.torch import save_file
        >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
        >>> save_file({"w": torch.ones(2)}, path)
        >>> read_weights(path)
        {'w': tensor([1., 1.])}
    """
    path = os.fspath(path)
    problem = file_problem(path)
    if problem == "not found":
        raise FileNotFoundError(f"{what} {path!r} not found{'. ' + missing if missing else ''}")
    if problem:
        raise CheckpointError(f"{what} {path!r} {problem}")
    if not is_safetensors(path):
        return safe_load(path, what=what)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(unreadable(what, path, error, "safetensors")) from error


def _unsafe_globals(path: str) -> list[str]:
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _numpy_array_globals()}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip archive: the unpickler's own message says what it met
        return []
    return sorted(set(found) - allowed)


def _refused_names(error: Exception) -> list[str]:
    """The types the unpickler refused, from its message (a class it met while building an
    object, such as a numpy dtype other than the allowed arrays', is not a global of the file)."""
    text = str(error)
    found = re.findall(r"GLOBAL ([\w.]+)", text) + re.findall(r"got <class '([\w.]+)'>", text)
    return sorted(set(found))


def unreadable(what: str, path: str, error: Exception, kind: str = "PyTorch") -> str:
    """One line saying that ``what`` at ``path`` cannot be read, from the reader's ``error``.

    torch's own text advises turning safe loading off; only the line saying what was wrong is
    kept.
    """
    # torch's own text suggests turning its safe mode off; keep the line that says what was wrong
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    marker = "WeightsUnpickler error:"
    after = [line for i, line in enumerate(lines) if i and marker in lines[i - 1]]
    found = [line.split(marker, 1)[1].strip() for line in lines if marker in line]
    detail = next((d for d in [*found, *after] if d), lines[-1] if lines else "")
    if "weights_only" in detail or "torch.load" in detail:
        detail = "not a file of tensors"
    return (
        f"{what} {path!r} cannot be read ({type(error).__name__}: {detail}); "
        f"the file is corrupt or truncated, or not a {kind} file"
    )


TEMPORARY_SUFFIX = ".partial"
"""Marks the hidden temporary files: ``.<target name>.<random>-<host>-<process id>.partial<target
suffix>`` (the target's suffix last, for writers that choose the format by it; the host and the
process say whose it is, see [remove_stale][contrastive_prompts.app.files.remove_stale])."""

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
