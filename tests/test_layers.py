"""The package's three layers: each module imports only from its own layer and those below.

core (the drop-in modules) < reference (the reference network) < app (the application). The
modules at the top are the face (``__init__``: core and reference), ``__main__`` (the command
line) and ``_checks``, which every layer uses and which imports nothing of the package.
"""

import ast
import collections
import functools
import importlib
import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

import contrastive_prompts

PACKAGE = Path(contrastive_prompts.__file__).parent
NAME = "contrastive_prompts"
RANK = {"_checks": 0, "core": 1, "reference": 2, "__init__": 2, "app": 3, "__main__": 3}
THIRD_PARTY_OF_THE_CORE = {"torch", "einops", "kornia"}


def module_name(path: Path) -> str:
    parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int:
    parts = module.split(".")
    if parts == [NAME]:
        return RANK["__init__"]
    return RANK[parts[1]]


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(module: str, path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of the package in ``path``, functions included."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == NAME and node.level:  # from . import x: x is a module
                found += [(node.lineno, f"{NAME}.{a.name}") for a in node.names]
            elif target.startswith(NAME):
                found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith(NAME)]
    return found


def test_every_module_has_a_layer():
    assert {m.split(".")[1] for m in MODULES if m != NAME} <= set(RANK)
    for layer in ("core", "reference", "app"):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for module, path in MODULES.items()
        for line, target in imported(module, path)
        if target in MODULES and rank(target) > rank(module)
    ]
    assert upward == []


def test_the_core_needs_torch_einops_and_kornia_alone():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    outside = set()
    for module, path in MODULES.items():
        if module.split(".")[1:2] != ["core"]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                outside |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                outside.add((node.module or "").split(".")[0])
    assert outside - stdlib - {NAME} <= THIRD_PARTY_OF_THE_CORE


def test_the_core_keeps_no_mutable_state_at_module_level():
    """No cache, registry or module instance in a module's globals: state lives in the objects
    that own it (a plan of the negatives on its network, a feature space in its loss)."""
    mutable = (dict, list, set, bytearray, weakref.WeakKeyDictionary, weakref.WeakValueDictionary,
               collections.deque, torch.nn.Module)  # fmt: skip
    found = [
        f"{module}.{name}: {type(value).__name__}"
        for module in MODULES
        if rank(module) <= RANK["core"]
        for name, value in vars(importlib.import_module(module)).items()
        if not name.startswith("__") and isinstance(value, mutable)
    ]
    assert found == []


def test_the_core_reads_and_writes_no_file():
    """No ``open``, no ``torch.load``/``torch.save``, no safetensors: the core's modules take
    tensors, and the application reads and writes files."""
    found = []
    for module, path in MODULES.items():
        if rank(module) > RANK["core"]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                name = f"{func.value.id}.{func.attr}"
            if name in {"open", "torch.load", "torch.save", "os.open", "Path.open"} or (
                isinstance(func, ast.Attribute) and func.attr in {"read_text", "read_bytes",
                                                                   "write_text", "write_bytes"}
            ):  # fmt: skip
                found.append(f"{module}:{node.lineno} {name or ast.unparse(func)}")
    assert found == []


@functools.cache
def _loaded_by_each_import() -> dict[str, list[str]]:
    """For the package and each module below the application, which of the package's modules
    importing it loads.

    One interpreter, started fresh, imports each module in turn after forgetting every module of
    the package (third-party ones stay loaded, as they do not change which of ours load): the
    answer of a fresh interpreter per module, at the cost of one.
    """
    code = (
        "import importlib, json, sys\n"
        f"found = {{}}\n"
        f"for module in {[NAME, *LOWER]!r}:\n"
        f"    for name in [m for m in sys.modules if m.split('.')[0] == {NAME!r}]:\n"
        "        del sys.modules[name]\n"
        "    importlib.import_module(module)\n"
        f"    found[module] = sorted(m for m in sys.modules if m.startswith({NAME!r}))\n"
        "print(json.dumps(found))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: dict[str, list[str]] = json.loads(run.stdout)
    return loaded


def loaded_after_import(module: str) -> list[str]:
    return _loaded_by_each_import()[module]


LOWER = sorted(m for m in MODULES if m != NAME and rank(m) <= RANK["reference"])


@pytest.mark.parametrize("module", LOWER)
def test_importing_a_module_brings_nothing_from_a_layer_above(module):
    """In a fresh interpreter, as a user importing one module would.

    Python runs the package's ``__init__`` (the face) first, and the face loads the core: so
    any import brings the core along, and nothing else above the module's own layer.
    """
    allowed = max(rank(module), RANK["core"])
    loaded = loaded_after_import(module)
    above = [m for m in loaded if m in MODULES and m != NAME and rank(m) > allowed]
    assert above == []
    assert module in loaded


# the method's two modules (the package's docstring names them), its objective and the reference
# model
METHOD = {"SparsePrompt", "ContrastivePromptLoss", "CPLObjective", "SparsePromptIR"}


def test_the_face_holds_what_a_user_of_the_modules_needs_and_loads_the_core_alone():
    face = set(contrastive_prompts.__all__)
    assert len(face) == len(contrastive_prompts.__all__)  # each name once
    assert METHOD <= face
    for name in face - {"__version__"}:  # each defined below the application
        home = getattr(contrastive_prompts, name).__module__
        assert rank(home) <= RANK["reference"], (name, home)
    loaded = loaded_after_import(NAME)
    assert [m for m in loaded if m in MODULES and rank(m) > RANK["core"] and m != NAME] == []
    with pytest.raises(AttributeError, match="has no attribute 'tiled'"):
        _ = contrastive_prompts.tiled  # imported from contrastive_prompts.reference


@pytest.mark.parametrize("module", sorted(m for m in MODULES if rank(m) == RANK["core"]))
def test_the_core_names_no_layer_above_it(module):
    """Not in an import, a docstring, a link or an example: the core reads on its own."""
    text = MODULES[module].read_text()
    for name in ("contrastive_prompts.app", "contrastive_prompts.reference", "SparsePromptIR"):
        assert name not in text, (module, name)
