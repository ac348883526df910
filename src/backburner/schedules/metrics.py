"""Prometheus families of user schedules, on the runtime's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ScheduleMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.fire_lag = Histogram(
            "backburner_schedule_fire_lag_seconds",
            "From a fire time to the start of its first delivery attempt.",
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
        )
        self.attempts = Counter(
            "backburner_schedule_delivery_attempts_total",
            "Delivery attempts of fires, by action (webhook, handler) and result (succeeded, failed).",
            ["action", "result"],
            registry=registry,
        )
        self.runs = Counter(
            "backburner_schedule_runs_total",
            "Runs that ended, by outcome (succeeded, failed, skipped).",
            ["outcome"],
            registry=registry,
        )
        self.missed = Counter(
            "backburner_schedule_missed_fires_total",
            "Fire times later than their grace that the catch-up policy did not run.",
            registry=registry,
        )
        self.in_flight = Gauge(
            "backburner_schedule_deliveries_in_flight",
            "Fires claimed by this leader whose delivery has not ended yet.",
            registry=registry,
        )
