"""Every SQL statement about batches. Route handlers, the poller and the handoff call these.

Reads take the engine (`BatchStore`). Writes made by the API (a submission, a cancel request) run
in their own transaction; writes made by the leader's jobs take the connection of a fenced
transaction, so a stale leader's write is refused by the epoch check before it is applied:
`submission` holds those both make, `leader` those only the leader makes, and `transitions` how a
unit's move shows in the split batch it belongs to.
"""

from backburner.batches.store.batch_store import BatchStore
from backburner.batches.store.leader import (
    apply_poll_updates,
    begin_ingesting,
    finish_batch,
    mark_delivered,
    mark_delivery_attempt_failed,
    mark_provider_files_deleted,
    record_cycle,
    remove_results,
    upsert_items,
)
from backburner.batches.store.records import CycleRecord, Delivery, ItemRow, PollUpdate, UsageRow
from backburner.batches.store.submission import adopt_provider_batch, claim_unit, requeue_unit

__all__ = [
    "BatchStore",
    "CycleRecord",
    "Delivery",
    "ItemRow",
    "PollUpdate",
    "UsageRow",
    "adopt_provider_batch",
    "apply_poll_updates",
    "begin_ingesting",
    "claim_unit",
    "finish_batch",
    "mark_delivered",
    "mark_delivery_attempt_failed",
    "mark_provider_files_deleted",
    "record_cycle",
    "remove_results",
    "requeue_unit",
    "upsert_items",
]
