"""Prometheus families of the batch poller, registered on the runtime's registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backburner.batches.cost import estimated_cost_usd
from backburner.batches.domain import BatchStatus
from backburner.batches.store import UsageRow
from backburner.settings import ModelPrice

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")


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

        self.tokens = Gauge(
            "backburner_batch_tokens",
            "Tokens of stored batch results, by provider, model and kind (input, output, cache_read, "
            "cache_write), as of the latest poll cycle.",
            ["provider", "model", "kind"],
            registry=registry,
        )
        self.cost = Gauge(
            "backburner_batch_estimated_cost_usd",
            "Estimated spend on batches by provider and model (priced models only), as of the latest "
            "poll cycle.",
            ["provider", "model"],
            registry=registry,
        )

    def set_batch_counts(self, counts: list[tuple[str, str, int]], providers: Iterable[str] = ()) -> None:
        seen = {(provider, status): n for provider, status, n in counts}
        names = dict.fromkeys([*providers, *(p for p, _, _ in counts)])
        for provider in names:
            for status in BatchStatus:
                self.batches.labels(provider, status.value).set(seen.get((provider, status.value), 0))

    def set_spend(self, rows: list[UsageRow], prices: Mapping[str, ModelPrice], discount: float) -> None:
        for row in rows:
            for kind in TOKEN_KINDS:
                self.tokens.labels(row.provider, row.model, kind).set(getattr(row, f"{kind}_tokens"))
            cost = estimated_cost_usd(row, prices, discount)
            if cost is not None:
                self.cost.labels(row.provider, row.model).set(cost)
