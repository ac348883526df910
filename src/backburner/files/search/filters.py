"""Which files a search looks in: by id, and by name with a glob (`*` any run, `?` one character).

The glob is translated to each database's own pattern language with every other character taken
literally, and always passed as a bound parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, false, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db.transactions import reading
from backburner.files.tables import files

# Ids are `file-...`: anything else names no file (and a NUL would reach the database).
_FILE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class SearchFilter:
    file_ids: frozenset[str] | None = None
    file_name: str | None = None  # a glob

    @classmethod
    def of(cls, file_ids: Iterable[str] | None, file_name: str | None) -> SearchFilter:
        """From the API's values: ids may come comma-separated; an empty glob filters nothing."""
        ids = None
        if file_ids is not None:
            ids = frozenset(part.strip() for value in file_ids for part in value.split(",") if part.strip())
        return cls(ids, file_name or None)

    @property
    def empty(self) -> bool:
        return self.file_ids is None and self.file_name is None


def glob_to_like(pattern: str) -> str:
    """A LIKE pattern (escape character `\\`) matching what the glob matches."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def glob_to_sqlite_glob(pattern: str) -> str:
    """SQLite's GLOB has one more special character than ours, `[`: it becomes a class of itself."""
    return pattern.replace("[", "[[]")


def file_conditions(search_filter: SearchFilter, postgres: bool) -> list[ColumnElement[bool]]:
    """WHERE conditions on `files` (joined to the passages searched) for the filter."""
    conditions: list[ColumnElement[bool]] = []
    if search_filter.file_ids is not None:
        ids = sorted(i for i in search_filter.file_ids if _FILE_ID.fullmatch(i))
        conditions.append(files.c.id.in_(ids) if ids else false())
    if search_filter.file_name is not None:
        pattern = search_filter.file_name
        if "\x00" in pattern or not _encodable(pattern):  # no stored name holds these
            conditions.append(false())
        elif postgres:
            conditions.append(files.c.file_name.like(glob_to_like(pattern), escape="\\"))
        else:
            conditions.append(files.c.file_name.bool_op("GLOB")(glob_to_sqlite_glob(pattern)))
    return conditions


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


async def allowed_file_ids(
    engine: AsyncEngine, organization_id: str, source_id: str, search_filter: SearchFilter
) -> frozenset[str]:
    """The ids of the source's files that the filter keeps."""
    postgres = engine.dialect.name == "postgresql"
    query = select(files.c.id).where(
        files.c.organization_id == organization_id,
        files.c.source_id == source_id,
        *file_conditions(search_filter, postgres),
    )
    async with reading(engine) as conn:
        return frozenset(file_id for (file_id,) in await conn.execute(query))
