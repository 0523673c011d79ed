"""The site's front page and changelog say what the package is, which version, and where it lives.

Reads the front page and the changelog page of the site (built once per session, strict, by
conftest's ``built_site``): the front page shows ``contrastive_prompts.__version__`` (put there by
docs/hooks/site_facts.py, never typed into the page), the repository that pyproject.toml names,
the method diagram, and links to the two journeys; the changelog page holds CHANGELOG.md. The
front page's example runs alone, with what it prints checked, in tests/test_docs_blocks.py.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

import contrastive_prompts

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "docs" / "index.md"
HOOK = ROOT / "docs" / "hooks" / "site_facts.py"
if not (ROOT / "mkdocs.yml").is_file() or not INDEX.is_file():  # an sdist ships no docs pages
    pytest.skip("the docs sources are not in this tree", allow_module_level=True)

yaml = pytest.importorskip("yaml")
if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: tomli, when installed, is the same parser
    tomllib = pytest.importorskip("tomli")
ARTICLE = re.compile(r'<article class="md-content__inner md-typeset">(.*?)</article>', re.S)


def repository() -> str:
    with (ROOT / "pyproject.toml").open("rb") as file:
        urls: dict[str, str] = tomllib.load(file)["project"]["urls"]
    return urls["Source"]


def mkdocs_config() -> dict[str, object]:
    config: dict[str, object] = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    return config


@pytest.fixture(scope="module")
def site(built_site: tuple[Path, str]) -> Path:
    return built_site[0]


def article(site: Path, page: str) -> str:
    """The page's own content: the header, which also links the repository, left out."""
    found = ARTICLE.search((site / page).read_text(encoding="utf-8"))
    assert found, f"{page}: no article"
    return found[1]


@pytest.fixture(scope="module")
def hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks_site_facts", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sites_repository_is_pyprojects() -> None:
    config = mkdocs_config()
    assert config["repo_url"] == repository()
    assert repository().endswith(f"/{config['repo_name']}")


def test_the_front_page_shows_the_version_and_the_repository(site: Path) -> None:
    text = article(site, "index.html")
    version = re.escape(contrastive_prompts.__version__)
    assert re.search(rf"\bVersion {version}\b", text), "the version is not on the front page"
    assert f'href="{repository()}"' in text
    assert not re.search(r"\{\{\s*\w+\s*\}\}", text)  # every marker was replaced


def test_the_version_is_not_typed_into_the_front_page() -> None:
    # the hook puts it there; a copy in the page would go stale at the next release
    assert contrastive_prompts.__version__ not in INDEX.read_text(encoding="utf-8")


def test_the_front_page_shows_the_method_diagram(site: Path) -> None:
    assert re.search(r'<img [^>]*src="images/method\.svg"', article(site, "index.html"))
    assert (site / "images" / "method.svg").is_file()
    # and the concepts page keeps it
    assert "method.svg" in article(site, "concepts/negatives-cost/index.html")


@pytest.mark.parametrize(
    ("label", "target"),
    [("CPL in your own network", "own-network/"), ("The reference model", "model/")],
)
def test_the_front_page_links_the_two_journeys(site: Path, label: str, target: str) -> None:
    links = re.findall(r'<a href="([^"]*)">([^<]*)</a>', article(site, "index.html"))
    assert (target, label) in links
    assert (site / target / "index.html").is_file()


def test_the_changelog_page_holds_the_changelog(site: Path) -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    top = re.search(r"^## (.+)$", changelog, flags=re.M)
    assert top, "CHANGELOG.md has no section"
    text = article(site, "changelog/index.html")
    headings = re.findall(r"<h([1-6])[^>]*>(.*?)<a class=\"headerlink\"", text)
    assert [h for level, h in headings if level == "1"] == ["Changelog"]  # one title
    assert ("2", top[1]) in headings  # the newest section, under the title
    assert 'href="changelog/"' in article(site, "index.html")


def test_the_hook_reads_the_packages_version(hook: ModuleType) -> None:
    assert hook.read_version(ROOT / hook.VERSION_FILE) == contrastive_prompts.__version__


def test_the_hook_replaces_known_markers_and_reports_others(
    hook: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    facts = {"version": "9.9.9", "repo_url": "https://example.org/r"}
    assert (
        hook.substitute("v{{ version }} at {{repo_url}}", facts)
        == "v9.9.9 at https://example.org/r"
    )
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.site_facts"):
        assert hook.substitute("{{ nope }}", facts, " in x.md") == "{{ nope }}"
    assert "unknown marker" in caplog.text and "x.md" in caplog.text


def test_the_hook_refuses_a_file_without_a_version(hook: ModuleType, tmp_path: Path) -> None:
    init = tmp_path / "__init__.py"
    init.write_text("__version__ = make_version()\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a top-level `__version__"):
        hook.read_version(init)


def test_the_hook_reads_the_version_next_to_mkdocs_yml(hook: ModuleType) -> None:
    config = {"config_file_path": str(ROOT / "mkdocs.yml"), "repo_url": repository() + "/"}
    facts = hook.site_facts(config)
    assert facts == {"version": contrastive_prompts.__version__, "repo_url": repository()}
    page = SimpleNamespace(file=SimpleNamespace(src_uri="index.md"))
    assert hook.on_page_markdown("{{ version }}", page, config) == contrastive_prompts.__version__
