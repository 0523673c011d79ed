"""Griffe extension for the API docs: a dataclass's fields, types and defaults as one table.

mkdocs.yml loads it for mkdocstrings (``extensions:`` of the Python handler). For each class named
in its ``classes`` option, the ``Attributes:`` section of the docstring is replaced, in the docs
only, by a table of every field with its type, its default and the section's description. The
defaults are read from the dataclass itself, so the table cannot drift from the code; a field
missing from the section, or a described name that is no field, is a warning (an error under
``mkdocs build --strict``).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import re
import typing
from typing import Any

import griffe

logger = logging.getLogger("mkdocs.plugins.griffe_dataclass_table")

_SECTION = re.compile(r"^Attributes:\n(?:(?: {4}.*)?\n)*", re.MULTILINE)


def _cell(text: str, *, code: bool = False) -> str:
    # a pipe in a code span does not split a table row, and a backslash there would show
    text = " ".join(text.split())
    return f"`{text}`" if code else text.replace("|", r"\|")


def _annotation(hint: Any) -> str:
    # a string under ``from __future__ import annotations``, else a type or a generic alias
    if isinstance(hint, str):
        return hint
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return repr(field.default_factory())
    return "required"


class DataclassDefaults(griffe.Extension):
    """Replace the ``Attributes:`` section of the named dataclasses by a table with defaults."""

    def __init__(self, classes: list[str], flags: bool = False) -> None:
        """Options from mkdocs.yml.

        Args:
            classes: full paths of the dataclasses, e.g. ``contrastive_prompts.config.TrainConfig``.
            flags: add a column with the command-line flag of each field (``--batch-size``).
        """
        super().__init__()
        self.classes = set(classes)
        self.flags = flags

    def on_class(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        if cls.path not in self.classes or cls.docstring is None:
            return
        module_name, _, name = cls.path.rpartition(".")
        runtime = getattr(importlib.import_module(module_name), name)
        text = cls.docstring.value
        sections = griffe.Docstring(text, parent=cls).parse("google")
        described = {
            item.name: item.description
            for section in sections
            if section.kind is griffe.DocstringSectionKind.attributes
            for item in section.value
        }
        fields = dataclasses.fields(runtime)
        for missing in sorted({f.name for f in fields} - set(described)):
            logger.warning("%s: field %r is missing from the Attributes section", cls.path, missing)
        for extra in sorted(set(described) - {f.name for f in fields}):
            logger.warning("%s: %r in the Attributes section is no field", cls.path, extra)
        head = "| Field | Type | Default | Description |"
        rule = "|---|---|---|---|"
        if self.flags:
            head, rule = "| Field | Flag | Type | Default | Description |", "|---|---|---|---|---|"
        rows = [head, rule]
        for f in fields:
            annotation = _annotation(f.type)
            option = f"--{f.name.replace('_', '-')}"
            if annotation == "bool":  # argparse.BooleanOptionalAction
                option = f"{option}` / `--no-{option[2:]}"
            flag = f" `{option}` |" if self.flags else ""
            rows.append(
                f"| `{f.name}` |{flag} {_cell(annotation, code=True)} "
                f"| {_cell(_default(f), code=True)} | {_cell(described.get(f.name, ''))} |"
            )
        table = "\n".join(rows) + "\n\n"
        new, count = _SECTION.subn(lambda _: table, text if text.endswith("\n") else text + "\n")
        if count != 1:
            logger.warning("%s: expected one Attributes section, found %d", cls.path, count)
            return
        cls.docstring.value = new.rstrip("\n")
