"""Structured logging: every significant record carries a stable `event` key and fields.

Components log with `log_event(logger, level, "leader.acquired", epoch=3)`; the formatter renders
`event key=value ...` for people or one JSON object per line for log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: Any) -> None:
    """Log `event` with `fields`; the fields become attributes of the record."""
    logger.log(level, event, extra={"event": event, **fields}, stacklevel=2)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and k != "event"}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        event = getattr(record, "event", None)
        message = record.getMessage()
        head = f"{stamp} {record.levelname:<8} {record.name}: "
        body = message if event is None or event == message else f"{event} {message}"
        extras = " ".join(f"{k}={_short(v)}" for k, v in _fields(record).items())
        text = head + body + (" " + extras if extras else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None) or record.getMessage(),
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def describe_error(exc: BaseException) -> str:
    """One line naming the error, without the noise of chained driver exceptions."""
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = message[0] if message else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _short(value: Any) -> str:
    text = str(value)
    return repr(text) if " " in text else text


def configure_logging(level: str, fmt: str) -> None:
    """Route every logger through one stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in (
        "uvicorn.access",
        "httpx",
        "httpcore",
        "httpx2",  # the provider SDKs' HTTP client: its request lines would log every URL
        "httpcore2",
        "aiosqlite",
        "alembic",
        "apscheduler.executors.default",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # uvicorn installs its own handlers; let its records reach ours instead.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
