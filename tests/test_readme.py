"""The README's code blocks run as written, and the docs show the same quickstart."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_quickstart_runs(capsys):
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert blocks, "README has no python block"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    assert "True" in capsys.readouterr().out


def test_docs_quickstart_is_the_readme_quickstart():
    readme = python_blocks((ROOT / "README.md").read_text())[0]
    assert (ROOT / "docs/snippets/quickstart.py").read_text() == readme
