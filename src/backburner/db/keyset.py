"""Keyset pagination, the one way every listing pages: ordered by (created_at, id), continued
after the last row of the previous page.

A cursor is the id of that last row. One rule holds for every listing: a cursor that is not
the id of a row of the same listing (malformed, unknown, another organization's, or deleted
since) answers 400 and asks the client to start again from the first page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

CURSOR_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class InvalidCursor(ValueError):
    def __init__(self, cursor: str, reason: str) -> None:
        self.cursor = cursor
        shown = cursor if len(cursor) <= 100 else cursor[:100] + "..."
        super().__init__(f"invalid cursor {shown!r}: {reason}; start again from the first page")


@dataclass(frozen=True)
class Keyset:
    """The order of a listing: `created_at`, then `id`; newest first when `descending`."""

    created_at: Any  # a column
    id: Any
    descending: bool = False

    def ordered(self, query: Select[Any]) -> Select[Any]:
        if self.descending:
            return query.order_by(self.created_at.desc(), self.id.desc())
        return query.order_by(self.created_at, self.id)

    async def after(
        self, conn: AsyncConnection, cursor: str, scope: list[ColumnElement[bool]]
    ) -> ColumnElement[bool]:
        """The condition for rows after the row whose id is `cursor`, among the rows `scope`
        selects; `InvalidCursor` when there is no such row."""
        if not CURSOR_PATTERN.fullmatch(cursor):
            raise InvalidCursor(cursor, "a cursor is the id of the last item of the previous page")
        created_at = (
            await conn.execute(select(self.created_at).where(self.id == cursor, *scope))
        ).scalar_one_or_none()
        if created_at is None:
            raise InvalidCursor(cursor, "no item of this listing has that id")
        row = tuple_(self.created_at, self.id)
        position = tuple_(created_at, cursor)
        return row < position if self.descending else row > position

    async def page(
        self,
        conn: AsyncConnection,
        query: Select[Any],
        scope: list[ColumnElement[bool]],
        *,
        limit: int | None,
        cursor: str | None,
    ) -> list[Any]:
        """One page of `query` (which must already select from the listing's table), restricted
        to `scope` and continued after `cursor`."""
        query = query.where(*scope)
        if cursor is not None:
            query = query.where(await self.after(conn, cursor, scope))
        query = self.ordered(query)
        if limit is not None:
            query = query.limit(limit)
        return list((await conn.execute(query)).all())
