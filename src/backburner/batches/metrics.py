"""Prometheus families of the batch poller, registered on the runtime's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backburner.batches.domain import PROVIDERS, BatchStatus


class BatchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.cycle_duration = Histogram(
            "backburner_batch_poll_cycle_duration_seconds",
            "Duration of one poll cycle over the running LLM batches.",
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
        )
        self.batches = Gauge(
            "backburner_batches",
            "LLM batches by provider and status, as of the latest poll cycle.",
            ["provider", "status"],
            registry=registry,
        )
        self.items_ingested = Counter(
            "backburner_batch_items_ingested_total",
            "Item results stored from the providers' results streams.",
            ["provider"],
            registry=registry,
        )
        self.provider_errors = Counter(
            "backburner_batch_provider_errors_total",
            "Failed provider requests, by provider and HTTP status code (`connection` when none came).",
            ["provider", "status_code"],
            registry=registry,
        )

    def set_batch_counts(self, counts: list[tuple[str, str, int]]) -> None:
        seen = {(provider, status): n for provider, status, n in counts}
        for provider in PROVIDERS:
            for status in BatchStatus:
                self.batches.labels(provider, status.value).set(seen.get((provider, status.value), 0))
