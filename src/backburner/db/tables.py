"""Tables shared by every aggregate."""

from sqlalchemy import Column, String, Table

from backburner.db.metadata import metadata
from backburner.db.types import UTCDateTime

DEFAULT_ORGANIZATION_ID = "org-default"

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
)
