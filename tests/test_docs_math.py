"""The docs typeset their equations as MathML at build time (docs/hooks/mathml.py), with no network.

Builds the site once into a temporary folder (a few seconds) and reads the pages that have math:
no script is loaded from another host, no TeX or math delimiter is left in the text, and the
equations are ``<math>`` elements. The hook is also checked on every TeX construct the project
uses, and on every equation in the package's docstrings.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import os
import re
import subprocess
import sys
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

# Pages with math, from the Markdown pages and from the docstrings (API pages).
MATH_PAGES = [
    "concepts/sparse-prompts/index.html",
    "concepts/contrastive-prompt-regularisation/index.html",
    "concepts/negatives-cost/index.html",
    "metrics/index.html",
    "degradations/index.html",
    "benchmarks/index.html",
    "api/loss/index.html",
    "api/data/index.html",
    "api/prompt/index.html",
    "api/model/index.html",
]


@pytest.fixture(scope="module")
def hook() -> ModuleType:
    pytest.importorskip("latex2mathml")
    spec = importlib.util.spec_from_file_location("docs_hooks_mathml", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, hook: ModuleType) -> tuple[Path, str]:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-f", "mkdocs.yml", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    return out, build.stdout + build.stderr


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


def test_the_build_converts_every_equation(site):
    out, log = site
    assert "cannot convert" not in log, log
    left = [
        str(page.relative_to(out))
        for page in out.rglob("*.html")
        if re.search(r'class="arithmatex">\s*\\[(\[]', page.read_text(encoding="utf-8"))
    ]
    assert not left, f"TeX left unconverted in {left}"


def test_no_page_loads_a_script_from_another_host(site):
    out, _ = site
    remote = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']?(?:[a-z]+:)?//""", re.IGNORECASE)
    pages = list(out.rglob("*.html"))
    assert len(pages) > 10
    offenders = [str(p.relative_to(out)) for p in pages if remote.search(p.read_text("utf-8"))]
    assert not offenders
    assert not any("mathjax" in p.read_text("utf-8").lower() for p in pages)


@pytest.mark.parametrize("name", MATH_PAGES)
def test_math_pages_show_mathml_and_no_tex(site, name):
    out, _ = site
    page = read(out / name)
    text = "".join(page.parts)
    assert page.math >= 2
    assert "$" not in text
    for delimiter in ("\\(", "\\)", "\\[", "\\]"):
        assert delimiter not in text
    assert not re.search(r"\\[A-Za-z]+", text), re.search(r".{40}\\[A-Za-z]+.{40}", text)


def test_the_table_of_modes_holds_the_infonce_fraction(site):
    out, _ = site
    html = (out / "concepts/contrastive-prompt-regularisation/index.html").read_text("utf-8")
    table = html[html.index("<table>") : html.index("</table>")]
    infonce = table[table.index("<code>infonce</code>") : table.index("<code>ratio</code>")]
    assert "<math" in infonce and "<mfrac>" in infonce and "<mi>log</mi>" in infonce
    quantize = (out / "degradations/index.html").read_text("utf-8")
    row = quantize[quantize.index("<code>quantize</code>") :]
    row = row[: row.index("</tr>")]
    assert "<math" in row and "<mi>clip</mi>" in row and "&#x0230A;" in row  # the floor


# Every construct the docs and docstrings use, and a few near them.
CONSTRUCTS = [
    r"\mathrm{PSNR} = 10 \log_{10} (R^2 / \mathrm{MSE})",
    r"\operatorname{clip}_{[0,255]}(x)",
    r"\frac{1}{CHW} \sum_{c,h,w} (x_{chw} - y_{chw})^2",
    r"\frac1M\sum_j d_l(a,n_j) + \epsilon",
    r"-\log \dfrac{e^{-d(a,y)/\tau}}{e^{-d(a,y)/\tau} + \sum_j e^{-d(a,n_j)/\tau}}",
    r"(B, C, \lceil H/m \rceil m, \lfloor W/m \rfloor m)",
    r"\lfloor \mathrm{clip}_{[0,255]}(\mathrm{round}(255 x) + 255 n) \rfloor / 255",
    r"(B, N) \times (N, D S^2)",
    r"t_\text{step} + M\, t_\text{dec}",
    r"\exp(-\beta d) = e^{-\beta d}",
    r"w = \mathrm{softmax}(W e + b) \in \mathbb{R}^{N}",
    r"\tilde w_i = \begin{cases} w_i & i \in \mathrm{TopK}(w, k) \\ 0 & \text{otherwise}"
    r" \end{cases}",
    r"\mathrm{conv}_{3\times 3}\big(\mathrm{resize}_{H \times W}"
    r"(\textstyle\sum_i \tilde w_i P_i)\big)",
    r"n \sim \mathcal{N}(0, (\sigma / 255)^2)",
    r"\bar\phi_l, \quad d_l \le 2, \; \ge 0, \geq 1, \approx, \pm 3\sigma, \dots",
    r"r \bmod B, \qquad C \in \{1, 3\}, \qquad k_{L, \theta} * x",
    r"\mathrm{d}x",
]


@pytest.mark.parametrize("tex", CONSTRUCTS)
@pytest.mark.parametrize("display", [False, True])
def test_each_construct_becomes_mathml(hook, tex, display):
    mathml = hook.tex_to_mathml(tex, display=display)
    assert mathml.startswith("<math") and mathml.endswith("</math>")
    assert f'display="{"block" if display else "inline"}"' in mathml
    text = "".join(re.findall(r">([^<]*)<", mathml))
    assert "\\" not in text and "$" not in text


def test_upright_names_are_upright(hook):
    mathml = hook.tex_to_mathml(r"\mathrm{clip}(x) + \mathrm{d}x + \text{otherwise}")
    assert "<mi>clip</mi>" in mathml
    assert '<mi mathvariant="normal">d</mi>' in mathml
    assert "<mtext>otherwise</mtext>" in mathml


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


def _docstring_equations() -> list[str]:
    found = []
    equation = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$", re.DOTALL)
    for path in sorted((ROOT / "contrastive_prompts").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                found += [m[1] or m[2] for m in equation.finditer(doc)]
    return found


def test_every_docstring_equation_converts(hook):
    equations = _docstring_equations()
    assert len(equations) > 50
    for tex in equations:
        assert hook.tex_to_mathml(tex).startswith("<math"), tex


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
