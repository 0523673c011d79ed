"""The picture of the method (docs/images/method.svg) is what its script draws today."""

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "scripts" / "method_diagram.py"
COMMITTED = ROOT / "docs" / "images" / "method.svg"
if not (SCRIPT.is_file() and COMMITTED.is_file()):  # an sdist ships the tests without the docs
    pytest.skip("docs/scripts/method_diagram.py is not in this tree", allow_module_level=True)


def _script():
    spec = importlib.util.spec_from_file_location("method_diagram", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _creator(svg: str) -> str:
    """The matplotlib that wrote the file (the SVG metadata names it)."""
    found = re.search(r"<dc:title>(Matplotlib v[^,<]+)", svg)
    return found.group(1) if found else ""


def _texts(svg: str) -> list[str]:
    """Every label of the picture: text is drawn as paths, each preceded by its string."""
    return re.findall(r"<!-- (.*?) -->", svg)


def test_the_committed_picture_is_what_the_script_draws(tmp_path):
    out = _script().render(tmp_path / "method.svg")
    drawn, committed = out.read_text(encoding="utf-8"), COMMITTED.read_text(encoding="utf-8")
    assert "<dc:date>" not in drawn  # no date: reruns give the same file
    assert "prompt stage 3  (latent, 8C → 4C)" in _texts(drawn)
    if _creator(drawn) == _creator(committed):
        # same matplotlib: byte for byte (rerun the script and commit when this fails)
        assert drawn == committed, "rerun python docs/scripts/method_diagram.py and commit"
    else:
        # another matplotlib writes other path data for the same picture: compare its labels
        assert _texts(drawn) == _texts(committed)


def test_the_script_writes_the_same_file_twice(tmp_path):
    script = _script()
    first = script.render(tmp_path / "a.svg").read_bytes()
    assert script.render(tmp_path / "b.svg").read_bytes() == first


def test_the_concepts_page_shows_the_picture():
    page = (ROOT / "docs" / "concepts" / "negatives-cost.md").read_text(encoding="utf-8")
    assert "](../images/method.svg)" in page
