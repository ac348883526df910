"""Sources, files and passages.

Revision ID: 0004_files
Revises: 0003_batches
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_files"
down_revision = "0003_batches"
branch_labels = None
depends_on = None


def _org(table: str) -> "sa.Column[str]":
    return sa.Column(
        "organization_id",
        sa.String(64),
        sa.ForeignKey("organizations.id", name=f"fk_{table}_organization_id_organizations"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.String(64), primary_key=True),
        _org("sources"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("organization_id", "name", name="uq_sources_organization_id_name"),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.String(64), primary_key=True),
        _org("files"),
        sa.Column(
            "source_id",
            sa.String(64),
            sa.ForeignKey("sources.id", name="fk_files_source_id_sources", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(200)),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blob_key", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error_message", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("last_progress_at", sa.DateTime(timezone=True)),
        sa.Column("total_chunks", sa.Integer),
        sa.Column("chunks_embedded", sa.Integer, nullable=False),
        sa.Column("embedding_model", sa.String(200)),
        sa.Column("parse_seconds", sa.Float),
        sa.Column("chunk_seconds", sa.Float),
        sa.Column("embed_seconds", sa.Float),
        sa.Column("store_seconds", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_files_source_id_created_at_id", "files", ["source_id", "created_at", "id"])
    op.create_index("ix_files_source_id_sha256", "files", ["source_id", "sha256"])
    op.create_index("ix_files_status_created_at", "files", ["status", "created_at"])
    op.create_table(
        "passages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        _org("passages"),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column(
            "file_id",
            sa.String(64),
            sa.ForeignKey("files.id", name="fk_passages_file_id_files", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("chunk_index", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("file_id", "chunk_index", name="uq_passages_file_id_chunk_index"),
    )
    op.create_index("ix_passages_source_id", "passages", ["source_id"])
    if op.get_bind().dialect.name == "postgresql":
        # A passage row (a chunk and its vector) is just over the 2 kB at which PostgreSQL starts
        # compressing attributes; the vector does not compress, and trying costs a third of the
        # server's time per insert. Rows up to 8 kB stay inline, uncompressed.
        op.execute("ALTER TABLE passages SET (toast_tuple_target = 8160)")


def downgrade() -> None:
    op.drop_index("ix_passages_source_id", "passages")
    op.drop_table("passages")
    op.drop_index("ix_files_status_created_at", "files")
    op.drop_index("ix_files_source_id_sha256", "files")
    op.drop_index("ix_files_source_id_created_at_id", "files")
    op.drop_table("files")
    op.drop_table("sources")
