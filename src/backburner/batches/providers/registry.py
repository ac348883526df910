"""The configured providers, each built on first use from its key and base URL."""

from __future__ import annotations

from collections.abc import Mapping

from backburner.batches.domain import PROVIDERS, Provider
from backburner.batches.providers.base import BatchProvider
from backburner.settings import Settings


class ProviderNotConfigured(LookupError):
    def __init__(self, provider: str) -> None:
        super().__init__(f"provider {provider} is not configured: set {provider}_api_key")
        self.provider = provider


class ProviderSet:
    def __init__(
        self, settings: Settings | None = None, *, providers: Mapping[Provider, BatchProvider] = {}
    ) -> None:
        self._settings = settings
        self._providers: dict[Provider, BatchProvider] = dict(providers)

    def configured(self, name: Provider) -> bool:
        if name in self._providers:
            return True
        return self._settings is not None and self._key(name) is not None

    def get(self, name: str) -> BatchProvider:
        if name not in PROVIDERS:
            raise ProviderNotConfigured(name)
        provider: Provider = name
        existing = self._providers.get(provider)
        if existing is not None:
            return existing
        key = self._key(provider) if self._settings is not None else None
        if key is None or self._settings is None:
            raise ProviderNotConfigured(provider)
        built = self._build(provider, key, self._settings)
        self._providers[provider] = built
        return built

    def _key(self, name: Provider) -> str | None:
        assert self._settings is not None
        secret = self._settings.anthropic_api_key if name == "anthropic" else self._settings.openai_api_key
        return secret.get_secret_value() if secret is not None else None

    @staticmethod
    def _build(name: Provider, key: str, settings: Settings) -> BatchProvider:
        if name == "anthropic":
            from backburner.batches.providers.anthropic import AnthropicProvider

            return AnthropicProvider(
                api_key=key,
                base_url=str(settings.anthropic_base_url),
                timeout_s=settings.provider_timeout_seconds,
            )
        from backburner.batches.providers.openai import OpenAIProvider

        return OpenAIProvider(
            api_key=key, base_url=str(settings.openai_base_url), timeout_s=settings.provider_timeout_seconds
        )

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()
