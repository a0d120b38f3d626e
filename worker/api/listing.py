"""A page of a repository's live records as one caller may see them.

Without a filter a page is one query of ``limit + 1`` rows (the extra row says whether
there is more). With one (the caller's read grants), rows the caller may not read are
skipped and further rows read until the page is full, at most ``MAX_SCANS`` queries; the
cursor is then the last row *examined*, not the last returned, so every page moves
forward even when none of its rows is visible (an empty page with a ``next`` cursor
means "nothing you may read here yet; go on").
"""

from __future__ import annotations

from collections.abc import Callable

from worker.api.requests import ListQuery
from worker.api.store import Reads, Stored

#: queries one filtered page may take before answering with what it has
MAX_SCANS = 5


async def visible_page(
    reads: Reads, query: ListQuery, visible: Callable[[str], bool] | None
) -> tuple[list[Stored], str | None]:
    """The page's records and the tag to continue after (None: the last page).
    ``visible`` takes a canonical OCITag ID; None shows every record."""
    after = query.after or ""
    shown: list[Stored] = []
    for _ in range(MAX_SCANS if visible is not None else 1):
        rows = await reads.page(query.repository, after, query.limit + 1)
        for index, row in enumerate(rows[: query.limit]):
            after = row.record["tag"]
            if visible is None or visible(f"{query.repository}:{after}"):
                shown.append(row)
            if len(shown) == query.limit:
                return shown, after if index + 1 < len(rows) else None
        if len(rows) <= query.limit:
            return shown, None
    return shown, after
