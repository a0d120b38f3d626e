"""MkDocs hook (mkdocs.yml ``hooks:``): the pages' links to the repository's other files.

A page links to ``../deploy/README.md`` or ``../schemas/ocitag.schema.json`` relatively, so
that the link works where the pages are read on GitHub. The site holds only ``docs/``, so
mkdocs reports such a link as not found; here it becomes a link to the file in the
repository (``repo_url``), and a target that does not exist in the repository fails the
build, as a missing page does. Written by hand because no well-kept plugin does this: one
regular expression and a path check.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

#: a Markdown link whose target leaves the page's directory: ``](../x/y.md#anchor)``
LINK = re.compile(r"\]\((?P<target>(?:\.\./)+[^)\s#]*)(?P<anchor>#[^)\s]*)?\)")


def repository_links(
    markdown: str, page_dir: Path, docs_dir: Path, repo_url: str
) -> tuple[str, list[str]]:
    """The page with its links to files outside ``docs_dir`` (and inside the repository,
    the parent of ``docs_dir``) pointed at ``repo_url``, and the targets that are missing."""
    root = docs_dir.parent
    missing: list[str] = []

    def rewrite(match: re.Match[str]) -> str:
        # normpath, not resolve: a symlinked file is where it is linked, not where it points
        path = Path(os.path.normpath(page_dir / match["target"]))
        if path.is_relative_to(docs_dir) or not path.is_relative_to(root):
            return match[0]  # mkdocs validates links within docs/ itself
        if not path.exists():
            missing.append(match["target"])
            return match[0]
        kind = "tree" if path.is_dir() else "blob"
        relative = path.relative_to(root).as_posix()
        return f"]({repo_url.rstrip('/')}/{kind}/main/{relative}{match['anchor'] or ''})"

    return LINK.sub(rewrite, markdown), missing


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(os.path.abspath(config["docs_dir"]))
    source = docs_dir / page.file.src_path
    text, missing = repository_links(markdown, source.parent, docs_dir, config["repo_url"])
    if missing:
        raise PluginError(
            f"{page.file.src_path} links to {', '.join(missing)}: not in the repository"
        )
    return text
