"""SDK clients pointed at an emulator, and request builders for both providers."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import anthropic
import openai

from backburner.emulator.testing import RunningEmulator

API_KEY = "test-key"
SDK_TIMEOUT_S = 15.0
"""Every SDK call in these tests has this deadline; a hung emulator fails fast."""


def anthropic_client(emulator: RunningEmulator, **options: Any) -> anthropic.AsyncAnthropic:
    options.setdefault("api_key", API_KEY)
    options.setdefault("max_retries", 0)
    options.setdefault("timeout", SDK_TIMEOUT_S)
    return anthropic.AsyncAnthropic(base_url=emulator.anthropic_base_url, **options)


def openai_client(emulator: RunningEmulator, **options: Any) -> openai.AsyncOpenAI:
    options.setdefault("api_key", API_KEY)
    options.setdefault("max_retries", 0)
    options.setdefault("timeout", SDK_TIMEOUT_S)
    return openai.AsyncOpenAI(base_url=emulator.openai_base_url, **options)


def message_requests(custom_ids: Iterable[str], model: str = "claude-test") -> list[Any]:
    return [
        {
            "custom_id": custom_id,
            "params": {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]},
        }
        for custom_id in custom_ids
    ]


def chat_input_file(
    custom_ids: Iterable[str], model: str = "gpt-test", url: str = "/v1/chat/completions"
) -> bytes:
    lines = (
        json.dumps(
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": url,
                "body": {"model": model, "messages": [{"role": "user", "content": "Hello"}]},
            }
        )
        for custom_id in custom_ids
    )
    return ("\n".join(lines) + "\n").encode()


async def upload_and_create(
    client: openai.AsyncOpenAI, custom_ids: Iterable[str], endpoint: str = "/v1/chat/completions"
) -> openai.types.Batch:
    content = chat_input_file(custom_ids, url=endpoint)
    uploaded = await client.files.create(file=("requests.jsonl", content), purpose="batch")
    return await client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
