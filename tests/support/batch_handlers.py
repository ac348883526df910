"""Completion handlers named by `batch_completion_handler` in the batch tests."""

from __future__ import annotations

import json
import os
from typing import Any

from backburner.batches.handoff import BatchCompletion

CALLS: list[BatchCompletion] = []
FAILURES_LEFT: dict[str, int] = {"n": 0}


def reset(failures: int = 0) -> None:
    CALLS.clear()
    FAILURES_LEFT["n"] = failures


def record(completion: BatchCompletion) -> None:
    """Fails while `FAILURES_LEFT` says so, then records the call."""
    if FAILURES_LEFT["n"] > 0:
        FAILURES_LEFT["n"] -= 1
        raise RuntimeError("the application is not ready (failing on purpose)")
    CALLS.append(completion)


def append_to_file(completion: BatchCompletion) -> None:
    """For real processes: appends the completion to the file named by BATCH_HANDLER_LOG."""
    payload: dict[str, Any] = completion.to_json()
    with open(os.environ["BATCH_HANDLER_LOG"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(payload) + "\n")
