"""Tables of the database blob store: one row per blob, its content in rows of about 1 MB."""

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, LargeBinary, String, Table

from backburner.db.metadata import metadata
from backburner.db.types import UTCDateTime
from backburner.files.tables import files

blobs = Table(
    "blobs",
    metadata,
    Column("id", String(32), primary_key=True),
    # NULL while the upload is in progress: a blob becomes visible under its key only once
    # every chunk is stored, in the transaction that also drops the blob it replaces.
    Column("key", String(1024), unique=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64)),
    Column("chunk_count", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("stored_at", UTCDateTime()),
)

blob_chunks = Table(
    "blob_chunks",
    metadata,
    Column("blob_id", String(32), ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# Which blobs files own: the orphan sweeper asks about a page of keys at a time.
Index("ix_files_blob_key", files.c.blob_key)
