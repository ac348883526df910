"""The batches component: builds the store, providers, service, poller and handoff from settings.

Started by the runtime before the scheduler, because it registers the leader-only jobs
(`batches.poll`, `batches.deliver`, `batches.retention`). On start it imports the provider
SDKs in a thread, so that the first submission does not pay for it on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from types import TracebackType

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.batches.dispatch import Dispatcher
from backburner.batches.handoff import CompletionHandoff
from backburner.batches.ingest import Ingestor
from backburner.batches.intake import BodyChecker
from backburner.batches.metrics import BatchMetrics
from backburner.batches.poller import BatchPoller
from backburner.batches.providers.registry import ProviderSet
from backburner.batches.retention import RetentionJob
from backburner.batches.service import BatchService
from backburner.batches.statuses import PollPolicy
from backburner.batches.store import BatchStore
from backburner.clock import Clock
from backburner.ids import new_id
from backburner.logs import log_event
from backburner.scheduler.jobs import JobRegistry, JobSpec
from backburner.settings import Settings

log = logging.getLogger("backburner.batches")

POLL_JOB_ID = "batches.poll"
DELIVER_JOB_ID = "batches.deliver"
RETENTION_JOB_ID = "batches.retention"
RETENTION_INTERVAL_S = 3600.0
MAX_DELIVERY_INTERVAL_S = 30.0
BACKOFF_CAP_INTERVALS = 16


def poll_policy(settings: Settings) -> PollPolicy:
    interval_s = float(settings.poll_running_llm_batches_interval_seconds)
    return PollPolicy(
        base_backoff_s=interval_s,
        max_backoff_s=interval_s * BACKOFF_CAP_INTERVALS,
        max_consecutive_errors=settings.batch_poll_max_consecutive_errors,
        missing_output_max_polls=settings.batch_missing_output_max_polls,
        # Longer than the slowest submission can take (an OpenAI upload and a create).
        submit_grace_s=3 * settings.provider_timeout_seconds + 60,
        lookback_weeks=settings.batch_job_polling_lookback_weeks,
    )


class BatchesComponent:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        clock: Clock,
        registry: CollectorRegistry,
        jobs: JobRegistry,
        providers: ProviderSet | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.store = BatchStore(engine)
        self.providers = providers or ProviderSet(settings)
        self.metrics = BatchMetrics(registry)
        self.handoff = CompletionHandoff(self.store, settings, clock)
        self.policy = poll_policy(settings)
        # Submissions whose bodies are read and checked at once (each holds a part's body at most).
        self.submission_slots = asyncio.Semaphore(settings.batch_max_concurrent_submissions)
        self.body_checker = BodyChecker()
        self.ingestor = Ingestor(
            clock,
            settings.batch_results_chunk_size,
            self.handoff.channels,
            lambda: new_id("delivery"),
            on_chunk=lambda provider, n: self.metrics.items_ingested.labels(provider).inc(n),
        )
        self.dispatcher = Dispatcher(
            self.store, self.providers, clock, self.policy, self.ingestor.finish_in, self.metrics
        )
        self.service = BatchService(
            self.store,
            self.providers,
            clock,
            self.dispatcher,
            self.ingestor.finish_in,
            submit_hold=timedelta(seconds=self.policy.submit_grace_s),
            metrics=self.metrics,
        )
        self.poller = BatchPoller(
            store=self.store,
            providers=self.providers,
            policy=self.policy,
            clock=clock,
            metrics=self.metrics,
            ingestor=self.ingestor,
            handoff=self.handoff,
            concurrency=settings.batch_poll_concurrency,
            batch_size=settings.batch_job_polling_batch_size,
            dispatcher=self.dispatcher,
            delete_provider_files=settings.batch_delete_provider_files,
            on_cycle=self.refresh_spend,
        )
        self.retention = RetentionJob(self.store, clock, settings.batch_retention_days)

    async def refresh_spend(self) -> None:
        self.metrics.set_spend(
            await self.store.spend(), self.settings.batch_prices, self.settings.batch_price_discount
        )

    async def __aenter__(self) -> BatchesComponent:
        settings = self.settings
        await self.providers.preload()
        if settings.enable_batch_job_polling:
            interval_s = float(settings.poll_running_llm_batches_interval_seconds)
            self.jobs.add(
                JobSpec(
                    POLL_JOB_ID,
                    "Poll running LLM batches",
                    interval_s,
                    self.poller.run,
                    jitter_s=settings.batch_poll_jitter_seconds,
                )
            )
            self.jobs.add(
                JobSpec(
                    DELIVER_JOB_ID,
                    "Deliver ended LLM batches",
                    min(interval_s, MAX_DELIVERY_INTERVAL_S),
                    self.handoff.run,
                )
            )
        if settings.batch_retention_days is not None:
            self.jobs.add(
                JobSpec(
                    RETENTION_JOB_ID, "Remove old batch results", RETENTION_INTERVAL_S, self.retention.run
                )
            )
        log_event(
            log,
            logging.INFO,
            "batches.started",
            polling=settings.enable_batch_job_polling,
            channels=",".join(self.handoff.channels()) or "none",
            providers=",".join(n for n in self.providers.names if self.providers.configured(n)) or "none",
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.body_checker.close()
        await self.service.aclose()
        await self.handoff.aclose()
        await self.providers.aclose()
