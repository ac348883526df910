"""LLM batches, their items and completion deliveries.

Revision ID: 0003_batches
Revises: 0002_leader
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_batches"
down_revision = "0002_leader"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "llm_batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request_count", sa.Integer, nullable=False),
        sa.Column("provider_batch_id", sa.String(200)),
        sa.Column("provider_status", sa.String(40)),
        sa.Column("output_file_id", sa.String(200)),
        sa.Column("error_file_id", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True)),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True)),
        sa.Column("last_polled_at", sa.DateTime(timezone=True)),
        sa.Column("next_poll_at", sa.DateTime(timezone=True)),
        sa.Column("consecutive_errors", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("missing_output_polls", sa.Integer, nullable=False),
        sa.Column("failure_reason", sa.Text),
        sa.Column("succeeded_count", sa.Integer, nullable=False),
        sa.Column("errored_count", sa.Integer, nullable=False),
        sa.Column("canceled_count", sa.Integer, nullable=False),
        sa.Column("expired_count", sa.Integer, nullable=False),
        sa.Column("missing_count", sa.Integer, nullable=False),
        sa.UniqueConstraint("organization_id", "idempotency_key", name="uq_llm_batches_org_idempotency_key"),
    )
    op.create_index("ix_llm_batches_status_last_polled_at", "llm_batches", ["status", "last_polled_at"])
    op.create_index("ix_llm_batches_org_created_at", "llm_batches", ["organization_id", "created_at"])
    op.create_index("ix_llm_batches_provider_batch_id", "llm_batches", ["provider", "provider_batch_id"])
    op.create_table(
        "llm_batch_items",
        sa.Column(
            "batch_id", sa.String(64), sa.ForeignKey("llm_batches.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("custom_id", sa.String(512), nullable=False),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("params", sa.Text),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "custom_id", name="pk_llm_batch_items"),
    )
    op.create_table(
        "llm_batch_deliveries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column(
            "batch_id", sa.String(64), sa.ForeignKey("llm_batches.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("batch_id", "channel", name="uq_llm_batch_deliveries_batch_channel"),
    )
    op.create_index(
        "ix_llm_batch_deliveries_status_next_attempt_at",
        "llm_batch_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_table(
        "llm_batch_poll_cycles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("polled", sa.Integer, nullable=False),
        sa.Column("completed", sa.Integer, nullable=False),
        sa.Column("items_ingested", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("instance_id", sa.String(200), nullable=False),
    )
    op.create_index("ix_llm_batch_poll_cycles_started_at", "llm_batch_poll_cycles", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_llm_batch_poll_cycles_started_at", "llm_batch_poll_cycles")
    op.drop_table("llm_batch_poll_cycles")
    op.drop_index("ix_llm_batch_deliveries_status_next_attempt_at", "llm_batch_deliveries")
    op.drop_table("llm_batch_deliveries")
    op.drop_table("llm_batch_items")
    op.drop_index("ix_llm_batches_provider_batch_id", "llm_batches")
    op.drop_index("ix_llm_batches_org_created_at", "llm_batches")
    op.drop_index("ix_llm_batches_status_last_polled_at", "llm_batches")
    op.drop_table("llm_batches")
