"""Query cursors: a result larger than one page is served in pages via ``nextRecordsUrl``.

Salesforce keeps a query's result server-side and hands out a locator for the rest
(``/query/{cursor}-{offset}``); so does the sandbox, for the 64 newest queries (an older
locator answers ``INVALID_QUERY_LOCATOR``, as an expired one does on Salesforce).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

from .schema import ApiError
from .store import Record

#: Open cursors kept; the oldest goes first.
MAX_CURSORS = 64


class Cursors:
    """The open cursors of one org."""

    def __init__(self, page_size: int = 2000) -> None:
        self.page_size = page_size
        self._open: OrderedDict[str, list[Record]] = OrderedDict()
        self._ids = itertools.count(1)

    def first_page(
        self, rows: list[Record], version: str, batch_size: int | None
    ) -> dict[str, Any]:
        """The first page of a query's ``rows``, opening a cursor when more remain."""
        return self._page(rows, 0, version, batch_size)

    def more(self, locator: str, version: str, batch_size: int | None) -> dict[str, Any]:
        """The page a ``nextRecordsUrl`` locator (``{cursor}-{offset}``) names."""
        cursor_id, _, offset = locator.rpartition("-")
        rows = self._open.get(cursor_id)
        if rows is None or not offset.isdigit():
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(rows, int(offset), version, batch_size, cursor_id)

    def _page(
        self,
        rows: list[Record],
        offset: int,
        version: str,
        batch_size: int | None,
        cursor_id: str | None = None,
    ) -> dict[str, Any]:
        size = min(self.page_size, batch_size) if batch_size else self.page_size
        page = rows[offset : offset + size]
        result: dict[str, Any] = {"totalSize": len(rows), "done": True, "records": page}
        if offset + size < len(rows):
            if cursor_id is None:
                cursor_id = f"01g5g0{next(self._ids):09d}"
                self._open[cursor_id] = rows
                while len(self._open) > MAX_CURSORS:
                    self._open.popitem(last=False)
            result["done"] = False
            result["nextRecordsUrl"] = (
                f"/services/data/v{version}/query/{cursor_id}-{offset + size}"
            )
        return result
