// Renders the $...$ equations written by pymdownx.arithmatex (generic mode) when MathJax is
// present; without it (offline) the TeX source stays readable.
window.MathJax = {
  tex: { inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true },
  options: { ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex" },
};
