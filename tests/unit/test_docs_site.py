"""The documentation as a whole: a short README that leads to every page, a navigation
that holds every page, a strict site build that fails on a broken anchor, links from the
pages to the rest of the repository, and the alert rules' runbook links."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.docs import DOCS, README, REPO, anchors, nav_pages, section

REPO_URL = "https://github.com/ocitag/ocitag-worker"


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_links", REPO / "tools" / "docs_links.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_a_front_door() -> None:
    assert len(README.splitlines()) <= 250


def test_every_page_is_in_the_navigation_and_linked_from_the_readme() -> None:
    nav = nav_pages()
    assert sorted(nav) == sorted(p.name for p in DOCS.glob("*.md"))
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", section(README, "Read on")))
    assert linked == set(nav) - {"index.md"}


@pytest.mark.parametrize(
    ("path", "url"),
    sorted(
        {
            (str(path.relative_to(REPO)), url)
            for path in (REPO / "deploy").rglob("*")
            if path.suffix in {".yaml", ".json"}
            for url in re.findall(rf"{REPO_URL}/blob/main/[^\s\"']+", path.read_text())
        }
    ),
)
def test_links_from_deploy_into_the_repository_resolve(path: str, url: str) -> None:
    target, _, anchor = url.removeprefix(f"{REPO_URL}/blob/main/").partition("#")
    assert (REPO / target).is_file(), f"{path} links to {target}, which is not in the repository"
    if anchor:
        assert anchor in anchors((REPO / target).read_text(encoding="utf-8")), (path, url)


def test_links_out_of_docs_go_to_the_repository(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "README.md").write_text("# deploy\n")
    text = (
        "[a](../deploy/README.md#image) [b](../deploy/) [c](other.md#x) "
        "[d](../missing.md) [e](https://example.com/x)"
    )
    rewritten, missing = _hook().repository_links(text, docs, docs, REPO_URL + "/")
    assert rewritten == (
        f"[a]({REPO_URL}/blob/main/deploy/README.md#image) [b]({REPO_URL}/tree/main/deploy) "
        "[c](other.md#x) [d](../missing.md) [e](https://example.com/x)"
    )
    assert missing == ["../missing.md"]
    deeper, _ = _hook().repository_links(
        "[a](../../deploy/README.md)", docs / "sub", docs, REPO_URL
    )
    assert deeper == f"[a]({REPO_URL}/blob/main/deploy/README.md)"


def _site_copy(tmp_path: Path) -> Path:
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copytree(REPO / "tools", tmp_path / "tools", ignore=shutil.ignore_patterns("node_*"))
    for top in ("deploy", "schemas", "bench", "examples"):  # the pages link into them
        (tmp_path / top).symlink_to(REPO / top)
    return tmp_path


@pytest.mark.parametrize(
    ("page", "added", "builds"),
    [
        ("upgrading.md", "[x](operations.md#alerts)", True),  # the copy itself builds
        ("upgrading.md", "[x](operations.md#no-such-heading)", False),
        ("upgrading.md", "[x](no-such-page.md)", False),
        ("upgrading.md", "[x](../deploy/no-such-file.md)", False),
        ("orphan.md", "# A page outside the navigation", False),
    ],
)
def test_the_strict_site_build_fails_on_a_broken_link(
    tmp_path: Path, page: str, added: str, builds: bool
) -> None:
    site = _site_copy(tmp_path)
    with (site / "docs" / page).open("a", encoding="utf-8") as text:
        text.write(f"\n{added}\n")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "out")],
        cwd=site,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert (built.returncode == 0) == builds, built.stderr


def test_the_readmes_links_resolve() -> None:
    # the README is outside the site, so the strict build does not check it
    for target, anchor in re.findall(r"\]\((?!https?:)([^)#\s]*)(?:#([^)\s]*))?\)", README):
        path = REPO / target if target else REPO / "README.md"
        assert path.exists(), f"the README links to {target}, which is not in the repository"
        if anchor:
            assert anchor in anchors(path.read_text(encoding="utf-8")), f"{target}#{anchor}"
