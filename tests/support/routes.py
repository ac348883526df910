"""The routes of an app, read from the app itself, so that tests cover routes added later."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute


def _route_paths(app: FastAPI) -> Iterator[tuple[APIRoute, str]]:
    try:  # FastAPI >= 0.165 keeps included routers as branches; this walks them
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older versions copy every route into `app.routes`
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route, route.path
        return
    for context in iter_route_contexts(app.routes):
        route: Any = context.original_route
        if isinstance(route, APIRoute) and context.path is not None:
            yield route, context.path


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every API route, in the order they were added."""
    return [(method, path) for route, path in _route_paths(app) for method in sorted(route.methods)]
