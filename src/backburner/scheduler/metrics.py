"""Prometheus families of the scheduler and of leader election, on the runtime's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.leader = Gauge(
            "backburner_leader", "1 while this instance leads its election, else 0.", registry=registry
        )
        self.epoch = Gauge(
            "backburner_leader_epoch",
            "Epoch (fencing token) of this instance's current or last term.",
            registry=registry,
        )
        self.acquisitions = Counter(
            "backburner_leader_acquisitions_total", "Terms this instance has started.", registry=registry
        )
        self.step_downs = Counter(
            "backburner_leader_step_downs_total",
            "Terms this instance has ended, by reason (heartbeat_deadline, connection_lost, fenced_out, "
            "shutdown, monitor_failed).",
            ["reason"],
            registry=registry,
        )
        self.job_duration = Histogram(
            "backburner_job_run_duration_seconds",
            "Duration of leader-only job runs, by job id.",
            ["job"],
            registry=registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900),
        )
        self.job_runs = Counter(
            "backburner_job_runs_total",
            "Leader-only job ticks by job id and outcome (succeeded, failed, cancelled, skipped).",
            ["job", "outcome"],
            registry=registry,
        )
