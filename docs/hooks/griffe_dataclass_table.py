"""Why: no mkdocstrings option shows a dataclass's fields with their flags and defaults as a table.

Griffe extension, loaded by mkdocs.yml for mkdocstrings. For each class in ``classes``, the
``Attributes:`` section of its docstring becomes, in the docs only, a table of every field with its
``contrastive-prompts train`` flag, its type, its default (read from the dataclass, so it cannot
drift) and the section's description. A field missing from the section, or a described name that
is no field, is a warning: an error under ``mkdocs build --strict``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import re
from typing import Any

import griffe

logger = logging.getLogger("mkdocs.plugins.griffe_dataclass_table")
_SECTION = re.compile(r"^Attributes:\n(?:(?: {4}.*)?\n)*", re.MULTILINE)


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return repr(field.default_factory())
    return "required"


class DataclassDefaults(griffe.Extension):
    """Replace the ``Attributes:`` section of the named dataclasses by a table with defaults."""

    def __init__(self, classes: list[str]) -> None:
        super().__init__()
        self.classes = set(classes)  # full paths: contrastive_prompts.app.config.TrainConfig

    def on_class(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        if cls.path not in self.classes or cls.docstring is None:
            return
        module, _, name = cls.path.rpartition(".")
        fields = dataclasses.fields(getattr(importlib.import_module(module), name))
        text = cls.docstring.value + "\n"
        described = {
            item.name: " ".join(item.description.split()).replace("|", r"\|")
            for section in griffe.Docstring(text, parent=cls).parse("google")
            if section.kind is griffe.DocstringSectionKind.attributes
            for item in section.value
        }
        names = {f.name for f in fields}
        for odd in sorted(names ^ set(described)):
            where = "missing from" if odd in names else "no field but in"
            logger.warning("%s: %r is %s the Attributes section", cls.path, odd, where)
        rows = ["| Field | Flag | Type | Default | Description |", "|---|---|---|---|---|"]
        for f in fields:
            # a string under `from __future__ import annotations`, else a type
            hint = f.type if isinstance(f.type, str) else inspect.formatannotation(f.type)
            flag = f"--{f.name.replace('_', '-')}"
            if hint == "bool":  # argparse.BooleanOptionalAction
                flag += f"` / `--no-{flag[2:]}"
            rows.append(
                f"| `{f.name}` | `{flag}` | `{hint}` | `{_default(f)}` "
                f"| {described.get(f.name, '')} |"
            )
        new, count = _SECTION.subn(lambda _: "\n".join(rows) + "\n\n", text)
        if count != 1:
            logger.warning("%s: expected one Attributes section, found %d", cls.path, count)
            return
        cls.docstring.value = new.rstrip("\n")
