"""The operator's allow-list of webhook targets: URL prefixes, matched by parts, never as text.

A text prefix would let `https://hooks.example.com.evil.net/` pass `https://hooks.example.com`, and
`/hooks/../admin` pass `/hooks/`; here the scheme, host and port must be equal and the path must
continue the prefix's path at a segment boundary, without dot segments that a server would fold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import SplitResult, unquote, urlsplit

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_CHARS = 2000
UNSAFE_CHARACTER = re.compile(r"[\s\x00-\x1f\x7f\\]")


def _parts(url: str) -> tuple[SplitResult, int] | str:
    """The parts of an absolute http(s) URL and its port, or what is wrong with it."""
    if len(url) > MAX_URL_CHARS:
        return f"is longer than {MAX_URL_CHARS} characters"
    if UNSAFE_CHARACTER.search(url):
        return "contains whitespace, a control character or a backslash"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in SCHEMES:
        return "must be an absolute http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if parts.fragment:
        return "must not have a #fragment"
    segments = unquote(parts.path).split("/")
    if "." in segments or ".." in segments:
        return "must not have `.` or `..` path segments"
    return parts, port if port is not None else DEFAULT_PORTS[parts.scheme.lower()]


def url_prefix_problem(prefix: str) -> str | None:
    """What makes `prefix` unusable as an allow-list entry, or None."""
    found = _parts(prefix)
    return found if isinstance(found, str) else None


def url_problem(url: str) -> str | None:
    """What makes `url` unusable as a webhook target, whatever the allow-list says, or None."""
    return url_prefix_problem(url)


def _path_continues(path: str, prefix_path: str) -> bool:
    if prefix_path.endswith("/"):
        return path.startswith(prefix_path)
    return path == prefix_path or path.startswith(prefix_path + "/")


class AllowList:
    """The operator's prefixes, parsed once."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        self.prefixes = list(prefixes)
        self._parsed = [found for found in map(_parts, prefixes) if not isinstance(found, str)]

    def __bool__(self) -> bool:
        return bool(self.prefixes)

    def allows(self, url: str) -> bool:
        """True when `url` falls under one of the prefixes (same scheme, host and port; path below)."""
        target = _parts(url)
        return not isinstance(target, str) and any(_under(target, prefix) for prefix in self._parsed)


def is_allowed(url: str, prefixes: list[str]) -> bool:
    return AllowList(prefixes).allows(url)


def _under(target: tuple[SplitResult, int], prefix: tuple[SplitResult, int]) -> bool:
    parts, port = target
    prefix_parts, prefix_port = prefix
    if (
        parts.scheme.lower() != prefix_parts.scheme.lower()
        or parts.hostname != prefix_parts.hostname
        or port != prefix_port
    ):
        return False
    path, prefix_path = parts.path or "/", prefix_parts.path or "/"
    if prefix_parts.query:  # a prefix with a query names one endpoint; the query may go on
        return path == prefix_path and parts.query.startswith(prefix_parts.query)
    return _path_continues(path, prefix_path)
