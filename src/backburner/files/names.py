"""Upload file names made safe to show, store and match on."""

from __future__ import annotations

import re
import unicodedata

DEFAULT_NAME = "file"
MAX_NAME_BYTES = 255  # the usual file-system limit for one path component

_RESERVED = re.compile(r'[<>:"|?*]')
_SPACES = re.compile(r"\s+")
# Device names that Windows refuses as file names, whatever their extension.
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)


def sanitize_filename(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """The last path component of `name`, cleaned; never empty, at most `max_bytes` in UTF-8.

    `../../etc/passwd` becomes `passwd`. Control and format characters go, characters that
    some file systems reserve become `_`, leading dots go (no hidden files), and a long name is
    cut keeping its extension.
    """
    if max_bytes < 16:
        raise ValueError(f"max_bytes must be at least 16, got {max_bytes}")
    text = unicodedata.normalize("NFC", name).replace("\\", "/")
    # Control characters (Cc) and invisible format characters (Cf, e.g. RTL overrides) go first so
    # that they cannot hide a separator or a dot.
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf"))
    parts = [p for p in text.split("/") if p.strip() not in ("", ".", "..")]
    base = parts[-1] if parts else ""
    base = _RESERVED.sub("_", base)
    base = _SPACES.sub(" ", base).strip().lstrip(".").rstrip(". ")
    if not base:
        return DEFAULT_NAME
    if base.split(".")[0].strip().lower() in _WINDOWS_DEVICES:
        base = "_" + base
    return _truncate(base, max_bytes)


def _truncate(name: str, max_bytes: int) -> str:
    if len(name.encode()) <= max_bytes:
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = dot + ext
    # Keep a plausible extension (`.md`, `.docx`); a long "extension" is just part of the name.
    if not dot or not stem or len(suffix.encode()) > 16:
        stem, suffix = name, ""
    budget = max_bytes - len(suffix.encode())
    cut = stem.encode()[:budget].decode(errors="ignore").rstrip(". ")
    return (cut or DEFAULT_NAME) + suffix
