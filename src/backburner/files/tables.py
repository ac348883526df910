"""Tables of file processing: sources, files (with their lease and progress) and passages."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from backburner.db.metadata import metadata
from backburner.db.types import UTCDateTime

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
PassageId = BigInteger().with_variant(Integer(), "sqlite")

sources = Table(
    "sources",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("organization_id", String(64), ForeignKey("organizations.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    # Bumped with every write or delete of the source's passages (see `files/search/vectors.py`).
    Column("passages_version", BigInteger, nullable=False, default=0, server_default="0"),
    # The model whose vectors search compares; NULL: the deployment's configured model. Changed
    # only by a re-embedding that gave every passage a vector of the new one.
    Column("embedding_model", String(200)),
    # Bumped by every switch of `embedding_model`, which removes the vectors of other models.
    Column("model_switches", BigInteger, nullable=False, default=0, server_default="0"),
    UniqueConstraint("organization_id", "name"),
)

files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("organization_id", String(64), ForeignKey("organizations.id"), nullable=False),
    Column("source_id", String(64), ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("content_type", String(200)),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("blob_key", String(1024), nullable=False),
    Column("status", String(20), nullable=False),
    Column("error_message", Text),
    # Claims so far; a claim beyond `file_max_attempts` is refused and the file fails.
    Column("attempts", Integer, nullable=False, default=0),
    # Unique per claim, so a worker whose lease was taken over can never write again.
    Column("lease_owner", String(200)),
    Column("lease_expires_at", UTCDateTime()),
    Column("heartbeat_at", UTCDateTime()),
    # A status change or a stored batch of passages; the stall timeout counts from here.
    Column("last_progress_at", UTCDateTime()),
    Column("total_chunks", Integer),
    Column("chunks_embedded", Integer, nullable=False, default=0),
    Column("embedding_model", String(200)),
    Column("parse_seconds", Float),
    Column("chunk_seconds", Float),
    Column("embed_seconds", Float),
    Column("store_seconds", Float),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    # What the user should know about a processed file, e.g. pages without a text layer.
    Column("warnings", JSON),
    # The versions of one document share a lineage (the first version's id); when one version
    # completes it takes the place of the others (see `files/store/versions.py`).
    Column("lineage_id", String(64)),
    # The file this version was uploaded to replace. Until this one completes, its passages are
    # not searched; it keeps the id afterwards, as a record.
    Column("replaces_file_id", String(64)),
    Index("ix_files_source_id_created_at_id", "source_id", "created_at", "id"),
    Index("ix_files_source_id_sha256", "source_id", "sha256"),
    Index("ix_files_status_created_at", "status", "created_at"),
    Index("ix_files_organization_id_status", "organization_id", "status"),
    Index("ix_files_lineage_id", "lineage_id"),
    Index("ix_files_source_id_replaces_file_id", "source_id", "replaces_file_id"),
    Index("ix_files_source_id_file_name", "source_id", "file_name"),
)

# When each organization last had a file claimed: claims go to the organization served longest
# ago, so that organizations take turns.
file_claim_turns = Table(
    "file_claim_turns",
    metadata,
    Column("organization_id", String(64), primary_key=True),
    Column("last_claimed_at", UTCDateTime(), nullable=False),
)

passages = Table(
    "passages",
    metadata,
    Column("id", PassageId, primary_key=True, autoincrement=True),
    Column("organization_id", String(64), ForeignKey("organizations.id"), nullable=False),
    # Denormalised from the file so that a search reads one table; no foreign key, since the
    # file's own cascade already removes the passages with it.
    Column("source_id", String(64), nullable=False),
    Column("file_id", String(64), ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
    Column("chunk_index", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("embedding", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # A resumed file inserts with ON CONFLICT DO NOTHING on this key: never a passage twice.
    # On PostgreSQL the text, vector and full-text vector live out of line (migration 0015): a
    # row is its ids, and a lexical search reads 50 to a page.
    UniqueConstraint("file_id", "chunk_index"),
    Index("ix_passages_source_id", "source_id"),
    # Its full-text index is kept by the database, outside this metadata (migration 0011):
    # `passages_fts` (FTS5) on SQLite, the generated column `search_vector` on PostgreSQL.
)

# Vectors of models other than the one a passage was ingested with (`files.embedding_model`),
# made by re-embedding; one per (passage, model), so vectors of two models never mix.
passage_vectors = Table(
    "passage_vectors",
    metadata,
    Column("passage_id", PassageId, ForeignKey("passages.id", ondelete="CASCADE"), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("organization_id", String(64), nullable=False),
    Column("source_id", String(64), nullable=False),
    Column("embedding", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_passage_vectors_source_id_model", "source_id", "model"),
)

# The latest re-embedding of each source: `running` until the switch, then `completed`.
source_reembeds = Table(
    "source_reembeds",
    metadata,
    Column("source_id", String(64), ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("organization_id", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("from_model", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Index("ix_source_reembeds_status", "status"),
)

# Chunks of a running re-embedding (passage ids `bucket * size` and on) claimed by a worker; an
# expired lease is taken over by anyone.
reembed_leases = Table(
    "reembed_leases",
    metadata,
    Column("source_id", String(64), ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("bucket", BigInteger, primary_key=True, autoincrement=False),
    Column("owner", String(200), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)
