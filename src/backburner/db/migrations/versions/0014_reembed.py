"""Re-embedding: a source's active embedding model, vectors of other models, the jobs and their
chunk leases.

`sources.embedding_model` is added nullable (NULL: the deployment's configured model, as before),
so SQLite adds it in place. A passage's vector made at ingestion stays in `passages.embedding`
(its model is the file's `embedding_model`); vectors of any other model live in `passage_vectors`,
keyed by (passage, model).

Revision ID: 0014_reembed
Revises: 0013_passage_compression
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_reembed"
down_revision = "0013_passage_compression"
branch_labels = None
depends_on = None

PassageId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("sources") as table:
        table.add_column(sa.Column("embedding_model", sa.String(200)))
    op.create_table(
        "passage_vectors",
        sa.Column(
            "passage_id", PassageId, sa.ForeignKey("passages.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_passage_vectors_source_id_model", "passage_vectors", ["source_id", "model"])
    op.create_table(
        "source_reembeds",
        sa.Column(
            "source_id", sa.String(64), sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("from_model", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_source_reembeds_status", "source_reembeds", ["status"])
    op.create_table(
        "reembed_leases",
        sa.Column(
            "source_id", sa.String(64), sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("bucket", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reembed_leases")
    op.drop_index("ix_source_reembeds_status", table_name="source_reembeds")
    op.drop_table("source_reembeds")
    op.drop_index("ix_passage_vectors_source_id_model", table_name="passage_vectors")
    op.drop_table("passage_vectors")
    with op.batch_alter_table("sources") as table:
        table.drop_column("embedding_model")
