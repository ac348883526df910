"""API keys: each belongs to one organization; only the hash of its secret is kept."""

from sqlalchemy import Boolean, Column, ForeignKey, String, Table, false

from backburner.db.metadata import metadata
from backburner.db.types import UTCDateTime

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("organization_id", String(64), ForeignKey("organizations.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("is_admin", Boolean, nullable=False),
    Column("is_deployment_admin", Boolean, nullable=False, server_default=false()),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
)
