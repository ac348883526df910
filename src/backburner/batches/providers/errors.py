"""Turning the SDKs' exceptions (and the transport's, raised mid-stream) into `ProviderError`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anthropic
import httpx2
import openai

from backburner.batches.domain import Provider
from backburner.batches.providers.base import ProviderError, parse_retry_after

MAX_MESSAGE_CHARS = 500


@contextmanager
def translated_errors(provider: Provider, base_url: str | None = None) -> Iterator[None]:
    try:
        yield
    except (anthropic.APIStatusError, openai.APIStatusError) as exc:
        raise ProviderError(
            provider,
            _short(_status_message(exc)),
            status_code=exc.status_code,
            retry_after_s=parse_retry_after(exc.response.headers),
            base_url=base_url,
        ) from exc
    except (anthropic.APIConnectionError, openai.APIConnectionError) as exc:
        cause = exc.__cause__
        detail = f"{exc.message} ({type(cause).__name__}: {cause})" if cause else exc.message
        # A refused connection never carried the request: nothing was sent.
        refused = isinstance(cause, httpx2.ConnectError) and not isinstance(exc, openai.APITimeoutError)
        raise ProviderError(provider, _short(detail), sent=not refused, base_url=base_url) from exc
    except httpx2.HTTPError as exc:  # raised by the transport while a results body streams
        raise ProviderError(
            provider, _short(f"transfer broke: {type(exc).__name__}: {exc}"), base_url=base_url
        ) from exc
    except ValueError as exc:  # a truncated or malformed results line
        raise ProviderError(provider, _short(f"malformed results line: {exc}"), base_url=base_url) from exc
    except (anthropic.AnthropicError, openai.OpenAIError) as exc:
        raise ProviderError(provider, _short(f"{type(exc).__name__}: {exc}"), base_url=base_url) from exc


def _status_message(exc: anthropic.APIStatusError | openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return str(exc.message)


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."
