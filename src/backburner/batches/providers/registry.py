"""The configured providers: the two defaults and the named ones.

Building a provider imports its SDK, which takes a second or two: `preload` builds the
configured ones in a thread when the batches component starts, so no request or job pays for
it on the event loop.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from backburner.batches.domain import KINDS, Provider, ProviderKind
from backburner.batches.providers.base import BatchProvider
from backburner.settings import Settings

PROVIDER_MODULES: dict[ProviderKind, str] = {
    "anthropic": "backburner.batches.providers.anthropic",
    "openai": "backburner.batches.providers.openai",
}


class ProviderNotConfigured(LookupError):
    def __init__(self, provider: str, known: tuple[str, ...] = ()) -> None:
        if provider in KINDS:
            message = f"provider {provider} is not configured: set {provider}_api_key"
        else:
            names = ", ".join(known) if known else "none"
            message = f"unknown provider {provider!r}; configured providers: {names}"
        super().__init__(message)
        self.provider = provider


@dataclass(frozen=True)
class ProviderConfig:
    """What one provider name means: its kind, address, key and per-batch limits."""

    name: Provider
    kind: ProviderKind
    base_url: str
    api_key: str | None
    max_requests: int
    max_bytes: int
    enqueued_token_limits: Mapping[str, int] = field(default_factory=dict)


def provider_configs(settings: Settings) -> dict[Provider, ProviderConfig]:
    configs: dict[Provider, ProviderConfig] = {
        "anthropic": ProviderConfig(
            "anthropic",
            "anthropic",
            str(settings.anthropic_base_url),
            _secret(settings.anthropic_api_key),
            settings.anthropic_batch_max_requests,
            settings.anthropic_batch_max_bytes,
        ),
        "openai": ProviderConfig(
            "openai",
            "openai",
            str(settings.openai_base_url),
            _secret(settings.openai_api_key),
            settings.openai_batch_max_requests,
            settings.openai_batch_max_bytes,
            dict(settings.openai_enqueued_token_limits),
        ),
    }
    for name, named in settings.providers.items():
        configs[name] = ProviderConfig(
            name,
            named.kind,
            str(named.base_url),
            named.api_key.get_secret_value(),
            named.max_requests or settings.kind_max_requests(named.kind),
            named.max_bytes or settings.kind_max_bytes(named.kind),
            dict(named.enqueued_token_limits),
        )
    return configs


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return None if get is None else str(get())


class ProviderSet:
    def __init__(
        self, settings: Settings | None = None, *, providers: Mapping[Provider, BatchProvider] = {}
    ) -> None:
        self._settings = settings
        self._configs = provider_configs(settings) if settings is not None else {}
        self._providers: dict[Provider, BatchProvider] = dict(providers)

    @property
    def names(self) -> tuple[Provider, ...]:
        return tuple(dict.fromkeys([*self._configs, *self._providers]))

    def configured(self, name: Provider) -> bool:
        if name in self._providers:
            return True
        config = self._configs.get(name)
        return config is not None and config.api_key is not None

    def config(self, name: str) -> ProviderConfig:
        """The provider's configuration; `ProviderNotConfigured` for a name no setting defines."""
        config = self._configs.get(name)
        if config is None:
            existing = self._providers.get(name)
            if existing is None:
                raise ProviderNotConfigured(name, self.names)
            kind: ProviderKind = "anthropic" if existing.kind == "anthropic" else "openai"
            return ProviderConfig(name, kind, "", None, 100_000 if kind == "anthropic" else 50_000, 200 << 20)
        return config

    def kind(self, name: str) -> ProviderKind:
        return self.config(name).kind

    def get(self, name: str) -> BatchProvider:
        existing = self._providers.get(name)
        if existing is not None:
            return existing
        config = self.config(name)
        if config.api_key is None:
            raise ProviderNotConfigured(name, self.names)
        built = self._build(config, self._timeout_s())
        self._providers[name] = built
        return built

    def _timeout_s(self) -> float:
        return self._settings.provider_timeout_seconds if self._settings is not None else 60.0

    @staticmethod
    def _build(config: ProviderConfig, timeout_s: float) -> BatchProvider:
        module = importlib.import_module(PROVIDER_MODULES[config.kind])
        built: BatchProvider = module.build(config, timeout_s)
        return built

    async def preload(self) -> None:
        """Build the configured providers in a thread, off the event loop: importing an SDK, and
        making its client, which imports its HTTP transport's modules (seen as a 0.45 s stall
        of the loop at the first submission of a loaded host)."""
        timeout_s = self._timeout_s()
        for name, config in self._configs.items():
            if config.api_key is not None and name not in self._providers:
                self._providers[name] = await asyncio.to_thread(self._build, config, timeout_s)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()
