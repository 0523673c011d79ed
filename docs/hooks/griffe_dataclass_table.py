"""Why: no mkdocstrings option shows a dataclass's fields with their flags and defaults as a table.

Griffe extension, loaded by mkdocs.yml for mkdocstrings. For each class in ``classes``, the docs
show, before its ``Examples:`` section, a table of every field with its ``contrastive-prompts
train`` flag, its type, its default and its description, all read from the dataclass itself (the
description from the field's ``metadata["help"]``, which ``--help`` prints too), so none can
drift. A field without a description is a warning: an error under ``mkdocs build --strict``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
from typing import Any

import griffe

logger = logging.getLogger("mkdocs.plugins.griffe_dataclass_table")


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return repr(field.default_factory())
    return "required"


class DataclassDefaults(griffe.Extension):
    """Add a table of the named dataclasses' fields, with their defaults, to their docstrings."""

    def __init__(self, classes: list[str]) -> None:
        super().__init__()
        self.classes = set(classes)  # full paths: contrastive_prompts.app.config.TrainConfig

    def on_class(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        if cls.path not in self.classes or cls.docstring is None:
            return
        module, _, name = cls.path.rpartition(".")
        fields = dataclasses.fields(getattr(importlib.import_module(module), name))
        rows = ["| Field | Flag | Type | Default | Description |", "|---|---|---|---|---|"]
        for f in fields:
            description = " ".join(str(f.metadata.get("help", "")).split()).replace("|", r"\|")
            if not description:
                logger.warning("%s: field %r has no metadata['help']", cls.path, f.name)
            # a string under `from __future__ import annotations`, else a type
            hint = f.type if isinstance(f.type, str) else inspect.formatannotation(f.type)
            flag = f"--{f.name.replace('_', '-')}"
            if hint == "bool":  # argparse.BooleanOptionalAction
                flag += f"` / `--no-{flag[2:]}"
            rows.append(f"| `{f.name}` | `{flag}` | `{hint}` | `{_default(f)}` | {description} |")
        table = "\n".join(rows) + "\n\n"
        text = cls.docstring.value
        at = text.find("\nExamples:")
        at = len(text) if at < 0 else at + 1
        cls.docstring.value = (text[:at].rstrip("\n") + "\n\n" + table + text[at:]).rstrip("\n")
