"""Reading PyTorch files without running code: what every reader of a ``.pt`` file uses.

PyTorch files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings, bytes,
containers (lists, tuples, dicts, sets) and numpy arrays, never an arbitrary Python object, so a
malicious file cannot run code when it is loaded. A file that needs more is refused with the
names of the types it asked for; there is no switch that reads it anyway.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import numpy as np
import torch

__all__ = ["CheckpointError", "file_problem", "is_safetensors", "safe_load", "unreadable"]

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
