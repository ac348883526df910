"""Tables of LLM batches: batches, their items, usage, completion deliveries and poll cycles.

Migrations 0003_batches and 0010_batch_lifecycle create exactly these; keep them in step.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from backburner.db.metadata import metadata
from backburner.db.types import UTCDateTime

llm_batches = Table(
    "llm_batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("organization_id", String(64), ForeignKey("organizations.id"), nullable=False),
    Column("provider", String(20), nullable=False),
    Column("model", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    # Given by the client (Idempotency-Key) or made up; a repeated submission returns the same batch.
    Column("idempotency_key", String(200), nullable=False),
    Column("request_count", Integer, nullable=False),
    Column("provider_batch_id", String(200)),
    Column("provider_status", String(40)),
    Column("output_file_id", String(200)),
    Column("error_file_id", String(200)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("submitted_at", UTCDateTime()),
    Column("ended_at", UTCDateTime()),
    Column("cancel_requested_at", UTCDateTime()),
    Column("last_polled_at", UTCDateTime()),
    Column("next_poll_at", UTCDateTime()),
    Column("consecutive_errors", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("missing_output_polls", Integer, nullable=False, default=0),
    Column("failure_reason", Text),
    Column("succeeded_count", Integer, nullable=False, default=0),
    Column("errored_count", Integer, nullable=False, default=0),
    Column("canceled_count", Integer, nullable=False, default=0),
    Column("expired_count", Integer, nullable=False, default=0),
    Column("missing_count", Integer, nullable=False, default=0),
    # A logical batch larger than its provider's limits is sent as parts: rows of their own,
    # with the provider's ids, that point at it. Their items are the logical batch's items.
    Column("parent_batch_id", String(64), ForeignKey("llm_batches.id", ondelete="CASCADE")),
    Column("part_index", Integer),
    Column("part_count", Integer, nullable=False, default=1),
    Column("resubmitted_from", String(64)),
    Column("estimated_tokens", BigInteger, nullable=False, default=0),
    Column("input_file_id", String(200)),
    Column("provider_files_deleted_at", UTCDateTime()),
    Column("results_expire_at", UTCDateTime()),
    Column("results_removed_at", UTCDateTime()),
    UniqueConstraint("organization_id", "idempotency_key", name="uq_llm_batches_org_idempotency_key"),
    Index("ix_llm_batches_status_last_polled_at", "status", "last_polled_at"),
    Index("ix_llm_batches_org_created_at", "organization_id", "created_at"),
    Index("ix_llm_batches_provider_batch_id", "provider", "provider_batch_id"),
    Index("ix_llm_batches_parent_batch_id", "parent_batch_id"),
)

# One row per request, written with the batch; results are upserted by (batch_id, custom_id).
llm_batch_items = Table(
    "llm_batch_items",
    metadata,
    Column("batch_id", String(64), ForeignKey("llm_batches.id", ondelete="CASCADE"), nullable=False),
    Column("custom_id", String(512), nullable=False),
    Column("organization_id", String(64), ForeignKey("organizations.id"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("params", Text),
    Column("result", Text),
    Column("error", Text),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("part_index", Integer, nullable=False, default=0),
    Column("position", Integer, nullable=False, default=0),  # order of the request in its submission
    Column("model", String(200)),
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    Column("cache_read_tokens", BigInteger),
    Column("cache_write_tokens", BigInteger),
    PrimaryKeyConstraint("batch_id", "custom_id", name="pk_llm_batch_items"),
    Index("ix_llm_batch_items_batch_part_position", "batch_id", "part_index", "position"),
)

# Token totals of a logical batch per model, rebuilt from its stored items whenever a part ends:
# derived, so exactly once whatever the failovers. Spend views and metrics read these.
llm_batch_usage = Table(
    "llm_batch_usage",
    metadata,
    Column("batch_id", String(64), ForeignKey("llm_batches.id", ondelete="CASCADE"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("organization_id", String(64), ForeignKey("organizations.id"), nullable=False),
    Column("provider", String(20), nullable=False),
    Column("items", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    PrimaryKeyConstraint("batch_id", "model", name="pk_llm_batch_usage"),
)

# The completion handoff: one row per ended batch and channel, retried until delivered.
llm_batch_deliveries = Table(
    "llm_batch_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("organization_id", String(64), ForeignKey("organizations.id"), nullable=False),
    Column("batch_id", String(64), ForeignKey("llm_batches.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(20), nullable=False),  # handler | webhook
    Column("idempotency_key", String(200), nullable=False),
    Column("status", String(20), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime()),
    UniqueConstraint("batch_id", "channel", name="uq_llm_batch_deliveries_batch_channel"),
    Index("ix_llm_batch_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)

# Poll cycles are deployment-wide; they are recorded under the default organization.
llm_batch_poll_cycles = Table(
    "llm_batch_poll_cycles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("organization_id", String(64), ForeignKey("organizations.id"), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("polled", Integer, nullable=False),
    Column("completed", Integer, nullable=False),
    Column("items_ingested", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("failed", Integer, nullable=False, default=0),
    Column("epoch", BigInteger, nullable=False),
    Column("instance_id", String(200), nullable=False),
    Index("ix_llm_batch_poll_cycles_started_at", "started_at"),
)
