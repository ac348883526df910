"""The database blob store's tables, and an index to find which file owns a blob.

Revision ID: 0008_blobs
Revises: 0007_fair_claims
"""

import sqlalchemy as sa
from alembic import op

from backburner.db.toast import has_lz4

revision = "0008_blobs"
down_revision = "0007_fair_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(1024)),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_blobs"),
        sa.UniqueConstraint("key", name="uq_blobs_key"),
    )
    op.create_table(
        "blob_chunks",
        sa.Column(
            "blob_id",
            sa.String(32),
            sa.ForeignKey("blobs.id", name="fk_blob_chunks_blob_id_blobs", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("blob_id", "seq", name="pk_blob_chunks"),
    )
    op.create_index("ix_files_blob_key", "files", ["blob_key"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # TOAST compresses chunks with pglz by default, which held writes of text to about
        # 21 MB/s on a 2-core machine; lz4 (PostgreSQL 14+ built with it) wrote 113 MB/s, and
        # no compression 83 MB/s (more bytes to write).
        if has_lz4(bind):
            op.execute("ALTER TABLE blob_chunks ALTER COLUMN data SET COMPRESSION lz4")
        else:
            op.execute("ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_index("ix_files_blob_key", table_name="files")
    op.drop_table("blob_chunks")
    op.drop_table("blobs")
