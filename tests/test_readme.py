"""The docs' Quickstart is the README's, character for character.

The README's blocks themselves run in tests/test_docs_blocks.py, each alone in a fresh process,
with checks of what they compute.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_docs_quickstart_is_the_readme_quickstart():
    readme = python_blocks((ROOT / "README.md").read_text())[0]
    assert (ROOT / "docs/snippets/quickstart.py").read_text() == readme
