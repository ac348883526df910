"""Prometheus metrics of file processing, registered on the runtime's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backburner.files.states import FileStatus

STAGES = ("queued", "parse", "chunk", "embed", "store", "total")


class FileMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.files = Gauge(
            "backburner_files",
            "Files in the database by status (refreshed periodically by every instance).",
            ["status"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "backburner_file_stage_seconds",
            "Time one file spent in each stage of its processing on this instance.",
            ["stage"],
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600, 1800),
        )
        self.timeouts = Counter(
            "backburner_file_timeouts_total",
            "Files moved to ERROR by the processing timeout, by what enforced it (worker, sweeper, read).",
            ["enforcer"],
            registry=registry,
        )
        self.retries = Counter(
            "backburner_file_retries_total",
            "Claims of a file that an earlier worker did not finish (reclaimed leases).",
            registry=registry,
        )
        self.stalls = Counter(
            "backburner_file_stalls_total",
            "Files taken from a worker that made no progress for the stall timeout.",
            registry=registry,
        )
        self.passages = Counter(
            "backburner_file_passages_stored_total",
            "Passages stored by this instance's workers.",
            registry=registry,
        )
        self.completed = Counter(
            "backburner_files_finished_total",
            "Files this instance's workers finished, by final status.",
            ["status"],
            registry=registry,
        )

        # Every status shows from the start (a scrape before the first count reads zeros).
        self.set_counts({status: 0 for status in FileStatus})

    def set_counts(self, counts: dict[FileStatus, int]) -> None:
        for status, count in counts.items():
            self.files.labels(status=status.value).set(count)
