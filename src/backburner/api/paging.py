"""Page sizes of listings: every `limit` is capped by `api_max_page_size`.

The cap is a setting, so it cannot be a static `le=` on the parameter; the dependency checks it
and answers the same 422 as any other invalid parameter (the shape the OpenAPI schema documents),
and `backburner.api.openapi` writes the cap into the schema as the parameter's `maximum`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, HTTPException, Query
from fastapi.exceptions import RequestValidationError

from backburner.api.deps import get_settings
from backburner.db.keyset import InvalidCursor
from backburner.settings import Settings

LIMIT_PARAMETER = "limit"


def limit_too_large(limit: int | str, max_page_size: int) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "less_than_equal",
                "loc": ("query", LIMIT_PARAMETER),
                "msg": f"limit must be at most {max_page_size} (api_max_page_size)",
                "input": limit,
                "ctx": {"le": max_page_size},
            }
        ]
    )


def page_limit(default: int, what: str = "Items") -> Any:
    """A `limit` query parameter (at least 1, at most `api_max_page_size`) as a dependency."""

    def dependency(
        limit: int = Query(default, ge=1, description=f"{what} per page, at most `api_max_page_size`."),
        settings: Settings = Depends(get_settings),
    ) -> int:
        max_page_size = settings.api_max_page_size
        if limit == default:  # the default page is never larger than the cap
            return min(limit, max_page_size)
        if limit > max_page_size:
            raise limit_too_large(limit, max_page_size)
        return limit

    return Depends(dependency)


def invalid_cursor(parameter: str, exc: InvalidCursor) -> HTTPException:
    """The 400 of a cursor that names no item of the listing, naming the query parameter."""
    return HTTPException(400, f"{parameter}: {exc}")
