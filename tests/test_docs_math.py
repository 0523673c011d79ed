"""The docs typeset their equations as MathML at build time (docs/hooks/mathml.py), with no network.

Reads every page of the site (built once per session by conftest's ``built_site``): no script is
loaded from another host, no TeX or math delimiter is left in the text a reader sees, and the
equations are ``<math>`` elements. The hook's own failure path (TeX it cannot convert is kept
and reported, so a strict build fails) is checked directly.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "docs" / "hooks" / "mathml.py"

pytestmark = pytest.mark.skipif(
    not (ROOT / "mkdocs.yml").is_file() or not HOOK.is_file(),
    reason="needs the docs sources (not shipped in the sdist)",
)


@pytest.fixture(scope="module")
def hook() -> ModuleType:
    pytest.importorskip("latex2mathml")
    spec = importlib.util.spec_from_file_location("docs_hooks_mathml", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(built_site: tuple[Path, str], hook: ModuleType) -> tuple[Path, str]:
    """The site (built once per session, strict) and its build log."""
    return built_site


class _Text(HTMLParser):
    """The text a reader sees, outside code, scripts and styles; and the <math> elements."""

    SKIP = frozenset({"code", "pre", "script", "style", "kbd", "samp", "textarea"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.skipping = 0
        self.parts: list[str] = []
        self.math = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "math":
            self.math += 1
        if tag in self.SKIP:
            self.skipping += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def read(page: Path) -> _Text:
    parser = _Text()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_no_page_loads_a_script_from_another_host(site):
    out, _ = site
    remote = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']?(?:[a-z]+:)?//""", re.IGNORECASE)
    pages = list(out.rglob("*.html"))
    assert len(pages) > 10
    offenders = [str(p.relative_to(out)) for p in pages if remote.search(p.read_text("utf-8"))]
    assert not offenders
    assert not any("mathjax" in p.read_text("utf-8").lower() for p in pages)


def test_the_site_does_not_publish_the_docs_tooling(site):
    out, _ = site  # mkdocs.yml's exclude_docs: hooks/, scripts/ and snippets/ stay out
    assert not list(out.rglob("*.py"))


def test_every_page_shows_mathml_and_no_tex(site):
    out, log = site
    assert "cannot convert" not in log, log
    with_math = 0
    for path in sorted(out.rglob("*.html")):
        page = read(path)
        text, name = "".join(page.parts), path.relative_to(out).as_posix()
        with_math += page.math > 0
        for delimiter in ("$", "\\(", "\\)", "\\[", "\\]"):
            assert delimiter not in text, f"{name}: {delimiter} left in the text"
        tex = re.search(r".{0,40}\\[A-Za-z]+.{0,40}", text)
        assert not tex, f"{name}: TeX left in the text: {tex and tex[0]}"
    assert with_math >= 10  # the concepts, guides and API pages


def test_upright_names_are_upright(hook):
    mathml = hook.tex_to_mathml(r"\mathrm{clip}(x) + \mathrm{d}x + \text{otherwise}")
    assert "<mi>clip</mi>" in mathml
    assert '<mi mathvariant="normal">d</mi>' in mathml
    assert "<mtext>otherwise</mtext>" in mathml


@pytest.mark.parametrize(
    ("tex", "size", "glyph"),
    [
        (r"\big| x \big|", "1.2em", "|"),
        (r"\bigl( x \bigr)", "1.2em", "("),
        (r"\Big[ x \Big]", "1.623em", "["),
        (r"\bigg\{ x \bigg\}", "2.047em", "{"),
        (r"\Bigg\langle x \Bigg\rangle", "2.47em", "&#x27E8;"),
    ],
)
def test_sized_delimiters_need_no_math_font(hook, tex, size, glyph):
    """Browsers stretch an operator only with an OpenType math font; a scaled glyph has its size
    in any font. So a sized delimiter is never left to stretching, and it is lowered to stay
    centred on the maths axis."""
    mathml = hook.tex_to_mathml(tex)
    assert "minsize" not in mathml and "maxsize" not in mathml
    assert 'stretchy="true"' not in mathml
    sized = re.findall(r'<mpadded voffset="-([0-9.]+)em"><mo([^>]*)>([^<]*)</mo></mpadded>', mathml)
    assert len(sized) == 2, mathml
    lower, attrs, text = sized[0]
    assert f'mathsize="{size}"' in attrs and 'stretchy="false"' in attrs
    assert text == glyph
    assert float(lower) == pytest.approx((float(size[:-2]) - 1) * 0.25, abs=1e-3)


def test_the_site_stretches_no_delimiter_and_names_math_fonts(site):
    out, _ = site
    for path in sorted(out.rglob("*.html")):
        assert "minsize=" not in path.read_text("utf-8"), path.relative_to(out)
    # the $\big|$ of the distance in the concept page
    page = (out / "concepts" / "contrastive-prompt-regularisation" / "index.html").read_text()
    assert '<mo stretchy="false" mathsize="1.2em">|</mo>' in page
    css = (out / "stylesheets" / "extra.css").read_text("utf-8")
    rule = re.search(r"(?m)^math\s*\{[^}]*font-family:([^;]*);", css)
    assert rule and "Cambria Math" in rule[1] and rule[1].strip().endswith("math")


@pytest.mark.parametrize(
    "tex", [r"\unknowncommand x", r"\begin{aligned} a &= b \end{aligned}", r"\frac{1}{"]
)
def test_unsupported_tex_is_kept_and_reported(hook, caplog, tex):
    escaped = tex.replace("&", "&amp;")
    content = f'<p>see <span class="arithmatex">\\({escaped}\\)</span></p>'
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.mathml"):
        assert hook.render_math(content, " in test.md") == content
    assert "cannot convert" in caplog.text and "test.md" in caplog.text


def test_render_math_unescapes_and_keeps_the_wrapper(hook):
    content = (
        '<p>a <span class="arithmatex">\\(a &lt; b\\)</span></p>\n'
        '<div class="arithmatex">\\[\n'
        "\\begin{cases} 1 &amp; x \\\\ 0 &amp; y \\end{cases}\n\\]</div>"
    )
    out = hook.render_math(content)
    assert '<span class="arithmatex"><math' in out and 'display="inline"' in out
    assert "<mo>&#x0003C;</mo>" in out
    assert '<div class="arithmatex"><math' in out and 'display="block"' in out
    assert "<mtable>" in out and "\\(" not in out and "\\[" not in out


# -- the rest of what a reader must not see (the same build) -----------------------------------

# as written (`:func:` then a backtick) or as Markdown renders it (`:func:` then <code>)
SPHINX_ROLE = re.compile(r":(func|class|meth|data|attr|mod|obj|exc):(`|<code)")


def test_no_page_shows_a_sphinx_role_or_an_example_as_a_quote(site):
    out, _ = site
    pages = sorted(out.rglob("index.html"))
    assert len(pages) > 20
    for page in pages:
        html = page.read_text(encoding="utf-8")
        name = page.relative_to(out).as_posix()
        assert not SPHINX_ROLE.search(html), f"{name}: a raw Sphinx role"
        # doctest examples render as code blocks, never inside a blockquote
        for quote in re.findall(r"<blockquote>(.*?)</blockquote>", html, flags=re.S):
            assert "&gt;&gt;&gt;" not in quote, f"{name}: an example rendered as a quote"
    # and the API pages do show their examples, in code blocks
    api = (out / "api" / "prompt" / "index.html").read_text(encoding="utf-8")
    blocks = re.findall(r"<pre.*?</pre>", api, flags=re.S)
    assert any("&gt;&gt;&gt;" in block for block in blocks)
