"""The whole lifecycle of LLM batches: parts, queueing, usage, provider files and retention.

Revision ID: 0010_batch_lifecycle
Revises: 0009_schedules
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_batch_lifecycle"
down_revision = "0009_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("llm_batches") as table:
        table.add_column(
            sa.Column(
                "parent_batch_id",
                sa.String(64),
                sa.ForeignKey("llm_batches.id", ondelete="CASCADE", name="fk_llm_batches_parent_batch_id"),
            )
        )
        table.add_column(sa.Column("part_index", sa.Integer))
        table.add_column(sa.Column("part_count", sa.Integer, nullable=False, server_default="1"))
        table.add_column(sa.Column("resubmitted_from", sa.String(64)))
        table.add_column(sa.Column("estimated_tokens", sa.BigInteger, nullable=False, server_default="0"))
        table.add_column(sa.Column("input_file_id", sa.String(200)))
        table.add_column(sa.Column("provider_files_deleted_at", sa.DateTime(timezone=True)))
        table.add_column(sa.Column("results_expire_at", sa.DateTime(timezone=True)))
        table.add_column(sa.Column("results_removed_at", sa.DateTime(timezone=True)))
        table.create_index("ix_llm_batches_parent_batch_id", ["parent_batch_id"])
    with op.batch_alter_table("llm_batch_items") as table:
        table.add_column(sa.Column("part_index", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("position", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("model", sa.String(200)))
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            table.add_column(sa.Column(name, sa.BigInteger))
        table.create_index("ix_llm_batch_items_batch_part_position", ["batch_id", "part_index", "position"])
    with op.batch_alter_table("llm_batch_poll_cycles") as table:
        table.add_column(sa.Column("failed", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "llm_batch_usage",
        sa.Column(
            "batch_id", sa.String(64), sa.ForeignKey("llm_batches.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("organization_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("items", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "model", name="pk_llm_batch_usage"),
    )


def downgrade() -> None:
    op.drop_table("llm_batch_usage")
    with op.batch_alter_table("llm_batch_poll_cycles") as table:
        table.drop_column("failed")
    with op.batch_alter_table("llm_batch_items") as table:
        table.drop_index("ix_llm_batch_items_batch_part_position")
        for name in ("cache_write_tokens", "cache_read_tokens", "output_tokens", "input_tokens"):
            table.drop_column(name)
        for name in ("model", "position", "part_index"):
            table.drop_column(name)
    with op.batch_alter_table("llm_batches") as table:
        table.drop_index("ix_llm_batches_parent_batch_id")
        for name in (
            "results_removed_at",
            "results_expire_at",
            "provider_files_deleted_at",
            "input_file_id",
            "estimated_tokens",
            "resubmitted_from",
            "part_count",
            "part_index",
        ):
            table.drop_column(name)
        table.drop_constraint("fk_llm_batches_parent_batch_id", type_="foreignkey")
        table.drop_column("parent_batch_id")
