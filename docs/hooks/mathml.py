"""Why: MathML at build time, so the site's math needs no script and no CDN and works offline.

MkDocs hook. ``pymdownx.arithmatex`` (``generic: true``) leaves each ``$...$`` / ``$$...$$`` of the
pages and docstrings as escaped TeX in ``<span class="arithmatex">\\(...\\)</span>`` or
``<div class="arithmatex">\\[...\\]</div>``; this hook puts ``latex2mathml``'s MathML in the
wrapper (mkdocs-material styles ``div.arithmatex``). TeX it cannot convert stays and is a warning,
an error under ``mkdocs build --strict``.

Sized delimiters (``\\big(``, ``\\Big|``...) come out of ``latex2mathml`` as stretchy operators
with ``minsize``/``maxsize``; browsers stretch a glyph only with an OpenType math font, and without
one such a delimiter stays at text size. The hook writes them as non-stretchy operators scaled
with ``mathsize`` (and lowered so that they stay centred on the maths axis), which any font draws
at the intended size; docs/stylesheets/extra.css names common math fonts for the rest.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

from latex2mathml.converter import convert

log = logging.getLogger("mkdocs.hooks.mathml")

# What arithmatex writes in generic mode: inline TeX in \(...\), display TeX in \[...\] (or a bare
# \begin{env}...\end{env} block), HTML-escaped.
_MATH = re.compile(r'<(?P<tag>span|div) class="arithmatex">(?P<tex>.*?)</(?P=tag)>', re.DOTALL)
_DELIMITERS = {"span": ("\\(", "\\)"), "div": ("\\[", "\\]")}
_TEXT = re.compile(r">([^<]+)<")
_BARE_AMPERSAND = re.compile(r"&(?!#?\w+;)")
# latex2mathml spells \mathrm{clip} letter by letter; one <mi> (upright when longer than one
# character) reads as a word, to screen readers too. It writes \mathrm{d} as <mi>&#x00064;</mi>,
# which browsers would set in italic like a plain d.
_UPRIGHT_LETTER = r'<mi mathvariant="normal">[A-Za-z]</mi>'
_UPRIGHT_WORD = re.compile(rf"<mrow>((?:{_UPRIGHT_LETTER}){{2,}})</mrow>")
_UPRIGHT_SINGLE = re.compile(r"<mi>&#x000(4[1-9A-F]|5[0-9A]|6[1-9A-F]|7[0-9A]);</mi>")
# \big( and kin: <mo [stretchy="true" fence="true"] minsize="1.2em" maxsize="1.2em">(</mo>
_SIZED = re.compile(
    r'<mo(?P<attrs>[^>]*?) minsize="(?P<size>[0-9.]+)em" maxsize="(?P=size)em">(?P<text>[^<]*)</mo>'
)
# latex2mathml leaves these delimiter commands as text after \big; \big. is no delimiter
_DELIMITER_TEXT = {
    "\\{": "{", "\\}": "}", "\\lbrace": "{", "\\rbrace": "}", "\\langle": "&#x27E8;",
    "\\rangle": "&#x27E9;", "\\vert": "|", "\\lvert": "|", "\\rvert": "|", "\\|": "&#x2016;",
    "\\Vert": "&#x2016;", "\\lVert": "&#x2016;", "\\rVert": "&#x2016;", ".": "",
}  # fmt: skip
# where a text-size delimiter's middle sits above the baseline, in em: about the maths axis
_AXIS = 0.25


def _scaled_delimiter(match: re.Match[str]) -> str:
    """A sized delimiter as a glyph scaled to its size, which needs no stretching (no math font).

    A glyph scaled by ``s`` about the baseline has its middle ``(s - 1) * axis`` above the axis;
    ``mpadded`` lowers it by that much.
    """
    size = float(match["size"])
    attrs = match["attrs"].replace(' stretchy="true"', "")
    text = _DELIMITER_TEXT.get(match["text"], match["text"])
    mo = f'<mo{attrs} stretchy="false" mathsize="{size:g}em">{text}</mo>'
    lower = (size - 1) * _AXIS
    return f'<mpadded voffset="-{lower:.3g}em">{mo}</mpadded>' if lower > 0 else mo


def tex_to_mathml(tex: str, *, display: bool = False) -> str:
    """MathML for one equation's TeX (without its ``$`` delimiters); raises when it cannot.

    ``latex2mathml`` passes a command it does not know through as text (``<mi>\\foo</mi>``) and
    copies the ``&`` of an environment it does not know (``aligned``); both count as failures.
    """
    mathml: str = convert(tex.strip(), display="block" if display else "inline")
    mathml = _SIZED.sub(_scaled_delimiter, mathml)
    for text in _TEXT.findall(mathml):
        if "\\" in text or _BARE_AMPERSAND.search(text):
            raise ValueError(f"unsupported TeX left in the output: {text!r}")
    mathml = _UPRIGHT_WORD.sub(lambda word: f"<mi>{''.join(_TEXT.findall(word[1]))}</mi>", mathml)
    return _UPRIGHT_SINGLE.sub(
        lambda code: f'<mi mathvariant="normal">{chr(int(code[1], 16))}</mi>', mathml
    )


def render_math(content: str, where: str = "") -> str:
    """``content`` with every arithmatex equation in it replaced by MathML."""

    def replace(match: re.Match[str]) -> str:
        tag = match["tag"]
        tex = html.unescape(match["tex"]).strip()
        opening, closing = _DELIMITERS[tag]
        if tex.startswith(opening) and tex.endswith(closing):
            tex = tex[len(opening) : -len(closing)]
        try:
            mathml = tex_to_mathml(tex, display=tag == "div")
        except Exception as error:  # latex2mathml raises several types on TeX it does not know
            log.warning("math: cannot convert %r%s to MathML: %s", tex, where, error)
            return match[0]
        return f'<{tag} class="arithmatex">{mathml}</{tag}>'

    return _MATH.sub(replace, content)


def on_page_content(content: str, page: Any, **kwargs: Any) -> str:
    return render_math(content, f" in {page.file.src_uri}")
