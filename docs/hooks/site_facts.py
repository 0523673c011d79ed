"""Why: the site shows the package's version and repository with no second, hand-written copy.

MkDocs hook. In a page's Markdown, ``{{ version }}`` becomes ``contrastive_prompts.__version__``,
read from ``contrastive_prompts/__init__.py`` (the file ``[tool.hatch.version]`` builds the
package's version from) without importing the package, and ``{{ repo_url }}`` becomes
mkdocs.yml's ``repo_url``. Any other ``{{ name }}``, or a ``repo_url`` that is not set, is a
warning: an error under ``mkdocs build --strict``. Files included by ``pymdownx.snippets`` are
read after this hook and are left as they are.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.site_facts")

_MARKER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
VERSION_FILE = Path("contrastive_prompts") / "__init__.py"


def read_version(init: Path) -> str:
    """The string assigned to ``__version__`` at the top level of ``init``; raises when none is."""
    for node in ast.parse(init.read_text(encoding="utf-8"), filename=str(init)).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise ValueError(f'{init}: expected a top-level `__version__ = "..."`, found none')


def site_facts(config: Any) -> dict[str, str]:
    """What a marker may name: the package's version and the repository's address."""
    root = Path(config["config_file_path"]).resolve().parent
    facts = {"version": read_version(root / VERSION_FILE)}
    if config.get("repo_url"):
        facts["repo_url"] = str(config["repo_url"]).rstrip("/")
    return facts


def substitute(markdown: str, facts: dict[str, str], where: str = "") -> str:
    """``markdown`` with every ``{{ name }}`` replaced by ``facts[name]``; unknown names stay."""

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name not in facts:
            known = ", ".join(sorted(facts))
            log.warning("site_facts: unknown marker %r%s (known: %s)", match[0], where, known)
            return match[0]
        return facts[name]

    return _MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    return substitute(markdown, site_facts(config), f" in {page.file.src_uri}")
