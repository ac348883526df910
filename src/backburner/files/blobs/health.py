"""Whether the blob store works now: readiness reports it, and uploads are refused while it fails.

The store is checked when the component starts, every `CHECK_INTERVAL_S` after that, and by
each readiness probe, so that a bucket created (or credentials fixed) is noticed within seconds.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from backburner.files.blobs.base import BlobStore
from backburner.logs import describe_error, log_event
from backburner.readiness import CheckResult
from backburner.tasks import cancel_and_wait, wait_for

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 5.0
CHECK_TIMEOUT_S = 5.0


class BlobStoreHealth:
    def __init__(self, store: BlobStore, interval_s: float = CHECK_INTERVAL_S) -> None:
        self.store = store
        self.interval_s = interval_s
        self.problem: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> str | None:
        """Check the store now; returns (and remembers) what is wrong, or None."""
        try:
            problem = await wait_for(self.store.check(), CHECK_TIMEOUT_S)
        except TimeoutError:
            problem = f"the {self.store.name} blob store did not answer within {CHECK_TIMEOUT_S:g} s"
        except Exception as exc:  # a check that fails in an unforeseen way still says why
            problem = f"the {self.store.name} blob store could not be checked: {describe_error(exc)}"
        if problem != self.problem:
            if problem is None:
                log_event(log, logging.INFO, "blobs.available", store=self.store.name)
            else:
                log_event(log, logging.ERROR, "blobs.unavailable", store=self.store.name, problem=problem)
        self.problem = problem
        return problem

    async def readiness(self) -> CheckResult:
        """The readiness check `blob_store`: checks the store now."""
        problem = await self.check()
        return CheckResult(problem is None, problem or "ok")

    async def __aenter__(self) -> BlobStoreHealth:
        await self.check()
        self._task = asyncio.create_task(self._watch(), name="blobs.health")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()
