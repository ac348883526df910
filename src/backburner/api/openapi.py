"""The OpenAPI schema, completed with what the middlewares do, so that it describes every answer.

Authentication, body and submission limits run as middleware, before any route, so FastAPI does
not see them. This adds them to each operation they apply to (the bearer scheme, 401, 403, 413,
429, 404 for ids of other organizations, 400 for a body that is not JSON), gives every documented
error the `{"detail": ...}` body it has, and writes `api_max_page_size` into each listing's
`limit` as its `maximum`. Written once here, it covers routes added later as well.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from backburner.api.limits import is_search, is_submission
from backburner.api.paging import LIMIT_PARAMETER
from backburner.auth.middleware import ADMIN_PREFIX, is_protected
from backburner.settings import Settings

SECURITY_SCHEME = "apiKey"
ERROR_SCHEMA = "Error"
_ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
_VALIDATION_REF = {"$ref": "#/components/schemas/HTTPValidationError"}
_BODY_METHODS = frozenset({"post", "put", "patch"})
_PATH_PARAMETER = re.compile(r"\{[^}]+\}")


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the completed schema at `/openapi.json` (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            complete(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any], settings: Settings) -> None:
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})[ERROR_SCHEMA] = {
        "title": ERROR_SCHEMA,
        "type": "object",
        "properties": {"detail": {"type": "string", "title": "Detail"}},
        "required": ["detail"],
        "description": "What went wrong, in one sentence (some errors add fields).",
    }
    keys = settings.effective_auth_mode == "keys"
    if keys:
        components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key made by `backburner keys create`, as `Authorization: Bearer <key>`.",
        }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            protected = is_protected(path, metrics_closed=settings.metrics_require_auth)
            if keys and protected:
                operation["security"] = [{SECURITY_SCHEME: []}]
                _add(responses, 401, "No valid API key")
                if path.startswith(ADMIN_PREFIX):
                    _add(responses, 403, "The key is not an admin key")
            if protected and _PATH_PARAMETER.search(path):
                _add(responses, 404, "No such object in the caller's organization")
            if method in _BODY_METHODS:
                _add(responses, 413, "The request body is larger than the limit of this route")
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                _add(responses, 400, "The body is not valid JSON")
            if is_submission(method.upper(), path):
                _add(responses, 429, "Too many submissions per minute for this key; see `retry-after`")
            if is_search(method.upper(), path):
                _add(responses, 429, "Too many searches per minute for this key; see `retry-after`")
                _add(responses, 503, "Every search slot of this instance is taken; see `retry-after`")
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and parameter.get("name") == LIMIT_PARAMETER:
                    parameter.setdefault("schema", {})["maximum"] = settings.api_max_page_size
            _describe_error_bodies(responses)


def _add(responses: dict[str, Any], status: int, description: str) -> None:
    responses.setdefault(str(status), {"description": description})


def _describe_error_bodies(responses: dict[str, Any]) -> None:
    """Every error answer documented without a body has the `Error` body (a 422 may have either)."""
    for status, response in responses.items():
        if not status.isdigit() or int(status) < 400 or "content" in response:
            continue
        body = {"anyOf": [_ERROR_REF, _VALIDATION_REF]} if status == "422" else _ERROR_REF
        response["content"] = {"application/json": {"schema": body}}
