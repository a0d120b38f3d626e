"""The README and the pages under docs/ as the tests that keep them true read them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from markdown.extensions.toc import slugify

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = (REPO / "README.md").read_text(encoding="utf-8")


def page(name: str) -> str:
    """The text of docs/<name>."""
    return (DOCS / name).read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    """The ``## title`` section of a Markdown text, up to the next ``## `` heading."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def nav_pages() -> list[str]:
    """The pages of mkdocs.yml's navigation, in order."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))

    def walk(entries: list[Any]) -> list[str]:
        found: list[str] = []
        for entry in entries:
            for value in entry.values():
                found.extend(walk(value) if isinstance(value, list) else [value])
        return found

    return walk(config["nav"])


def anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings, as the site (Python-Markdown's toc) and GitHub
    make them for plain headings."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return {
        slugify(re.sub(r"[`*]", "", m.group(1)), "-")
        for m in re.finditer(r"^#{1,6} (.+)$", prose, re.MULTILINE)
    }
